// Unit tests of sovguard-verify without a TPM: committed real evidence (produced from swtpm by
// tests/verify/verify_test.cc with SOVGUARD_VERIFY_WRITE_SEED) and the CLI run in-process.
#include <gtest/gtest.h>

#include <map>

#include <nlohmann/json.hpp>
#include <sstream>

#include "attestation/verify/checks.h"
#include "attestation/verify/ear.h"
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

const std::filesystem::path kAnchors =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/anchors";

// The policy the committed evidence applied (tests/verify/evidence_fixture.h), which the
// auditor of the committed evidence approves.
const Sha256Digest kPolicy = Sha256("bundle");

// The auditor's anchors for the committed evidence (written with it by the integration test):
// the enrolled AKs, the signed reference manifest and its certifier key, and (with `policy`)
// the approved policy. The evidence comes from swtpm, so the software TPM is accepted by name.
std::vector<std::string> Anchors(const std::string& ak, bool policy = true) {
  std::vector<std::string> a = {"--ak-pub",
                                (kAnchors / ("ak-" + ak + ".pem")).string(),
                                "--manifest",
                                (kAnchors / "manifest.dsse.json").string(),
                                "--manifest-key",
                                (kAnchors / "manifest.pub").string(),
                                "--allow-software-tpm"};
  if (policy) a.insert(a.end(), {"--policy-digest", ToHex(kPolicy)});
  return a;
}
std::vector<std::string> With(std::vector<std::string> a, const std::vector<std::string>& more) {
  a.insert(a.end(), more.begin(), more.end());
  return a;
}
verify::Options AnchoredOptions(const std::string& ak) {
  verify::Options o;
  o.nonce = FromHex(kNonceHex);
  const auto pem = ReadFileBytes(kAnchors / ("ak-" + ak + ".pem"));
  o.ak_pub_pem = std::string(pem.begin(), pem.end());
  const auto env = ReadFileBytes(kAnchors / "manifest.dsse.json");
  o.manifest_envelope = std::make_shared<const std::string>(env.begin(), env.end());
  const auto key = ReadFileBytes(kAnchors / "manifest.pub");
  o.manifest_key_pem = std::string(key.begin(), key.end());
  o.waivers = {"software-tpm"};
  o.policy_digest = Bytes(kPolicy.begin(), kPolicy.end());
  return o;
}

std::map<std::string, nlohmann::json> Checks(const std::string& json) {
  std::map<std::string, nlohmann::json> m;
  const auto j = nlohmann::json::parse(json);
  for (const auto& c : j["checks"]) m[c["name"].get<std::string>()] = c;
  return m;
}

