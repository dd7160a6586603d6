// EAR (EAT Attestation Result) JWT: the signature is checked here with OpenSSL directly (not
// through the verifier's code), the claims against draft-ietf-rats-ear, and the status and
// trustworthiness vector against the verdict.
#include "attestation/verify/ear.h"

#include <gtest/gtest.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include <algorithm>

#include <ctime>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attestation/eventlog/cel.h"
#include "attestation/manifest/manifest.h"
#include "attestation/verify/verify_cli.h"
#include "base/file.h"
#include "base/openssl.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

using verify::Status;

const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/evidence";
const Bytes kNonce = {'a', 'u', 'd', 'i', 't', 'o', 'r', '-', 'n', 'o', 'n', 'c',
                      'e', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};

base::EvpPkeyPtr Keygen(bool ec) {
  EVP_PKEY* k = ec ? EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256")
                   : EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  return base::EvpPkeyPtr(k);
}

// base64url without padding, decoded independently of the code under test.
Bytes B64UrlDecode(const std::string& in) {
  std::string s = in;
  for (auto& c : s) c = c == '-' ? '+' : c == '_' ? '/' : c;
  while (s.size() % 4) s.push_back('=');
  Bytes out(s.size() / 4 * 3);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()),
                          static_cast<int>(s.size()));
  EXPECT_GE(n, 0);
  size_t len = static_cast<size_t>(n);
  if (s.size() >= 1 && s[s.size() - 1] == '=') --len;
  if (s.size() >= 2 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

struct Jwt {
  nlohmann::json header, claims;
  bool signature_ok = false;
};

// Splits, decodes and checks the JWS signature with the public half of `key`.
Jwt Check(const std::string& jwt, EVP_PKEY* key) {
  Jwt r;
  const auto d1 = jwt.find('.'), d2 = jwt.rfind('.');
  EXPECT_NE(d1, d2);
  auto h = B64UrlDecode(jwt.substr(0, d1));
  auto c = B64UrlDecode(jwt.substr(d1 + 1, d2 - d1 - 1));
  r.header = nlohmann::json::parse(h);
  r.claims = nlohmann::json::parse(c);
  Bytes sig = B64UrlDecode(jwt.substr(d2 + 1));
  const EVP_MD* md = nullptr;
  if (r.header["alg"] == "ES256") {
    EXPECT_EQ(sig.size(), 64u);
    base::EcdsaSigPtr es(ECDSA_SIG_new());
    ECDSA_SIG_set0(es.get(), BN_bin2bn(sig.data(), 32, nullptr),
                   BN_bin2bn(sig.data() + 32, 32, nullptr));
    unsigned char* der = nullptr;
    int n = i2d_ECDSA_SIG(es.get(), &der);
    sig.assign(der, der + n);
    OPENSSL_free(der);
    md = EVP_sha256();
  }
  // Public key only, through PEM, so the check cannot use private material.
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key);
  base::EvpPkeyPtr pub(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const std::string input = jwt.substr(0, d2);
  r.signature_ok =
      EVP_DigestVerifyInit(ctx.get(), nullptr, md, nullptr, pub.get()) == 1 &&
      EVP_DigestVerify(ctx.get(), sig.data(), sig.size(),
                       reinterpret_cast<const uint8_t*>(input.data()), input.size()) == 1;
  return r;
}

// genuine-ecc.json: storage-open on its tracepoint fallback (as on this kernel, no BPF LSM);
// genuine-strongest.pb: the same node reporting the strongest mechanism on every path.
v1::Evidence Genuine(const char* file = "genuine-ecc.json") {
  return verify::ParseEvidence(ReadFileBytes(kCorpus / file));
}

const std::filesystem::path kAnchors =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/anchors";
// The auditor's anchors for the committed evidence: enrolled AK, signed manifest (approving every
// measured component and IMA file); the swtpm accepted by name.
verify::Options Opts(const char* ak = "ecc") {
  verify::Options o;
  o.nonce = kNonce;
  o.ak_pub_pem = base::ReadFileText(kAnchors / (std::string("ak-") + ak + ".pem"));
  o.manifest_envelope =
      std::make_shared<const std::string>(base::ReadFileText(kAnchors / "manifest.dsse.json"));
  o.manifest_key_pem = base::ReadFileText(kAnchors / "manifest.pub");
  o.waivers = {"software-tpm"};
  o.policy_digest = test_support::TestPolicyDigest();
  return o;
}

TEST(Ear, SignedJwtWithTheEarClaims) {
  const auto rep = verify::Verify(Genuine(), Opts());
  ASSERT_TRUE(rep.passed()) << verify::RenderText(rep);
  for (bool ec : {true, false}) {
    auto key = Keygen(ec);
    const auto now = static_cast<int64_t>(std::time(nullptr));
    const auto jwt = verify::MakeEarJwt(rep, key.get(), {0, kNonce});
    auto j = Check(jwt, key.get());
    EXPECT_TRUE(j.signature_ok) << jwt;
    EXPECT_EQ(j.header["alg"], ec ? "ES256" : "EdDSA");
    EXPECT_EQ(j.claims["eat_profile"], "tag:github.com,2023:veraison/ear");
    EXPECT_LE(std::abs(j.claims["iat"].get<int64_t>() - now), 5);
    EXPECT_EQ(j.claims["ear.verifier-id"]["developer"], "sovguard");
    EXPECT_EQ(j.claims["ear.verifier-id"]["build"].get<std::string>().rfind("sovguard-verify ", 0),
              0u);
    EXPECT_EQ(B64UrlDecode(j.claims["eat_nonce"]), kNonce);
    const auto& sub = j.claims["submods"]["verify-node"];
    // Enrolled AK and approved software, but a software TPM accepted by name (AR4SI 32): a
    // warning, not an affirmation; the waiver is in the EAR.
    EXPECT_EQ(sub["ear.status"], "warning") << sub.dump();
    EXPECT_EQ(sub["ear.trustworthiness-vector"]["executables"], 2);
    EXPECT_EQ(sub["ear.trustworthiness-vector"]["instance-identity"], 2);
    EXPECT_EQ(sub["ear.trustworthiness-vector"]["hardware"], 32);
    EXPECT_EQ(sub["sovguard.waivers"], nlohmann::json({"software-tpm"}));
    EXPECT_EQ(sub["sovguard.checks"]["tpm.hardware"], "waived:SOFTWARE_TPM");
    // Measured policy, but storage-open below its strongest mechanism: an unsafe configuration
    // (AR4SI 32), never silently affirmed.
    EXPECT_EQ(sub["ear.trustworthiness-vector"]["configuration"], 32);
    EXPECT_EQ(sub["sovguard.checks"]["quote.signature"], "pass");
    // Claims rewritten to "affirming" and re-encoded, signature kept: it no longer verifies.
    auto forged_claims = j.claims;
    forged_claims["submods"]["verify-node"]["ear.status"] = "affirming";
    const std::string fc = forged_claims.dump();
    const auto d1 = jwt.find('.'), d2 = jwt.rfind('.');
    const std::string bad =
        jwt.substr(0, d1 + 1) +
        verify::Base64Url(std::span(reinterpret_cast<const uint8_t*>(fc.data()), fc.size())) +
        jwt.substr(d2);
    EXPECT_FALSE(Check(bad, key.get()).signature_ok);
  }
  auto rsa = base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  EXPECT_THROW(verify::MakeEarJwt(rep, rsa.get(), {}), verify::InputError);
}

TEST(Ear, StatusFollowsTheChecks) {
  // "affirming" only when every claim is backed by a passed check and nothing was waived: a
  // report with every check passed (no hardware TPM is available to this test).
  verify::Report all;
  all.node = "n";
  for (const auto name : verify::AllCheckNames())
    all.checks.push_back({std::string(name), Status::kPass, std::string(verify::kReasonOk), ""});
  EXPECT_EQ(verify::EarStatus(all), "affirming");
  auto v = verify::TrustworthinessVector(all);
  EXPECT_EQ(v["instance-identity"], 2);
  EXPECT_EQ(v["hardware"], 2);
  EXPECT_EQ(v["executables"], 2);
  EXPECT_EQ(v["configuration"], 2);
  // One requirement waived: a warning, whatever it is.
  for (const char* c : {"tpm.hardware", "trust.root", "enforcement.continuity", "eventlog.uefi",
                        "manifest.ima", "policy.bundle"}) {
    auto w = all;
    for (auto& k : w.checks)
      if (k.name == c) k.status = Status::kWaived;
    w.waivers = {"named"};
    EXPECT_EQ(verify::EarStatus(w), "warning") << c;
  }
  // The active policy compared with nothing the auditor expects (no --policy-digest), accepted
  // by name (--waive policy): the log and the snapshot agree on it, but nobody approved it, so
  // the configuration is not a known good one. policy.bundle as the verifier really words it,
  // spliced into the all-pass report.
  {
    const auto genuine = Genuine();
    auto with_policy = [&](const verify::Options& o, Status want) {
      const auto real = verify::Verify(genuine, o);
      EXPECT_EQ(real.Find("policy.bundle")->status, want) << verify::RenderText(real);
      auto rep = all;
      for (auto& k : rep.checks)
        if (k.name == "policy.bundle") k = *real.Find("policy.bundle");
      rep.waivers = real.waivers;
      rep.waivers.erase(std::remove(rep.waivers.begin(), rep.waivers.end(), "software-tpm"),
                        rep.waivers.end());
      return rep;
    };
    auto o = Opts();
    o.policy_digest.reset();
    o.waivers.push_back("policy");
    auto unexpected = with_policy(o, Status::kWaived);
    EXPECT_EQ(verify::TrustworthinessVector(unexpected)["configuration"], 32);
    EXPECT_EQ(verify::EarStatus(unexpected), "warning");
    auto expected = with_policy(Opts(), Status::kPass);  // the digest the evidence applied
    EXPECT_EQ(verify::TrustworthinessVector(expected)["configuration"], 2);
    EXPECT_EQ(verify::EarStatus(expected), "affirming");
  }
  // A runtime check that did not pass (not applicable): no affirmation either.
  auto na = all;
  for (auto& k : na.checks)
    if (k.name == "enforcement.continuity") k.status = Status::kNotApplicable;
  EXPECT_EQ(verify::EarStatus(na), "warning");

  const auto ev = Genuine("genuine-strongest.pb");
  // Real evidence: enrolled AK, trusted EK CA, manifest, every path at its strongest; its
  // software TPM and the restart it went through accepted by name: a warning.
  auto o = Opts();
  o.ek_ca_dir = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data/ek-ca";
  o.waivers.push_back("interruptions");
  auto good = verify::Verify(ev, o);
  ASSERT_TRUE(good.passed()) << verify::RenderText(good);
  EXPECT_EQ(verify::EarStatus(good), "warning");
  v = verify::TrustworthinessVector(good);
  EXPECT_EQ(v["instance-identity"], 2);
  EXPECT_EQ(v["hardware"], 32);
  EXPECT_EQ(v["executables"], 2);
  EXPECT_EQ(v["configuration"], 32);
  // A manifest approving only sovguardd's own components (for the failure below).
  manifest::Manifest m;
  m.id = "ear-test";
  m.issuer = "Test Certifier";
  m.components = test_support::ApproveMeasured(
      cel::DecodeLog(Bytes(ev.logs().cel().begin(), ev.logs().cel().end())),
      {cel::EventKind::kSelfBinary, cel::EventKind::kBpfObject});
  auto mkey = Keygen(false);
  o.manifest_key_pem = test_support::PublicPem(mkey.get());
  // The same checks on evidence whose storage-open path is downgraded: a warning.
  {
    const auto downgraded = Genuine();
    auto w = verify::Verify(downgraded, Opts());
    ASSERT_TRUE(w.passed()) << verify::RenderText(w);
    EXPECT_EQ(verify::TrustworthinessVector(w)["configuration"], 32);
    EXPECT_EQ(verify::EarStatus(w), "warning");
  }
  // Forged signature: contraindicated, cryptographic validation failed.
  auto forged = ev;
  forged.mutable_quote()->mutable_signature()->back() ^= 1;
  auto r = verify::Verify(forged, Opts());
  EXPECT_EQ(verify::EarStatus(r), "contraindicated");
  EXPECT_EQ(verify::TrustworthinessVector(r)["instance-identity"], 99);
  // A component the manifest does not approve: contraindicated executables.
  m.components.pop_back();
  o.manifest_envelope =
      std::make_shared<const std::string>(manifest::Sign(manifest::ToJson(m), mkey.get()));
  r = verify::Verify(ev, o);
  EXPECT_EQ(verify::EarStatus(r), "contraindicated");
  EXPECT_EQ(verify::TrustworthinessVector(r)["executables"], 96);
}

TEST(Ear, CommandLineWritesTheJwt) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("sg-ear-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto key = Keygen(true);
  {
    base::BioPtr bio(BIO_new_file((dir / "ear.key").c_str(), "w"));
    PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
  }
  const std::string ev = (kCorpus / "genuine-ecc.json").string();
  std::ostringstream out, err;
  const std::vector<std::string> anchors = {"--ak-pub",
                                            (kAnchors / "ak-ecc.pem").string(),
                                            "--manifest",
                                            (kAnchors / "manifest.dsse.json").string(),
                                            "--manifest-key",
                                            (kAnchors / "manifest.pub").string(),
                                            "--allow-software-tpm",
                                            "--policy-digest",
                                            ToHex(test_support::TestPolicyDigest())};
  std::vector<std::string> args = {"--nonce", ToHex(kNonce), "--ear-key",
                                   (dir / "ear.key").string(), ev};
  args.insert(args.end(), anchors.begin(), anchors.end());
  int rc = verify::RunVerifyCli(args, out, err);
  EXPECT_EQ(rc, verify::kExitPass) << err.str();
  std::string jwt = out.str();
  ASSERT_FALSE(jwt.empty());
  jwt.pop_back();  // newline
  EXPECT_TRUE(Check(jwt, key.get()).signature_ok);
  EXPECT_NE(err.str().find("PASS"), std::string::npos);  // the report went to stderr
  // --ear-out: the JWT to a file, the report on stdout; a failed verdict still gets an EAR.
  std::ostringstream out2, err2;
  rc = verify::RunVerifyCli({"--nonce", "0011223344556677", "--ear-key", (dir / "ear.key").string(),
                             "--ear-out", (dir / "ear.jwt").string(), ev},
                            out2, err2);
  EXPECT_EQ(rc, verify::kExitFail);
  auto text = ReadFileBytes(dir / "ear.jwt");
  auto j = Check(std::string(text.begin(), text.end() - 1), key.get());
  EXPECT_TRUE(j.signature_ok);
  EXPECT_EQ(j.claims["submods"]["verify-node"]["ear.status"], "contraindicated");
  EXPECT_NE(out2.str().find("NONCE_MISMATCH"), std::string::npos);
  // A key that is not a private key: usage error, no verdict.
  std::ostringstream out3, err3;
  EXPECT_EQ(verify::RunVerifyCli({"--nonce", ToHex(kNonce), "--ear-key", ev, ev}, out3, err3),
            verify::kExitUsage);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace sovguard::attestation
