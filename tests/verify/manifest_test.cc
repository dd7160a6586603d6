// Reference manifests: DSSE signing and verification (Ed25519, EC P-256), strict parsing, and
// the verifier's manifest checks on committed real evidence (made from swtpm): every measured
// component in the manifest, supplier jurisdiction allowed, boot values accepted.
#include "attestation/manifest/manifest.h"

#include <gtest/gtest.h>
#include <openssl/pem.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "attestation/eventlog/cel.h"
#include "attestation/verify/verifier.h"
#include "attestation/verify/verify_cli.h"
#include "base/openssl.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

namespace mf = manifest;
using verify::Status;

const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/evidence";
const Bytes kNonce = {'a', 'u', 'd', 'i', 't', 'o', 'r', '-', 'n', 'o', 'n', 'c',
                      'e', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};

base::EvpPkeyPtr Keygen(const char* type) {
  EVP_PKEY* k = std::string_view(type) == "EC" ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                : std::string_view(type) == "RSA"
                    ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                    : EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  if (!k) throw std::runtime_error("keygen failed");
  return base::EvpPkeyPtr(k);
}

v1::Evidence Genuine() {
  return verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
}

// A manifest approving exactly the components the evidence measured, from a German supplier.
mf::Manifest FromEvidence(const v1::Evidence& ev) {
  mf::Manifest m;
  m.id = "test-manifest";
  m.issuer = "Test Certifier GmbH";
  m.issued_at = "2026-11-23T20:00:00Z";
  m.components = test_support::ApproveMeasured(
      cel::DecodeLog(Bytes(ev.logs().cel().begin(), ev.logs().cel().end())),
      {cel::EventKind::kSelfBinary, cel::EventKind::kBpfObject});
  // And every file its IMA list measured ("PCR HASH TEMPLATE sha256:HEX NAME" lines).
  mf::Component files{"host-files", "1.0", "Example Distribution SA", "FR", "MIT", {}};
  std::istringstream list(ev.logs().ima_ascii());
  for (std::string line; std::getline(list, line);) {
    std::istringstream f(line);
    std::string pcr, hash, tmpl, digest, name;
    f >> pcr >> hash >> tmpl >> digest >> name;
    if (name == "boot_aggregate" || !digest.starts_with("sha256:")) continue;
    mf::File file{name, {}};
    const Bytes d = FromHex(digest.substr(7), "IMA digest");
    std::copy(d.begin(), d.end(), file.sha256.begin());
    files.files.push_back(file);
  }
  if (!files.files.empty()) m.components.push_back(files);
  return m;
}

struct Signed {
  base::EvpPkeyPtr key = Keygen("ED25519");
  std::string envelope, pub;
};
Signed Sign(const mf::Manifest& m) {
  Signed s;
  s.envelope = mf::Sign(mf::ToJson(m), s.key.get());
  s.pub = test_support::PublicPem(s.key.get());
  return s;
}

verify::Report VerifyWith(const v1::Evidence& ev, const Signed& s,
                          std::vector<std::string> allowed = {}) {
  verify::Options o;
  o.nonce = kNonce;
  o.ak_pub_pem = ev.ak().public_pem();  // enrolled together with the committed evidence
  o.waivers = {"software-tpm"};         // the committed evidence is swtpm's
  o.policy_digest = test_support::TestPolicyDigest();
  o.manifest_envelope = std::make_shared<const std::string>(s.envelope);
  o.manifest_key_pem = s.pub;
  o.allowed_jurisdictions = std::move(allowed);
  return verify::Verify(ev, o);
}

void ExpectCheck(const verify::Report& r, const std::string& name, Status st,
                 std::string_view reason) {
  const auto* c = r.Find(name);
  ASSERT_NE(c, nullptr) << name;
  EXPECT_EQ(c->status, st) << name << ": " << c->reason << ": " << c->detail;
  EXPECT_EQ(c->reason, reason) << name << ": " << c->detail;
}