TEST(VerifyUnit, CommittedRealEvidencePasses) {
  // With the auditor's anchors (enrolled AK, manifest; swtpm accepted by name).
  for (const auto& [f, ak] : {std::pair{"genuine-ecc.json", "ecc"}, {"genuine-rsa.pb", "rsa"}}) {
    std::string text;
    EXPECT_EQ(Cli(With({"--nonce", kNonceHex, (kCorpus / f).string()}, Anchors(ak)), &text),
              verify::kExitPass)
        << f << ":\n"
        << text;
  }
  // genuine-strongest.pb comes from a daemon restarted while vm1 ran: enforcement was
  // interrupted, which the auditor may accept by name.
  const std::string strongest = (kCorpus / "genuine-strongest.pb").string();
  std::string text;
  EXPECT_EQ(Cli(With({"--json", "--nonce", kNonceHex, strongest}, Anchors("ecc")), &text),
            verify::kExitFail);
  EXPECT_EQ(Checks(text)["enforcement.continuity"]["reason"], verify::kReasonEnforcementInterrupted)
      << text;
  EXPECT_EQ(Cli(With({"--nonce", kNonceHex, "--waive", "interruptions", strongest}, Anchors("ecc")),
                &text),
            verify::kExitPass)
      << text;
  // The EK certificates in the committed evidence chain to the committed swtpm local CA.
  const auto ca = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/ek-ca";
  EXPECT_EQ(Cli(With({"--nonce", kNonceHex, "--ek-ca", ca.string(),
                      (kCorpus / "genuine-ecc.json").string()},
                     Anchors("ecc"))),
            verify::kExitPass);
  ASSERT_EQ(Cli(With({"--json", "--nonce", kNonceHex, (kCorpus / "genuine-ecc.json").string()},
                     Anchors("ecc")),
                &text),
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
  ASSERT_EQ(Cli(With({"--json", "--nonce", kNonceHex, ev}, Anchors("ecc")), &text),
            verify::kExitPass)
      << text;
  auto j = nlohmann::json::parse(text);
  std::map<std::string, nlohmann::json> checks;
  for (const auto& c : j["checks"]) checks[c["name"].get<std::string>()] = c;
  ASSERT_TRUE(checks.count("snapshot.coverage") && checks.count("snapshot.mechanisms")) << text;
  EXPECT_EQ(checks["snapshot.coverage"]["status"], "pass") << text;
  EXPECT_EQ(checks["snapshot.mechanisms"]["status"], "pass") << text;
  EXPECT_NE(checks["snapshot.mechanisms"]["detail"].get<std::string>().find("storage-open"),
            std::string::npos);
  ASSERT_EQ(
      Cli(With({"--json", "--require-strongest", "--nonce", kNonceHex, ev}, Anchors("ecc")), &text),
      verify::kExitFail)
      << text;
  j = nlohmann::json::parse(text);
  bool seen = false;
  for (const auto& c : j["checks"])
    if (c["name"] == "snapshot.mechanisms")
      seen = c["status"] == "fail" && c["reason"] == verify::kReasonMechanismDowngraded;
  EXPECT_TRUE(seen) << text;
  // Human summary: the failing check with its reason code.
  EXPECT_EQ(Cli(With({"--require-strongest", "--nonce", kNonceHex, ev}, Anchors("ecc")), &text),
            verify::kExitFail);
  EXPECT_NE(text.find("[fail] snapshot.mechanisms MECHANISM_DOWNGRADED"), std::string::npos)
      << text;
}

// The verifier remembers what it derived from an AK public area, keyed by its exact bytes:
// another public area carrying the first one's name is never taken for it.
TEST(VerifyUnit, RememberedAkIsKeyedByItsPublicAreaBytes) {
  const auto ecc = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  const auto rsa = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-rsa.pb"));
  for (int i = 0; i < 2; ++i) {  // the second time from what was remembered
    EXPECT_TRUE(verify::Verify(ecc, AnchoredOptions("ecc")).passed());
    EXPECT_TRUE(verify::Verify(rsa, AnchoredOptions("rsa")).passed());
  }
  auto swapped = ecc;
  swapped.mutable_ak()->set_tpm2b_public(rsa.ak().tpm2b_public());
  const auto r = verify::Verify(swapped, AnchoredOptions("ecc"));
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
  const auto o = AnchoredOptions("rsa");
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
        std::string("\x5a\x05\x0a\x09"
                    "abc"),
        std::string("\x5b\x5c"), std::string("\x00")}) {
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
  const std::string js = "{\"format_version\": 2, \"node\": ";
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
  EXPECT_NE(text.find("--rounds must be a number from 0 to 3600"), std::string::npos) << text;
  EXPECT_EQ(Cli(with({"--node", "h:1", "--rounds", "2"}), &text), verify::kExitUsage);
  EXPECT_NE(text.find("--rounds applies to --fleet"), std::string::npos) << text;
  EXPECT_EQ(
      Cli({"--rounds", "2", "--nonce", kNonceHex, (kCorpus / "genuine-ecc.json").string()}, &text),
      verify::kExitUsage);
  EXPECT_NE(text.find("--rounds applies to --fleet"), std::string::npos) << text;
}
// Evidence with nothing but a nonce: a signed, fresh quote of a log that replays, from swtpm,
// with no enrolled AK, no manifest and no EK CA. Each missing anchor fails with its own reason
// (exit 1); waived by name, the same evidence passes with the waivers in the report and an EAR
// "warning". (Before the verdict failed closed, this printed PASS, exit 0.)
TEST(VerifyUnit, EvidenceWithoutAnchorsFailsClosed) {
  const std::string ev = (kCorpus / "genuine-ecc.json").string();
  std::string text;
  EXPECT_EQ(Cli({"--nonce", kNonceHex, ev}, &text), verify::kExitFail) << text;
  EXPECT_NE(text.find("FAIL"), std::string::npos) << text;
  ASSERT_EQ(Cli({"--json", "--nonce", kNonceHex, ev}, &text), verify::kExitFail) << text;
  auto checks = Checks(text);
  EXPECT_EQ(checks["trust.root"]["reason"], verify::kReasonRootOfTrustMissing) << text;
  EXPECT_EQ(checks["policy.bundle"]["reason"], verify::kReasonExpectedPolicyMissing) << text;
  for (const char* m : {"manifest.signature", "manifest.components", "manifest.jurisdiction",
                        "manifest.boot", "manifest.ima"})
    EXPECT_EQ(checks[m]["reason"], verify::kReasonManifestMissing) << m;
  // The (unchained) EK certificate already names swtpm.
  EXPECT_EQ(checks["tpm.hardware"]["reason"], verify::kReasonSoftwareTpm) << text;
  // With the EK CA the certificate chains, and names swtpm.
  const auto ca = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/ek-ca";
  ASSERT_EQ(Cli({"--json", "--nonce", kNonceHex, "--ek-ca", ca.string(), ev}, &text),
            verify::kExitFail);
  checks = Checks(text);
  EXPECT_EQ(checks["ek.chain"]["status"], "pass") << text;
  EXPECT_EQ(checks["tpm.hardware"]["reason"], verify::kReasonSoftwareTpm) << text;
  EXPECT_NE(checks["tpm.hardware"]["detail"].get<std::string>().find("swtpm"), std::string::npos);
  // Every requirement waived by name: exit 0, each waiver in the report, waived checks keep
  // their reason code.
  ASSERT_EQ(Cli({"--json", "--nonce", kNonceHex, "--waive", "root-of-trust,manifest,policy",
                 "--allow-software-tpm", ev},
                &text),
            verify::kExitPass)
      << text;
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["waivers"], nlohmann::json({"root-of-trust", "manifest", "policy", "software-tpm"}));
  checks = Checks(text);
  EXPECT_EQ(checks["trust.root"]["status"], "waived");
  EXPECT_EQ(checks["trust.root"]["reason"], verify::kReasonRootOfTrustMissing);
  EXPECT_EQ(checks["manifest.components"]["status"], "waived");
  EXPECT_EQ(checks["tpm.hardware"]["status"], "waived");
  EXPECT_EQ(checks["policy.bundle"]["status"], "waived");
  ASSERT_EQ(Cli({"--nonce", kNonceHex, "--waive", "root-of-trust,manifest,policy,software-tpm", ev},
                &text),
            verify::kExitPass);
  EXPECT_NE(text.find("waived by the auditor: root-of-trust manifest policy software-tpm"),
            std::string::npos)
      << text;
  auto o = AnchoredOptions("ecc");
  o.ak_pub_pem.reset();
  o.manifest_envelope.reset();
  o.manifest_key_pem.reset();
  o.policy_digest.reset();
  o.waivers = {"root-of-trust", "manifest", "policy", "software-tpm"};
  const auto rep = verify::Verify(verify::ParseEvidence(ReadFileBytes(ev)), o);
  ASSERT_TRUE(rep.passed()) << verify::RenderText(rep);
  EXPECT_EQ(verify::EarStatus(rep), "warning");
  // A waiver covers only its own reasons: waiving the boot log does not root the AK.
  EXPECT_EQ(Cli({"--nonce", kNonceHex, "--waive", "boot-log,manifest", "--allow-software-tpm", ev},
                &text),
            verify::kExitFail);
  EXPECT_NE(text.find("[fail] trust.root ROOT_OF_TRUST_MISSING"), std::string::npos) << text;
  // Unknown waiver names and PCRs the host can reset are usage errors.
  EXPECT_EQ(Cli({"--nonce", kNonceHex, "--waive", "everything", ev}, &text), verify::kExitUsage);
  EXPECT_NE(text.find("unknown requirement \"everything\""), std::string::npos) << text;
  EXPECT_EQ(Cli({"--nonce", kNonceHex, "--sovguard-pcr", "16", ev}, &text), verify::kExitUsage);
  EXPECT_EQ(Cli({"--nonce", kNonceHex, "--sovguard-pcr", "7", ev}, &text), verify::kExitUsage);
  auto bad = AnchoredOptions("ecc");
  bad.waivers = {"all"};
  EXPECT_THROW(verify::Verify(verify::ParseEvidence(ReadFileBytes(ev)), bad), verify::InputError);
  bad = AnchoredOptions("ecc");
  bad.sovguard_pcr = 23;
  EXPECT_THROW(verify::Verify(verify::ParseEvidence(ReadFileBytes(ev)), bad), verify::InputError);
}

