// The verifier's performance layer (attestation/verify/fast_paths.h) against its plain OpenSSL
// path: the same verdict, check for check, on the committed real evidence and on every
// single-field corruption of it; the hand-written P-256 PEM equal to OpenSSL's encoder on many
// keys (coordinates with leading zero bytes included) and empty for every other key; the cached
// AK derivation equal to tpm2-tss's. The replay's SHA-256 lanes are held to OpenSSL by
// tests/attestation/sha256_chain_test.cc.
#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>

#include <functional>
#include <map>

#include "attestation/common/sha256_chain.h"
#include "attestation/tpm/public_key.h"
#include "attestation/verify/fast_paths.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

const std::filesystem::path kCorpus =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/corpus/evidence";
const std::filesystem::path kData =
    std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/verify/data";

std::string Text(const std::filesystem::path& p) {
  const auto b = ReadFileBytes(p);
  return {b.begin(), b.end()};
}

verify::Options Anchored(const std::string& ak) {
  verify::Options o;
  o.nonce = Bytes{'a', 'u', 'd', 'i', 't', 'o', 'r', '-', 'n', 'o', 'n', 'c',
                  'e', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'};
  o.ak_pub_pem = Text(kData / "anchors" / ("ak-" + ak + ".pem"));
  o.manifest_envelope =
      std::make_shared<const std::string>(Text(kData / "anchors/manifest.dsse.json"));
  o.manifest_key_pem = Text(kData / "anchors/manifest.pub");
  o.ek_ca_dir = kData / "ek-ca";
  o.waivers = {"software-tpm"};
  o.policy_digest = test_support::TestPolicyDigest();
  o.observe = true;
  return o;
}

// Restores the fast paths when a test ends, whatever it asserted.
struct PlainPaths {
  PlainPaths() { verify::SetFastPaths(false); }
  ~PlainPaths() { verify::SetFastPaths(true); }
};

// The verdict as an auditor reads it (JSON), or the input error it raised.
std::string Verdict(const v1::Evidence& ev, const verify::Options& o) {
  try {
    return verify::RenderJson(verify::Verify(ev, o));
  } catch (const verify::InputError& e) {
    return std::string("input error: ") + e.what();
  }
}

// Fast twice (the second from what the first remembered), then plain: all three equal.
void ExpectSameVerdict(const v1::Evidence& ev, const verify::Options& o, const std::string& what) {
  ASSERT_TRUE(verify::FastPathsEnabled());
  const std::string fast = Verdict(ev, o), fast_again = Verdict(ev, o);
  std::string plain;
  {
    PlainPaths p;
    EXPECT_EQ(Sha256ChainActivePath(), Sha256ChainPath::kOpenSsl);
    plain = Verdict(ev, o);
  }
  EXPECT_EQ(fast, plain) << what;
  EXPECT_EQ(fast_again, plain) << what;
}

void Flip(std::string& s, size_t at) {
  if (!s.empty()) s[at % s.size()] = static_cast<char>(s[at % s.size()] ^ 0x01);
}

// Every single-field corruption an attacker could send, each from genuine evidence.
std::map<std::string, std::function<void(v1::Evidence&)>> Corruptions() {
  std::map<std::string, std::function<void(v1::Evidence&)>> m;
  m["genuine"] = [](v1::Evidence&) {};
  for (size_t at : {size_t{0}, size_t{40}, size_t{1000}, size_t{SIZE_MAX / 2}}) {
    const std::string n = std::to_string(at);
    m["attest@" + n] = [at](v1::Evidence& e) { Flip(*e.mutable_quote()->mutable_attest(), at); };
    m["signature@" + n] = [at](v1::Evidence& e) {
      Flip(*e.mutable_quote()->mutable_signature(), at);
    };
    m["cel@" + n] = [at](v1::Evidence& e) { Flip(*e.mutable_logs()->mutable_cel(), at); };
    m["snapshot@" + n] = [at](v1::Evidence& e) { Flip(*e.mutable_snapshot_bytes(), at); };
    m["tpm2b_public@" + n] = [at](v1::Evidence& e) {
      Flip(*e.mutable_ak()->mutable_tpm2b_public(), at);
    };
    m["public_pem@" + n] = [at](v1::Evidence& e) {
      Flip(*e.mutable_ak()->mutable_public_pem(), 30 + at % 60);
    };
    m["ek_cert@" + n] = [at](v1::Evidence& e) {
      for (auto& c : *e.mutable_ek_certificates()) Flip(*c.mutable_der(), at);
    };
  }
  m["cel-truncated"] = [](v1::Evidence& e) {
    e.mutable_logs()->mutable_cel()->resize(e.logs().cel().size() / 2);
  };
  m["name"] = [](v1::Evidence& e) { Flip(*e.mutable_ak()->mutable_name(), 5); };
  m["nonce"] = [](v1::Evidence& e) { Flip(*e.mutable_nonce(), 0); };
  // The same key in other PEM text: the fast text comparison misses, the keys are compared.
  m["public_pem-crlf"] = [](v1::Evidence& e) {
    std::string crlf;
    for (char c : e.ak().public_pem()) crlf += c == '\n' ? std::string("\r\n") : std::string(1, c);
    e.mutable_ak()->set_public_pem(crlf);
  };
  m["public_pem-empty"] = [](v1::Evidence& e) { e.mutable_ak()->clear_public_pem(); };
  m["no-ek-certs"] = [](v1::Evidence& e) { e.clear_ek_certificates(); };
  return m;
}

TEST(FastPaths, SameVerdictAsThePlainPathsOnRealEvidenceAndEveryCorruption) {
  for (const auto& [file, ak] : {std::pair{"genuine-ecc.json", "ecc"},
                                 {"genuine-rsa.pb", "rsa"},
                                 {"genuine-strongest.pb", "ecc"}}) {
    const auto genuine = verify::ParseEvidence(ReadFileBytes(kCorpus / file));
    for (const auto& [name, corrupt] : Corruptions()) {
      auto ev = genuine;
      corrupt(ev);
      ExpectSameVerdict(ev, Anchored(ak), std::string(file) + " " + name);
      // Without the enrolled AK: the carried key signs, the fast PEM comparison decides more.
      auto carried = Anchored(ak);
      carried.ak_pub_pem.reset();
      carried.waivers.push_back("root-of-trust");
      ExpectSameVerdict(ev, carried, std::string(file) + " " + name + " (carried AK)");
    }
  }
  // Every committed evidence file, parsed or refused, without anchors.
  for (const auto& entry : std::filesystem::directory_iterator(kCorpus)) {
    try {
      const auto ev = verify::ParseEvidence(ReadFileBytes(entry.path()));
      ExpectSameVerdict(ev, verify::Options{}, entry.path().filename().string());
    } catch (const verify::InputError&) {
    }
  }
}

// With remembered replays, the checks decide the same; only the replay's detail may say what was
// remembered. A log that is not an extension of the remembered one replays in full.
TEST(FastPaths, ReplayCacheDecidesAsAFullReplay) {
  const auto genuine = verify::ParseEvidence(ReadFileBytes(kCorpus / "genuine-ecc.json"));
  verify::ReplayCache cache;
  auto cached = Anchored("ecc");
  cached.replay_cache = &cache;
  for (const auto& [name, corrupt] : Corruptions()) {
    auto ev = genuine;
    corrupt(ev);
    const auto with_cache = verify::Verify(ev, cached);
    const auto full = verify::Verify(ev, Anchored("ecc"));
    ASSERT_EQ(with_cache.checks.size(), full.checks.size()) << name;
    for (size_t i = 0; i < full.checks.size(); ++i) {
      EXPECT_EQ(with_cache.checks[i].name, full.checks[i].name) << name;
      EXPECT_EQ(with_cache.checks[i].status, full.checks[i].status)
          << name << " " << full.checks[i].name;
      EXPECT_EQ(with_cache.checks[i].reason, full.checks[i].reason)
          << name << " " << full.checks[i].name;
    }
  }
  EXPECT_GT(cache.stats().hits, 0u);
  // With the fast paths off the cache is neither read nor written.
  const auto before = cache.stats();
  {
    PlainPaths p;
    EXPECT_TRUE(verify::Verify(genuine, cached).passed());
  }
  EXPECT_EQ(cache.stats().hits, before.hits);
  EXPECT_EQ(cache.stats().misses, before.misses);
}

bool LeadingZero(EVP_PKEY* key, const char* param) {
  BIGNUM* v = nullptr;
  if (EVP_PKEY_get_bn_param(key, param, &v) != 1) return false;
  const bool zero = BN_num_bytes(v) < 32;
  BN_free(v);
  return zero;
}

TEST(FastPaths, P256PemIsOpenSslsEncodingAndEmptyForOtherKeys) {
  // Random P-256 keys until both a coordinate x and a coordinate y with a leading zero byte
  // were seen (each about 1 in 256 keys), bounded.
  bool x0 = false, y0 = false;
  size_t keys = 0;
  for (; keys < 20000 && !(x0 && y0 && keys >= 500); ++keys) {
    base::EvpPkeyPtr k(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    ASSERT_TRUE(k);
    ASSERT_EQ(verify::detail::P256PemFast(k.get()), tpm::PublicKeyToPem(k.get())) << keys;
    x0 = x0 || LeadingZero(k.get(), OSSL_PKEY_PARAM_EC_PUB_X);
    y0 = y0 || LeadingZero(k.get(), OSSL_PKEY_PARAM_EC_PUB_Y);
  }
  EXPECT_TRUE(x0 && y0) << keys << " keys";
  // Other keys, a 256-bit curve that is not P-256 among them.
  base::EvpPkeyPtr others[] = {
      base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "secp256k1")),
      base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384")),
      base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")),
      base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}))};
  for (auto& k : others) {
    ASSERT_TRUE(k);
    EXPECT_EQ(verify::detail::P256PemFast(k.get()), "");
  }
}

