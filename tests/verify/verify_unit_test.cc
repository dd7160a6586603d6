// Unit tests of sovguard-verify without a TPM: committed real evidence (produced from swtpm by
// tests/verify/verify_test.cc with SOVGUARD_VERIFY_WRITE_SEED) and the CLI run in-process.
#include <gtest/gtest.h>

#include <map>

#include <nlohmann/json.hpp>
#include <sstream>

#include "attestation/verify/verifier.h"
#include "attestation/verify/verify_cli.h"

namespace sovguard::attestation {
namespace {

const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/evidence";
const std::string kNonceHex =
    ToHex(Bytes{'a', 'u', 'd', 'i', 't', 'o', 'r', '-', 'n', 'o', 'n', 'c',
                'e', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'});

int Cli(std::vector<std::string> args, std::string* out_text = nullptr) {
  std::ostringstream out, err;
  int rc = verify::RunVerifyCli(args, out, err);
  if (out_text) *out_text = out.str() + err.str();
  return rc;
}

TEST(VerifyUnit, CommittedRealEvidencePasses) {
  for (const char* f : {"genuine-ecc.json", "genuine-rsa.pb", "genuine-strongest.pb"}) {
    std::string text;
    EXPECT_EQ(Cli({"--nonce", kNonceHex, (kCorpus / f).string()}, &text), verify::kExitPass)
        << f << ":\n"
        << text;
  }
  // The EK certificates in the committed evidence chain to the committed swtpm local CA.
  const auto ca = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/ek-ca";
  EXPECT_EQ(
      Cli({"--nonce", kNonceHex, "--ek-ca", ca.string(), (kCorpus / "genuine-ecc.json").string()}),
      verify::kExitPass);
  std::string text;
  ASSERT_EQ(Cli({"--json", "--nonce", kNonceHex, (kCorpus / "genuine-ecc.json").string()}, &text),
            0);
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["verdict"], "pass");
  bool saw_sig = false;
  for (const auto& c : j["checks"])
    if (c["name"] == "quote.signature") saw_sig = c["status"] == "pass";
  EXPECT_TRUE(saw_sig);
}

// The committed evidence covers its one running guest and reports every enforcement path, with
// storage-open on its tracepoint fallback: named when passing, a failure with
// --require-strongest.
TEST(VerifyUnit, RequireStrongestFailsOnTheDowngradedPath) {
  const std::string ev = (kCorpus / "genuine-ecc.json").string();
  std::string text;
  ASSERT_EQ(Cli({"--json", "--nonce", kNonceHex, ev}, &text), verify::kExitPass) << text;
  auto j = nlohmann::json::parse(text);
  std::map<std::string, nlohmann::json> checks;
  for (const auto& c : j["checks"]) checks[c["name"].get<std::string>()] = c;
  ASSERT_TRUE(checks.count("snapshot.coverage") && checks.count("snapshot.mechanisms")) << text;
  EXPECT_EQ(checks["snapshot.coverage"]["status"], "pass") << text;
  EXPECT_EQ(checks["snapshot.mechanisms"]["status"], "pass") << text;
  EXPECT_NE(checks["snapshot.mechanisms"]["detail"].get<std::string>().find("storage-open"),
            std::string::npos);
  ASSERT_EQ(Cli({"--json", "--require-strongest", "--nonce", kNonceHex, ev}, &text),
            verify::kExitFail)
      << text;
  j = nlohmann::json::parse(text);
  bool seen = false;
  for (const auto& c : j["checks"])
    if (c["name"] == "snapshot.mechanisms")
      seen = c["status"] == "fail" && c["reason"] == verify::kReasonMechanismDowngraded;
  EXPECT_TRUE(seen) << text;
  // Human summary: the failing check with its reason code.
  EXPECT_EQ(Cli({"--require-strongest", "--nonce", kNonceHex, ev}, &text), verify::kExitFail);
  EXPECT_NE(text.find("[fail] snapshot.mechanisms MECHANISM_DOWNGRADED"), std::string::npos)
      << text;
}

// The verifier remembers what it derived from an AK public area, keyed by its exact bytes:
// another public area carrying the first one's name is never taken for it.
TEST(VerifyUnit, RememberedAkIsKeyedByItsPublicAreaBytes) {
  verify::Options o;
  o.nonce = FromHex(kNonceHex);
  const auto ecc = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  const auto rsa = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-rsa.pb"));
  for (int i = 0; i < 2; ++i) {  // the second time from what was remembered
    EXPECT_TRUE(verify::Verify(ecc, o).passed());
    EXPECT_TRUE(verify::Verify(rsa, o).passed());
  }
  auto swapped = ecc;
  swapped.mutable_ak()->set_tpm2b_public(rsa.ak().tpm2b_public());
  const auto r = verify::Verify(swapped, o);
  EXPECT_EQ(r.Find("ak.consistency")->reason, verify::kReasonAkInconsistent)
      << verify::RenderText(r);
  EXPECT_FALSE(r.passed());
}

// ParseEvidenceView leaves logs.cel in the parsed bytes: everything else, and the verdict, is
// exactly what ParseEvidence gives, including protobuf's merge rules for repeated fields.
void ExpectViewAsParse(std::span<const uint8_t> data, const std::string& what) {
  std::optional<v1::Evidence> whole;
  std::string whole_error, view_error;
  try {
    whole = verify::ParseEvidence(data);
  } catch (const verify::InputError& e) {
    whole_error = e.what();
  }
  std::optional<verify::EvidenceView> view;
  try {
    view = verify::ParseEvidenceView(data);
  } catch (const verify::InputError& e) {
    view_error = e.what();
  }
  ASSERT_EQ(whole.has_value(), view.has_value()) << what << ": " << whole_error << view_error;
  EXPECT_EQ(whole_error, view_error) << what;
  if (!whole) return;
  const auto cel = view->Cel();
  EXPECT_EQ(std::string(cel.begin(), cel.end()), whole->logs().cel()) << what;
  auto rebuilt = view->message;
  rebuilt.mutable_logs()->set_cel(std::string(cel.begin(), cel.end()));
  EXPECT_EQ(rebuilt.SerializeAsString(), whole->SerializeAsString()) << what;
}

TEST(VerifyUnit, EvidenceViewKeepsTheCelInPlaceAndParsesAsProtobufDoes) {
  const auto data = ReadFileBytes(kCorpus / "genuine-rsa.pb");
  const auto view = verify::ParseEvidenceView(data);
  ASSERT_TRUE(view.cel.has_value());
  EXPECT_GT(view.cel->size(), 1000u);
  EXPECT_TRUE(view.cel->data() >= data.data() &&
              view.cel->data() + view.cel->size() <= data.data() + data.size())
      << "the CEL was copied";
  EXPECT_TRUE(view.message.logs().cel().empty());
  ExpectViewAsParse(data, "genuine-rsa.pb");
  // Same verdict, check for check.
  verify::Options o;
  o.nonce = FromHex(kNonceHex);
  const auto a = verify::Verify(verify::ParseEvidence(data), o);
  const auto b = verify::Verify(view, o);
  ASSERT_TRUE(a.passed()) << verify::RenderText(a);
  ASSERT_EQ(a.checks.size(), b.checks.size());
  for (size_t i = 0; i < a.checks.size(); ++i) {
    EXPECT_EQ(a.checks[i].name, b.checks[i].name);
    EXPECT_EQ(a.checks[i].status, b.checks[i].status) << a.checks[i].name;
    EXPECT_EQ(a.checks[i].reason, b.checks[i].reason) << a.checks[i].name;
  }
  // A tampered CEL byte inside the view fails as it does in the copied message.
  auto tampered = data;
  tampered[static_cast<size_t>(view.cel->data() - data.data()) + view.cel->size() / 2] ^= 1;
  EXPECT_FALSE(verify::Verify(verify::ParseEvidenceView(tampered), o).passed());

  // Fields repeated on the wire: a second logs message (merged: its cel replaces the first,
  // its other fields join) and a second cel inside one logs message (the last one counts).
  auto field = [](uint32_t number, const std::string& value) {
    std::string f(1, static_cast<char>(number << 3 | 2));
    for (size_t n = value.size();; n >>= 7) {
      f += static_cast<char>((n & 0x7f) | (n >= 0x80 ? 0x80 : 0));
      if (n < 0x80) break;
    }
    return f + value;
  };
  const std::string base(data.begin(), data.end());
  for (const std::string& extra :
       {field(11, field(1, "second cel")), field(11, field(2, std::string(1, '\x07'))),
        field(11, field(1, "a") + field(1, "b") + field(4, "ima")), field(11, ""),
        field(11, field(1, "x") + std::string("\x08\x96\x01")), field(2, "node-b"),
        std::string("\x5a\x05\x0a\x09abc"), std::string("\x5b\x5c"), std::string("\x00")}) {
    const std::string in = base + extra;
    ExpectViewAsParse(std::span(reinterpret_cast<const uint8_t*>(in.data()), in.size()),
                      "genuine-rsa.pb + " + ToHex(Bytes(extra.begin(), extra.end())));
  }
  // Every truncation, and JSON (whose CEL is decoded into the message).
  for (size_t n = 0; n < data.size(); n += 5)
    ExpectViewAsParse(std::span(data.data(), n), "truncated to " + std::to_string(n));
  const auto json = ReadFileBytes(kCorpus / "genuine-ecc.json");
  EXPECT_FALSE(verify::ParseEvidenceView(json).cel.has_value());
  ExpectViewAsParse(json, "genuine-ecc.json");
}

// Store skips comparing the prefix only for the entry its Lookup found, unchanged since: an
// entry replaced in between (another verification of the same node) is compared again.
TEST(VerifyUnit, ReplayCacheStoreTrustsOnlyAnUnchangedLookup) {
  verify::ReplayCache cache;
  const Bytes a = {1, 2, 3, 4}, a_more = {1, 2, 3, 4, 5, 6}, b = {9, 9, 9, 9, 9, 9};
  const Sha256Digest pa = Sha256("a"), pm = Sha256("a_more"), pb = Sha256("b");
  cache.Store("n", a, 1, pa);
  const auto hit = cache.Lookup("n", a_more);
  ASSERT_EQ(hit.bytes, a.size());
  ASSERT_NE(hit.version, 0u);
  // Unchanged: appended from the Lookup's word.
  cache.Store("n", a_more, 2, pm, hit);
  auto h2 = cache.Lookup("n", a_more);
  EXPECT_EQ(h2.bytes, a_more.size());
  EXPECT_EQ(h2.pcr, pm);
  // Changed in between: a stale hit must not make `a_more` count as an extension of `b`.
  const auto stale = cache.Lookup("n", a_more);
  cache.Store("n", b, 1, pb);
  cache.Store("n", Bytes{1, 2, 3, 4, 5, 6, 7}, 3, pm, stale);
  EXPECT_EQ(cache.Lookup("n", b).bytes, 0u) << "b was replaced by a log it does not begin";
  const auto h3 = cache.Lookup("n", Bytes{1, 2, 3, 4, 5, 6, 7, 8});
  EXPECT_EQ(h3.bytes, 7u);
  EXPECT_EQ(h3.records, 3u);
  EXPECT_EQ(cache.stats().bytes, 7u);
}

TEST(VerifyUnit, FlippedByteInCommittedEvidenceFails) {
  auto data = ReadFileBytes(kCorpus / "genuine-rsa.pb");
  auto ev = verify::ParseEvidence(data);
  ev.mutable_quote()->mutable_signature()->back() ^= 1;
  verify::Options o;
  o.nonce = FromHex(kNonceHex);
  auto r = verify::Verify(ev, o);
  EXPECT_FALSE(r.passed());
  EXPECT_EQ(r.Find("quote.signature")->reason, verify::kReasonSignatureInvalid);
}

TEST(VerifyUnit, GarbageAndTruncatedInputsAreInputErrors) {
  EXPECT_THROW(verify::ParseEvidence({}), verify::InputError);
  const Bytes garbage = {0xff, 0xfe, 0x00, 0x12, 0x34};
  EXPECT_THROW(verify::ParseEvidence(garbage), verify::InputError);
  const std::string js = "{\"format_version\": 1, \"node\": ";
  EXPECT_THROW(verify::ParseEvidence(Bytes(js.begin(), js.end())), verify::InputError);
  auto full = ReadFileBytes(kCorpus / "genuine-rsa.pb");
  // Every truncation: an input error or a failed verdict, never a pass or a crash.
  verify::Options o;
  o.nonce = FromHex(kNonceHex);
  for (size_t n = 0; n < full.size(); n += 7) {
    try {
      auto ev = verify::ParseEvidence(std::span(full.data(), n));
      EXPECT_FALSE(verify::Verify(ev, o).passed()) << "truncated to " << n;
    } catch (const verify::InputError&) {
    }
  }
  EXPECT_EQ(Cli({"--nonce", kNonceHex, (kCorpus / "garbage.bin").string()}), verify::kExitUsage);
  EXPECT_EQ(Cli({"--nonce", kNonceHex}), verify::kExitUsage);
  EXPECT_EQ(Cli({(kCorpus / "genuine-ecc.json").string()}), verify::kExitUsage);
  EXPECT_EQ(Cli({"--nonce", "00", (kCorpus / "genuine-ecc.json").string()}), verify::kExitFail);
}

// Numeric live options name themselves when wrong, and --rounds belongs to --fleet only.
TEST(VerifyUnit, LiveOptionsAreCheckedByName) {
  const std::vector<std::string> tls = {"--ca",      "/dev/null", "--cert",
                                        "/dev/null", "--key",     "/dev/null"};
  std::string text;
  auto with = [&](std::vector<std::string> a) {
    a.insert(a.end(), tls.begin(), tls.end());
    return a;
  };
  EXPECT_EQ(Cli(with({"--fleet", "/dev/null", "--jobs", "0"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--jobs must be a number from 1 to 3600"), std::string::npos) << text;
  EXPECT_EQ(Cli(with({"--fleet", "/dev/null", "--interval", "-1"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--interval must be a number from 0 to 3600"), std::string::npos) << text;
  EXPECT_EQ(Cli(with({"--fleet", "/dev/null", "--rounds", "x"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--rounds must be a number from 1 to 3600"), std::string::npos) << text;
  EXPECT_EQ(Cli(with({"--node", "h:1", "--rounds", "2"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--rounds applies to --fleet"), std::string::npos) << text;
  EXPECT_EQ(
      Cli({"--rounds", "2", "--nonce", kNonceHex, (kCorpus / "genuine-ecc.json").string()}, &text),
      verify::kExitUsage);
  EXPECT_NE(text.find("--rounds applies to --fleet"), std::string::npos) << text;
}

}  // namespace
}  // namespace sovguard::attestation