// An attacker's node enforces a policy of its own choosing (here: not the one the auditor
// approved), self-consistently: its log and its snapshot agree on it. An auditor who names no
// expected policy must not get exit 0 ("approved"): the verdict fails with the requirement named,
// unless the auditor waives it by name (then listed in the report and the EAR, a warning).
TEST(VerifyUnit, PolicyTheAuditorDidNotNameFailsUnlessWaived) {
  const std::string ev = (kCorpus / "genuine-ecc.json").string();
  const auto approved = Sha256("the-policy-the-auditor-approved");
  const auto enforced = kPolicy;
  std::string text;
  // Every other requirement met (enrolled AK, manifest; swtpm accepted by name).
  EXPECT_EQ(Cli(With({"--json", "--nonce", kNonceHex, ev}, Anchors("ecc", false)), &text),
            verify::kExitFail)
      << text;
  auto checks = Checks(text);
  EXPECT_EQ(checks["policy.bundle"]["status"], "fail") << text;
  EXPECT_EQ(checks["policy.bundle"]["reason"], "EXPECTED_POLICY_MISSING") << text;
  EXPECT_NE(checks["policy.bundle"]["detail"].get<std::string>().find("--policy-digest"),
            std::string::npos)
      << text;
  EXPECT_EQ(Cli(With({"--nonce", kNonceHex, ev}, Anchors("ecc", false)), &text), verify::kExitFail);
  EXPECT_NE(text.find("[fail] policy.bundle EXPECTED_POLICY_MISSING"), std::string::npos) << text;
  // The auditor's policy named: the node's is not it.
  EXPECT_EQ(Cli(With({"--json", "--nonce", kNonceHex, "--policy-digest", ToHex(approved), ev},
                     Anchors("ecc", false)),
                &text),
            verify::kExitFail);
  EXPECT_EQ(Checks(text)["policy.bundle"]["reason"], verify::kReasonPolicyDigestMismatch) << text;
  // The policy it enforces named: it passes.
  EXPECT_EQ(Cli(With({"--json", "--nonce", kNonceHex, "--policy-digest", ToHex(enforced), ev},
                     Anchors("ecc", false)),
                &text),
            verify::kExitPass)
      << text;
  EXPECT_EQ(Checks(text)["policy.bundle"]["status"], "pass") << text;
  // Waived by name: exit 0, the waiver listed, the check waived with its reason kept.
  ASSERT_EQ(
      Cli(With({"--json", "--nonce", kNonceHex, "--waive", "policy", ev}, Anchors("ecc", false)),
          &text),
      verify::kExitPass)
      << text;
  auto j = nlohmann::json::parse(text);
  EXPECT_EQ(j["waivers"], nlohmann::json({"policy", "software-tpm"})) << text;
  checks = Checks(text);
  EXPECT_EQ(checks["policy.bundle"]["status"], "waived") << text;
  EXPECT_EQ(checks["policy.bundle"]["reason"], "EXPECTED_POLICY_MISSING") << text;
  // The same through the API, and the EAR: the configuration is not a known good one.
  auto o = AnchoredOptions("ecc");
  o.policy_digest.reset();
  const auto parsed = verify::ParseEvidence(ReadFileBytes(ev));
  const auto failed = verify::Verify(parsed, o);
  EXPECT_FALSE(failed.passed()) << verify::RenderText(failed);
  EXPECT_EQ(verify::EarStatus(failed), "contraindicated");
  o.waivers.push_back("policy");
  const auto waived = verify::Verify(parsed, o);
  ASSERT_TRUE(waived.passed()) << verify::RenderText(waived);
  EXPECT_EQ(verify::TrustworthinessVector(waived)["configuration"], 32);
  EXPECT_EQ(verify::EarStatus(waived), "warning");
  const auto claims = nlohmann::json::parse(verify::EarClaimsJson(waived, {1, std::nullopt}));
  const auto& sub = claims["submods"].begin().value();
  EXPECT_EQ(sub["sovguard.waivers"], nlohmann::json({"software-tpm", "policy"}));
  EXPECT_EQ(sub["sovguard.checks"]["policy.bundle"], "waived:EXPECTED_POLICY_MISSING");
  // A waiver covers only its own reason: the wrong policy named still fails.
  o.policy_digest = Bytes(approved.begin(), approved.end());
  EXPECT_FALSE(verify::Verify(parsed, o).passed());
}