// The AKs of the committed evidence (ECC P-256 and RSA): the cached derivation is tpm2-tss's.
TEST(FastPaths, DerivedAkIsThePlainDerivation) {
  for (const char* file : {"genuine-ecc.json", "genuine-rsa.pb"}) {
    const auto ev = verify::ParseEvidence(ReadFileBytes(kCorpus / file));
    const std::string& pub = ev.ak().tpm2b_public();
    const auto span = std::span(reinterpret_cast<const uint8_t*>(pub.data()), pub.size());
    const auto plain_key = tpm::PublicAreaToPkey(span);
    const auto plain_name = tpm::PublicAreaName(span);
    for (int i = 0; i < 2; ++i) {  // derived, then remembered
      const auto d = verify::detail::DeriveAk(pub);
      EXPECT_EQ(EVP_PKEY_eq(d.key.get(), plain_key.get()), 1) << file;
      EXPECT_EQ(d.name, std::string(plain_name.begin(), plain_name.end())) << file;
      if (!d.pem.empty()) {
        EXPECT_EQ(d.pem, tpm::PublicKeyToPem(plain_key.get())) << file;
      }
      EXPECT_EQ(d.pem.empty(), EVP_PKEY_get_base_id(plain_key.get()) != EVP_PKEY_EC) << file;
    }
  }
}

}  // namespace
}  // namespace sovguard::attestation