TEST(Manifest, SignVerifyRoundTripEd25519AndP256) {
  const auto m = FromEvidence(Genuine());
  ASSERT_EQ(m.components.size(), 3u);  // sovguardd, its BPF object, the IMA-measured files
  for (const char* type : {"ED25519", "EC"}) {
    auto key = Keygen(type);
    const auto env = mf::Sign(mf::ToJson(m), key.get());
    auto j = nlohmann::json::parse(env);
    EXPECT_EQ(j["payloadType"], mf::kPayloadType);
    EXPECT_EQ(j["signatures"][0]["keyid"], mf::KeyId(key.get()));
    auto pub = mf::PublicKeyFromPem(test_support::PublicPem(key.get()));
    const auto back = mf::VerifyEnvelope(env, pub.get());
    EXPECT_EQ(back.id, "test-manifest");
    ASSERT_EQ(back.components.size(), 3u);
    EXPECT_EQ(back.components[0].files[0].sha256, m.components[0].files[0].sha256);
    // Payload altered after signing (a component's jurisdiction rewritten).
    auto payload = mf::FromBase64(j["payload"].get<std::string>(), "payload");
    std::string text(payload.begin(), payload.end());
    text.replace(text.find("\"DE\""), 4, "\"FR\"");
    j["payload"] = mf::Base64(Bytes(text.begin(), text.end()));
    try {
      mf::VerifyEnvelope(j.dump(), pub.get());
      ADD_FAILURE() << "tampered payload verified";
    } catch (const mf::ManifestError& e) {
      EXPECT_EQ(e.reason(), verify::kReasonManifestSignatureInvalid) << e.what();
    }
    // Another key.
    auto other = Keygen(type);
    try {
      mf::VerifyEnvelope(env, other.get());
      ADD_FAILURE() << "verified with another key";
    } catch (const mf::ManifestError& e) {
      EXPECT_EQ(e.reason(), verify::kReasonManifestSignatureInvalid);
    }
  }
  // RSA keys are refused by name.
  auto rsa = Keygen("RSA");
  EXPECT_THROW(mf::Sign(mf::ToJson(m), rsa.get()), mf::ManifestError);
}