// The verifier, not the evidence, says which PCR is sovguard's.
TEST(VerifyUnit, SovguardPcrIsPinnedByTheVerifier) {
  const std::string ev = (kCorpus / "genuine-ecc.json").string();
  std::string text;
  ASSERT_EQ(Cli(With({"--json", "--nonce", kNonceHex, "--sovguard-pcr", "14", ev}, Anchors("ecc")),
                &text),
            verify::kExitFail);
  EXPECT_EQ(Checks(text)["eventlog.cel.replay"]["reason"], verify::kReasonCelPcrUnexpected) << text;
  EXPECT_EQ(Cli(With({"--nonce", kNonceHex, "--sovguard-pcr", "13", ev}, Anchors("ecc")), &text),
            verify::kExitPass)
      << text;
}

// Reason codes from single-field changes of committed evidence, each named by its check.
TEST(VerifyUnit, EachFieldFailsWithItsOwnReason) {
  const auto good = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  const auto o = AnchoredOptions("ecc");
  auto expect = [&](const v1::Evidence& ev, const char* check, std::string_view reason,
                    verify::Status status = verify::Status::kFail) {
    const auto r = verify::Verify(ev, o);
    const auto* c = r.Find(check);
    ASSERT_NE(c, nullptr) << check;
    EXPECT_EQ(c->status, status) << check << "\n" << verify::RenderText(r);
    EXPECT_EQ(c->reason, reason) << check << "\n" << verify::RenderText(r);
    if (status == verify::Status::kFail) {
      EXPECT_FALSE(r.passed());
    }
  };
  auto ev = good;
  ev.mutable_quote()->set_attest("not a TPMS_ATTEST");
  expect(ev, "quote.structure", verify::kReasonQuoteMalformed);
  ev = good;
  ev.mutable_ak()->set_tpm2b_public(std::string(40, '\x01'));
  expect(ev, "ak.consistency", verify::kReasonAkKeyInvalid);
  // ECDSA with SHA-1 (TPMT_SIGNATURE: sigAlg, then hashAlg): not accepted.
  ev = good;
  (*ev.mutable_quote()->mutable_signature())[3] = 0x04;
  expect(ev, "quote.signature", verify::kReasonSignatureUnsupported);
  ev = good;
  ev.mutable_clock()->set_clock_ms(good.clock().clock_ms() + 1);
  expect(ev, "quote.clock", verify::kReasonClockMismatch);
  ev = good;
  ev.mutable_quote()->set_pcr_bank("sha1");
  expect(ev, "quote.pcr_digest", verify::kReasonPcrValuesMalformed);
  // sovguard's PCR dropped from the quoted values.
  ev = good;
  auto* pcrs = ev.mutable_quote()->mutable_pcrs();
  pcrs->erase(std::remove_if(pcrs->begin(), pcrs->end(),
                             [](const v1::PcrValue& p) { return p.index() == 13; }),
              pcrs->end());
  expect(ev, "eventlog.cel.replay", verify::kReasonCelPcrNotQuoted);
  // The IMA list left out while PCR 10 says IMA measured files.
  ev = good;
  ev.mutable_logs()->clear_ima_ascii();
  expect(ev, "eventlog.ima", verify::kReasonImaLogMissing);
  // ...and with PCR 10 zero (IMA measured nothing) there is nothing to verify.
  for (auto& p : *ev.mutable_quote()->mutable_pcrs())
    if (p.index() == 10) p.set_sha256(std::string(32, '\0'));
  expect(ev, "eventlog.ima", verify::kReasonNotVerified, verify::Status::kNotApplicable);
  // No UEFI log: the boot chain is unverified.
  ev = good;
  ev.mutable_logs()->clear_uefi_tcg2();
  expect(ev, "eventlog.uefi", verify::kReasonBootLogMissing);
}

// The committed anchors make the committed evidence pass; the README maps every reason code to
// the test producing it, and every check to the clauses it supports.
TEST(VerifyUnit, EveryReasonCodeIsInTheReadmeTable) {
  const auto readme =
      ReadFileBytes(std::filesystem::path(SOVGUARD_SOURCE_DIR) / "attestation/verify/README.md");
  const std::string text(readme.begin(), readme.end());
  const auto table = text.find("## Reason codes and tests");
  ASSERT_NE(table, std::string::npos);
  for (const auto code : verify::kAllReasons) {
    const std::string row = "\n| `" + std::string(code) + "` |";
    EXPECT_NE(text.find(row, table), std::string::npos)
        << code << " is a reason code but has no row in the README's reason/test table";
  }
  // Every check a verdict reports supports named clauses, listed in the JSON report.
  std::string out;
  Cli(With({"--json", "--nonce", kNonceHex, (kCorpus / "genuine-ecc.json").string()},
           Anchors("ecc")),
      &out);
  const auto j = nlohmann::json::parse(out);
  const auto names = verify::AllCheckNames();
  for (const auto& c : j["checks"]) {
    EXPECT_FALSE(c["clauses"].empty()) << c["name"];
    EXPECT_NE(std::find(names.begin(), names.end(), c["name"].get<std::string>()), names.end());
  }
  const auto clauses = text.find("## Certification mapping");
  ASSERT_NE(clauses, std::string::npos);
  // Each row lists exactly the clauses the JSON report gives (one table in code).
  for (const auto name : names) {
    std::string row = "\n| `" + std::string(name) + "` | ";
    for (size_t i = 0; i < verify::ClausesFor(name).size(); ++i)
      row += (i ? ", " : "") + std::string(verify::ClausesFor(name)[i]);
    EXPECT_NE(text.find(row + " |\n", clauses), std::string::npos)
        << name << ": the README's certification mapping has no row " << row;
  }
}