TEST(Manifest, StrictParsing) {
  auto base = nlohmann::json::parse(mf::ToJson(FromEvidence(Genuine())));
  auto expect_malformed = [](const nlohmann::json& j, const std::string& needle) {
    try {
      mf::Parse(j.dump(), true);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const mf::ManifestError& e) {
      EXPECT_EQ(e.reason(), verify::kReasonManifestMalformed);
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto j = base;
  j["components"][0]["colour"] = "blue";
  expect_malformed(j, "$.components[0].colour: unknown field");
  j = base;
  j["components"][1]["supplier_jurisdiction"] = "XX";
  expect_malformed(j, "$.components[1].supplier_jurisdiction");
  j = base;
  j["components"][0]["files"][0]["sha256"] = "abcd";
  expect_malformed(j, "$.components[0].files[0].sha256");
  j = base;
  j["components"][0]["license"] = "";
  expect_malformed(j, "$.components[0].license: must not be empty");
  j = base;
  j["sovguard_manifest"] = 2;
  expect_malformed(j, "version");
  j = base;
  j["boot"] = {{"pcrs", {{"24", {std::string(64, 'a')}}}}};
  expect_malformed(j, "$.boot.pcrs.24");
  // A draft may leave the review fields empty, but cannot be signed like that.
  j = base;
  j["components"][0]["supplier_jurisdiction"] = "";
  EXPECT_NO_THROW(mf::Parse(j.dump(), false));
  auto key = Keygen("ED25519");
  EXPECT_THROW(mf::Sign(j.dump(), key.get()), mf::ManifestError);
  EXPECT_THROW(mf::Parse("{not json", false), mf::ManifestError);
}

TEST(Manifest, EveryMeasuredComponentFromAnAllowedSupplier) {
  const auto ev = Genuine();
  const auto m = FromEvidence(ev);
  auto ok = VerifyWith(ev, Sign(m));
  EXPECT_TRUE(ok.passed()) << verify::RenderText(ok);
  ExpectCheck(ok, "manifest.signature", Status::kPass, verify::kReasonOk);
  ExpectCheck(ok, "manifest.components", Status::kPass, verify::kReasonOk);
  ExpectCheck(ok, "manifest.jurisdiction", Status::kPass, verify::kReasonOk);
  EXPECT_NE(ok.Find("manifest.jurisdiction")->detail.find("Example Supplier GmbH (DE)"),
            std::string::npos);

  // A measured component missing from the manifest.
  auto missing = m;
  missing.components.erase(missing.components.end() - 2);  // sg_tc_egress.bpf.o's
  auto r = VerifyWith(ev, Sign(missing));
  EXPECT_FALSE(r.passed());
  ExpectCheck(r, "manifest.components", Status::kFail, verify::kReasonComponentNotInManifest);
  EXPECT_NE(r.Find("manifest.components")->detail.find("sg_tc_egress.bpf.o"), std::string::npos);

  // The right file digest, from a supplier outside the EU/EEA.
  auto foreign = m;
  foreign.components[0].supplier = "Example Corp";
  foreign.components[0].supplier_jurisdiction = "US";
  r = VerifyWith(ev, Sign(foreign));
  EXPECT_FALSE(r.passed());
  ExpectCheck(r, "manifest.components", Status::kPass, verify::kReasonOk);
  ExpectCheck(r, "manifest.jurisdiction", Status::kFail, verify::kReasonSupplierJurisdiction);
  EXPECT_NE(r.Find("manifest.jurisdiction")->detail.find("Example Corp, US"), std::string::npos);
  // ... which an auditor may allow explicitly; Norway is EEA, Switzerland is not.
  EXPECT_TRUE(VerifyWith(ev, Sign(foreign), {"EEA", "US"}).passed());
  auto norway = m;
  norway.components[0].supplier_jurisdiction = "NO";
  EXPECT_TRUE(VerifyWith(ev, Sign(norway)).passed());
  ExpectCheck(VerifyWith(ev, Sign(norway), {"EU"}), "manifest.jurisdiction", Status::kFail,
              verify::kReasonSupplierJurisdiction);
  auto swiss = m;
  swiss.components[1].supplier_jurisdiction = "CH";
  ExpectCheck(VerifyWith(ev, Sign(swiss)), "manifest.jurisdiction", Status::kFail,
              verify::kReasonSupplierJurisdiction);

  // Boot values: the quoted PCR 0 accepted, or not.
  auto boot = m;
  std::string pcr0;
  for (const auto& p : ev.quote().pcrs())
    if (p.index() == 0) pcr0 = p.sha256();
  ASSERT_EQ(pcr0.size(), 32u);
  Sha256Digest d{};
  std::copy(pcr0.begin(), pcr0.end(), d.begin());
  boot.boot_pcrs[0] = {d};
  r = VerifyWith(ev, Sign(boot));
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  ExpectCheck(r, "manifest.boot", Status::kPass, verify::kReasonOk);
  d[0] ^= 1;
  boot.boot_pcrs[0] = {d};
  ExpectCheck(VerifyWith(ev, Sign(boot)), "manifest.boot", Status::kFail,
              verify::kReasonBootValueNotAccepted);

  // Files whose digests share their first 8 bytes with a measured one (the verifier's index
  // keys on them): listed before the real ones, from a non-EU supplier, they are neither
  // taken for the measured file nor do they hide it; alone, the measured file is missing.
  auto decoys = m;
  for (const auto& c : m.components) {
    auto near = c.files[0].sha256;
    near[31] ^= 1;
    decoys.components.insert(decoys.components.begin(),
                             {"decoy-" + c.name, "6.6", "Decoy Corp", "US", "MIT", {{"x", near}}});
  }
  r = VerifyWith(ev, Sign(decoys));
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("manifest.jurisdiction")->detail.find("Decoy"), std::string::npos);
  decoys.components.resize(m.components.size());  // the decoys only
  r = VerifyWith(ev, Sign(decoys));
  ExpectCheck(r, "manifest.components", Status::kFail, verify::kReasonComponentNotInManifest);
  EXPECT_NE(r.Find("manifest.components")->detail.find("2 of 2 measured components"),
            std::string::npos)
      << r.Find("manifest.components")->detail;
  // Two components naming the same file: the first one listed is the one that counts.
  auto twice = m;
  twice.components.insert(twice.components.begin(),
                          {"again", "1.1", "Example Corp", "US", "MIT", m.components[0].files});
  ExpectCheck(VerifyWith(ev, Sign(twice)), "manifest.jurisdiction", Status::kFail,
              verify::kReasonSupplierJurisdiction);
  std::swap(twice.components[0], twice.components[1]);
  EXPECT_TRUE(VerifyWith(ev, Sign(twice)).passed());

  // A forged envelope: every manifest check fails, the first with the signature reason.
  auto s = Sign(m);
  s.pub = test_support::PublicPem(Keygen("ED25519").get());
  r = VerifyWith(ev, s);
  ExpectCheck(r, "manifest.signature", Status::kFail, verify::kReasonManifestSignatureInvalid);
  ExpectCheck(r, "manifest.components", Status::kFail, verify::kReasonDependencyFailed);

  // A CEL that does not replay cannot vouch for components.
  auto bad = ev;
  bad.mutable_logs()->mutable_cel()->back() ^= 1;
  ExpectCheck(VerifyWith(bad, Sign(m)), "manifest.components", Status::kFail,
              verify::kReasonDependencyFailed);

  // Without a manifest: approved software is a requirement, so every manifest check fails.
  verify::Options o;
  o.nonce = kNonce;
  auto none = verify::Verify(ev, o);
  EXPECT_FALSE(none.passed());
  ExpectCheck(none, "manifest.components", Status::kFail, verify::kReasonManifestMissing);
  ExpectCheck(none, "manifest.signature", Status::kFail, verify::kReasonManifestMissing);
}

// The verifier keeps a manifest it verified (parsed, signature checked, indexed) for the next
// verdicts, by exact envelope and key: the same envelope under another key, or one byte of it
// changed, is verified again and fails; the allowed jurisdictions are this verdict's, not the
// ones the manifest was first checked with; a foreign-supplier verdict does not stick.
TEST(Manifest, AVerifiedManifestIsReusedOnlyForTheSameEnvelopeAndKey) {
  const auto ev = Genuine();
  auto foreign = FromEvidence(ev);
  foreign.components[0].supplier_jurisdiction = "US";
  const auto s = Sign(foreign);
  auto verify_with = [&](const std::string& envelope, const std::string& pub,
                         std::vector<std::string> allowed) {
    verify::Options o;
    o.nonce = kNonce;
    o.ak_pub_pem = ev.ak().public_pem();
    o.waivers = {"software-tpm"};
    o.policy_digest = test_support::TestPolicyDigest();
    o.manifest_envelope = std::make_shared<const std::string>(envelope);
    o.manifest_key_pem = pub;
    o.allowed_jurisdictions = std::move(allowed);
    return verify::Verify(ev, o);
  };
  for (int round = 0; round < 2; ++round) {  // the second round runs on the kept manifest
    ExpectCheck(verify_with(s.envelope, s.pub, {}), "manifest.jurisdiction", Status::kFail,
                verify::kReasonSupplierJurisdiction);
    auto r = verify_with(s.envelope, s.pub, {"EEA", "US"});
    EXPECT_TRUE(r.passed()) << verify::RenderText(r);
    EXPECT_NE(r.Find("manifest.jurisdiction")->detail.find("Example Supplier GmbH (US)"),
              std::string::npos);
  }
  const std::string other_key = test_support::PublicPem(Keygen("ED25519").get());
  ExpectCheck(verify_with(s.envelope, other_key, {"EEA", "US"}), "manifest.signature",
              Status::kFail, verify::kReasonManifestSignatureInvalid);
  auto j = nlohmann::json::parse(s.envelope);
  std::string sig = j["signatures"][0]["sig"];
  sig[sig.size() / 2] = sig[sig.size() / 2] == 'A' ? 'B' : 'A';
  j["signatures"][0]["sig"] = sig;
  const std::string tampered = j.dump();
  ExpectCheck(verify_with(tampered, s.pub, {"EEA", "US"}), "manifest.signature", Status::kFail,
              verify::kReasonManifestSignatureInvalid);
  // The good one is still good, and the failed ones stay failed.
  EXPECT_TRUE(verify_with(s.envelope, s.pub, {"EEA", "US"}).passed());
  ExpectCheck(verify_with(tampered, s.pub, {"EEA", "US"}), "manifest.signature", Status::kFail,
              verify::kReasonManifestSignatureInvalid);
  // A key that is not a key is an input error every time (never kept).
  EXPECT_THROW(verify_with(s.envelope, "not a key", {}), verify::InputError);
  EXPECT_THROW(verify_with(s.envelope, "not a key", {}), verify::InputError);
}

TEST(Manifest, VerifierCommandLine) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("sg-manifest-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const auto m = FromEvidence(Genuine());
  auto s = Sign(m);
  WriteFileAtomic(dir / "m.dsse.json", s.envelope);
  WriteFileAtomic(dir / "key.pub", s.pub);
  auto foreign = m;
  foreign.components[0].supplier_jurisdiction = "US";
  auto sf = Sign(foreign);
  WriteFileAtomic(dir / "foreign.dsse.json", sf.envelope);
  WriteFileAtomic(dir / "foreign.pub", sf.pub);
  WriteFileAtomic(dir / "ak.pem", Genuine().ak().public_pem());
  auto cli = [&](std::vector<std::string> extra) {
    std::vector<std::string> args = {"--nonce",
                                     ToHex(kNonce),
                                     "--ak-pub",
                                     (dir / "ak.pem").string(),
                                     "--allow-software-tpm",
                                     "--policy-digest",
                                     ToHex(test_support::TestPolicyDigest())};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back((kCorpus / "genuine-ecc.json").string());
    std::ostringstream out, err;
    int rc = verify::RunVerifyCli(args, out, err);
    return std::make_pair(rc, out.str() + err.str());
  };
  auto [rc, text] = cli(
      {"--manifest", (dir / "m.dsse.json").string(), "--manifest-key", (dir / "key.pub").string()});
  EXPECT_EQ(rc, verify::kExitPass) << text;
  std::tie(rc, text) = cli({"--manifest", (dir / "foreign.dsse.json").string(), "--manifest-key",
                            (dir / "foreign.pub").string()});
  EXPECT_EQ(rc, verify::kExitFail) << text;
  EXPECT_NE(text.find("SUPPLIER_JURISDICTION_NOT_ALLOWED"), std::string::npos) << text;
  std::tie(rc, text) = cli({"--manifest", (dir / "foreign.dsse.json").string(), "--manifest-key",
                            (dir / "foreign.pub").string(), "--allow-jurisdiction", "eea,us"});
  EXPECT_EQ(rc, verify::kExitPass) << text;
  // Usage errors: key without manifest, a bad code, a key that is not a key.
  EXPECT_EQ(cli({"--manifest", (dir / "m.dsse.json").string()}).first, verify::kExitUsage);
  EXPECT_EQ(cli({"--manifest", (dir / "m.dsse.json").string(), "--manifest-key",
                 (dir / "key.pub").string(), "--allow-jurisdiction", "ZZ"})
                .first,
            verify::kExitUsage);
  EXPECT_EQ(cli({"--manifest", (dir / "m.dsse.json").string(), "--manifest-key",
                 (dir / "m.dsse.json").string()})
                .first,
            verify::kExitUsage);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sovguard::attestation