// The evidence's node name is outside everything the quote signs; the report and the EAR name
// the node by it. An attacker rooting node A sends A's genuine evidence under node B's name (in
// JSON, or as one more protobuf field on the wire, which protobuf takes as the value): the
// verdict must not approve "node-b" for what A's AK proved. (Before: PASS, exit 0, and an EAR
// submodule "node-b" with status warning.)
TEST(VerifyUnit, EvidenceNodeNameMustBeTheBoundSnapshots) {
  const auto o = AnchoredOptions("ecc");
  auto ev = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  ASSERT_TRUE(verify::Verify(ev, o).passed());
  ASSERT_EQ(ev.node(), ev.snapshot().node());
  ev.set_node("node-b");
  auto r = verify::Verify(ev, o);
  EXPECT_FALSE(r.passed()) << verify::RenderText(r);
  ASSERT_NE(r.Find("snapshot.copy"), nullptr);
  EXPECT_EQ(r.Find("snapshot.copy")->reason, verify::kReasonNodeNameMismatch)
      << verify::RenderText(r);
  const auto claims = nlohmann::json::parse(verify::EarClaimsJson(r, {}));
  EXPECT_EQ(claims["submods"]["node-b"]["ear.status"], "contraindicated") << claims.dump(2);

  // The same name appended as one more field to the binary evidence (protobuf: the last wins).
  const auto pb = ReadFileBytes(kCorpus / "genuine-rsa.pb");
  std::string wire(pb.begin(), pb.end());
  wire += std::string("\x12\x06") + "node-b";
  const auto view = verify::ParseEvidenceView(
      std::span(reinterpret_cast<const uint8_t*>(wire.data()), wire.size()));
  ASSERT_EQ(view.message.node(), "node-b");
  r = verify::Verify(view, AnchoredOptions("rsa"));
  EXPECT_FALSE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("snapshot.copy")->reason, verify::kReasonNodeNameMismatch)
      << verify::RenderText(r);
}

// enforcement.continuity after a TPM Restart (TPM2_Shutdown(STATE), then Startup(CLEAR): what
// hibernation does, and root can hibernate the host): every PCR is reset and sovguard's log
// starts again, the reset count stays and the restart count moves. The state file's record
// count belongs to the log before: continuing from it would skip the first records of the new
// log (a tamper finding, a release). (Before: continued from record 4 of the new log.)
TEST(VerifyUnit, ContinuityStartsOverAfterATpmRestart) {
  const auto ev = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  const std::string ak = ToHex(Bytes(ev.ak().name().begin(), ev.ak().name().end()));
  const nlohmann::json state = {
      {"aks",
       {{ak, {{"clock_ms", 100}, {"reset_count", 2}, {"restart_count", 0}, {"cel_records", 4}}}}}};
  verify::detail::CelFacts cel;
  cel.recs.resize(10);
  const std::optional<verify::detail::CelFacts> authentic(std::move(cel));
  TPMS_ATTEST attest{};
  attest.clockInfo.clock = 5000;
  attest.clockInfo.resetCount = 2;
  std::string since;
  EXPECT_EQ(verify::detail::ContinuitySince(state, ev, &attest, authentic, since), 4u) << since;
  attest.clockInfo.restartCount = 1;
  EXPECT_EQ(verify::detail::ContinuitySince(state, ev, &attest, authentic, since), 0u) << since;
  EXPECT_NE(since.find("all of logs.cel"), std::string::npos) << since;
}

// Checks nobody asked for are listed as not applicable, with their reason, never as passed.
TEST(VerifyUnit, NotRequestedChecksAreListed) {
  const auto ev = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  const auto r = verify::Verify(ev, AnchoredOptions("ecc"));
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  for (const char* c : {"ak.ek_binding", "quote.clock_monotonic", "ek.chain"}) {
    ASSERT_NE(r.Find(c), nullptr) << c;
    EXPECT_EQ(r.Find(c)->status, verify::Status::kNotApplicable) << c;
    EXPECT_EQ(r.Find(c)->reason, verify::kReasonNotRequested) << c;
  }
}

}  // namespace
}  // namespace sovguard::attestation
