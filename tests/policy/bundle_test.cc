// Signed bundles: sign/verify with Ed25519 and ECDSA P-256, tampering, wrong key, anti-rollback
// persisted across restarts, and the last good bundle kept on every rejection.
#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <memory>

#include "base/openssl.h"
#include "policy/bundle/bundle.h"
#include "policy/cli/policy_cli.h"
#include "tests/policy/test_util.h"

namespace sovguard::policy {
namespace {

constexpr std::int64_t kNow = 1'780'000'000;

struct KeyPair {
  std::string priv, pub;
};

KeyPair Generate(bool ed25519) {
  EVP_PKEY* raw = ed25519 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                          : EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  EXPECT_NE(raw, nullptr);
  base::EvpPkeyPtr key(raw);
  auto pem = [&](bool priv) {
    base::BioPtr bio(BIO_new(BIO_s_mem()));
    if (priv) {
      PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr);
    } else {
      PEM_write_bio_PUBKEY(bio.get(), key.get());
    }
    char* data = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, static_cast<std::size_t>(n));
  };
  return {pem(true), pem(false)};
}

const KeyPair& Ed() {
  static const KeyPair k = Generate(true);
  return k;
}
const KeyPair& Ec() {
  static const KeyPair k = Generate(false);
  return k;
}

std::vector<BundleFile> Files(const std::string& country = "DE") {
  return {{"health.textproto",
           "datasets { id: \"health\" mode: ENFORCE residency { allow: \"" + country + "\" } }\n"},
          {"default.json",
           R"({"datasets": [{"id": "default", "mode": "AUDIT", "residency": {"allow": ["EEA"]},
               "defaultForUnlabelled": true}]})"}};
}

std::string Make(std::uint64_t version, const KeyPair& key, const std::string& country = "DE") {
  std::string error;
  auto b = CreateBundle(version, "test-issuer", Files(country), key.priv, &error, kNow);
  EXPECT_TRUE(b.has_value()) << error;
  return b.value_or("");
}

TEST(Bundle, SignAndVerifyBothAlgorithms) {
  for (const KeyPair* k : {&Ed(), &Ec()}) {
    const auto b = Make(7, *k);
    std::string error;
    auto v = VerifyBundle(b, {k->pub}, &error, kNow);
    ASSERT_TRUE(v.has_value()) << error;
    EXPECT_EQ(v->manifest.version, 7u);
    EXPECT_EQ(v->manifest.issuer, "test-issuer");
    EXPECT_EQ(v->manifest.created, "2026-05-28T20:26:40Z");
    EXPECT_EQ(v->manifest.algorithm, k == &Ed() ? "ed25519" : "ecdsa-p256-sha256");
    EXPECT_EQ(v->manifest.key_id, *KeyId(k->pub, &error));
    ASSERT_EQ(v->manifest.files.size(), 2u);
    ASSERT_EQ(v->policy.datasets.size(), 2u);
    EXPECT_EQ(v->policy.datasets[1].id, "health");
  }
}

TEST(Bundle, TamperingIsDetectedAnywhere) {
  const auto b = Make(3, Ed());
  for (std::size_t at : {std::size_t{0}, std::size_t{9}, std::size_t{15}, b.size() / 2,
                         b.size() - 70, b.size() - 1}) {
    std::string t = b;
    t[at] = static_cast<char>(t[at] ^ 0x20);
    std::string error;
    EXPECT_FALSE(VerifyBundle(t, {Ed().pub}, &error, kNow).has_value()) << "byte " << at;
    EXPECT_FALSE(error.empty());
  }
  std::string error;
  // Change the policy text (allow a country more) without re-signing.
  std::string t = b;
  const auto pos = t.find("allow: \\\"DE\\\"");
  ASSERT_NE(pos, std::string::npos);
  t.replace(pos + 9, 2, "US");
  EXPECT_FALSE(VerifyBundle(t, {Ed().pub}, &error, kNow));
  EXPECT_NE(error.find("signature does not verify"), std::string::npos) << error;
  EXPECT_FALSE(VerifyBundle(b.substr(0, b.size() - 1), {Ed().pub}, &error, kNow));
  EXPECT_NE(error.find("bad signature length"), std::string::npos) << error;
  EXPECT_FALSE(VerifyBundle(b + "x", {Ed().pub}, &error, kNow));
  EXPECT_NE(error.find("trailing bytes"), std::string::npos) << error;
  EXPECT_FALSE(VerifyBundle("hello", {Ed().pub}, &error, kNow));
  EXPECT_NE(error.find("bad magic"), std::string::npos) << error;
}

TEST(Bundle, WrongKeyIsRejected) {
  const auto b = Make(3, Ed());
  std::string error;
  EXPECT_FALSE(VerifyBundle(b, {Ec().pub}, &error, kNow));
  EXPECT_NE(error.find("signature does not verify with any trusted key"), std::string::npos);
  EXPECT_FALSE(VerifyBundle(b, {}, &error, kNow));
  EXPECT_NE(error.find("no trusted public key"), std::string::npos);
  // Any of several trusted keys is enough.
  EXPECT_TRUE(VerifyBundle(b, {Ec().pub, Ed().pub}, &error, kNow)) << error;
}

TEST(Bundle, RefusesToSignInvalidPolicies) {
  std::string error;
  EXPECT_FALSE(
      CreateBundle(1, "i", {{"bad.textproto", "datasets { id: \"x\" }"}}, Ed().priv, &error, kNow));
  EXPECT_NE(error.find("bad.textproto:1:1: dataset \"x\": mode must be AUDIT or ENFORCE"),
            std::string::npos)
      << error;
  EXPECT_FALSE(CreateBundle(0, "i", Files(), Ed().priv, &error, kNow));
  EXPECT_FALSE(CreateBundle(1, "i", Files(), Ed().pub, &error, kNow));
  EXPECT_NE(error.find("not a PEM private key"), std::string::npos) << error;
  const auto rsa = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), rsa, nullptr, nullptr, 0, nullptr, nullptr);
  EVP_PKEY_free(rsa);
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio.get(), &data);
  EXPECT_FALSE(
      CreateBundle(1, "i", Files(), std::string(data, static_cast<std::size_t>(n)), &error, kNow));
  EXPECT_NE(error.find("Ed25519 or ECDSA P-256"), std::string::npos) << error;
}

TEST(BundleStore, AntiRollbackPersistsAndLastGoodIsKept) {
  testing::TempDir dir;
  std::string error;
  {
    auto store = BundleStore::Open(dir.path(), {Ed().pub}, &error);
    ASSERT_TRUE(store.has_value()) << error;
    EXPECT_EQ(store->active(), nullptr);
    auto r = store->Apply(Make(5, Ed()), kNow);
    ASSERT_TRUE(r.accepted) << r.error;
    EXPECT_TRUE(r.changed);
    EXPECT_EQ(store->active_version(), 5u);
    // Same bundle again: accepted, nothing changes.
    r = store->Apply(Make(5, Ed()), kNow);
    EXPECT_TRUE(r.accepted) << r.error;
    EXPECT_FALSE(r.changed);
    // Same version, other content: rejected.
    r = store->Apply(Make(5, Ed(), "FR"), kNow);
    EXPECT_FALSE(r.accepted);
    EXPECT_NE(r.error.find("already active with different content"), std::string::npos);
    // Lower version: rollback refused, version 5 still active.
    r = store->Apply(Make(4, Ed(), "FR"), kNow);
    EXPECT_FALSE(r.accepted);
    EXPECT_EQ(r.error, "rollback refused: bundle version 4 is lower than the active version 5");
    // Wrong key and garbage: rejected, last good kept.
    EXPECT_FALSE(store->Apply(Make(9, Ec()), kNow).accepted);
    EXPECT_FALSE(store->Apply("garbage", kNow).accepted);
    ASSERT_NE(store->active(), nullptr);
    EXPECT_EQ(store->active()->manifest.version, 5u);
    EXPECT_TRUE(store->active()->policy.datasets[1].countries.contains("DE"));
    // Higher version: accepted.
    r = store->Apply(Make(6, Ed(), "FR"), kNow);
    ASSERT_TRUE(r.accepted) << r.error;
    EXPECT_TRUE(store->active()->policy.datasets[1].countries.contains("FR"));
  }
  // Restart: state and active bundle survive, the old version stays refused.
  {
    auto store = BundleStore::Open(dir.path(), {Ed().pub}, &error);
    ASSERT_TRUE(store.has_value()) << error;
    EXPECT_EQ(store->active_version(), 6u);
    ASSERT_NE(store->active(), nullptr);
    EXPECT_TRUE(store->active()->policy.datasets[1].countries.contains("FR"));
    auto r = store->Apply(Make(5, Ed()), kNow);
    EXPECT_FALSE(r.accepted);
    EXPECT_NE(r.error.find("rollback refused"), std::string::npos);
  }
  // No temporary files left behind.
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) {
    EXPECT_FALSE(e.path().string().ends_with(".tmp")) << e.path();
  }
}

// Check decides as Apply would but persists and activates nothing: a bundle the daemon cannot
// load after all never becomes the one a restart comes back to, nor raises the version floor.
TEST(BundleStore, CheckDecidesLikeApplyAndPersistsNothing) {
  testing::TempDir dir;
  std::string error;
  {
    auto store = BundleStore::Open(dir.path(), {Ed().pub}, &error);
    ASSERT_TRUE(store.has_value()) << error;
    ASSERT_TRUE(store->Apply(Make(5, Ed()), kNow).accepted);
    BundleStore::ApplyResult r;
    const auto v = store->Check(Make(7, Ed(), "FR"), &r, kNow);
    ASSERT_TRUE(v.has_value()) << r.error;
    EXPECT_TRUE(r.accepted && r.changed);
    EXPECT_EQ(r.version, 7u);
    EXPECT_TRUE(v->policy.datasets[1].countries.contains("FR"));
    EXPECT_EQ(store->active_version(), 5u);
    EXPECT_TRUE(store->active()->policy.datasets[1].countries.contains("DE"));
    EXPECT_TRUE(store->Check(Make(5, Ed()), &r, kNow).has_value());
    EXPECT_FALSE(r.changed);
    EXPECT_FALSE(store->Check(Make(4, Ed()), &r, kNow).has_value());
    EXPECT_EQ(r.error, "rollback refused: bundle version 4 is lower than the active version 5");
    EXPECT_FALSE(store->Check(Make(5, Ed(), "FR"), &r, kNow).has_value());
    EXPECT_NE(r.error.find("already active with different content"), std::string::npos);
    EXPECT_FALSE(store->Check(Make(9, Ec()), &r, kNow).has_value());
  }
  auto store = BundleStore::Open(dir.path(), {Ed().pub}, &error);
  ASSERT_TRUE(store.has_value()) << error;
  EXPECT_EQ(store->active_version(), 5u);
  // Version 6 is still acceptable: the checked version 7 raised no floor.
  EXPECT_TRUE(store->Apply(Make(6, Ed(), "FR"), kNow).accepted);
}

TEST(BundleStore, CorruptStateIsAnErrorNotAReset) {
  testing::TempDir dir;
  std::string error;
  {
    auto store = BundleStore::Open(dir.path(), {Ed().pub}, &error);
    ASSERT_TRUE(store && store->Apply(Make(2, Ed()), kNow).accepted);
  }
  dir.Write("state", "sovguard-bundle-state-1\nversion x\n");
  EXPECT_FALSE(BundleStore::Open(dir.path(), {Ed().pub}, &error));
  EXPECT_NE(error.find("state: corrupt"), std::string::npos) << error;
  std::filesystem::remove(dir.path() / "state");
  EXPECT_FALSE(BundleStore::Open(dir.path(), {Ed().pub}, &error));
  EXPECT_NE(error.find("refusing to reset the anti-rollback version"), std::string::npos) << error;
  // A key no longer trusted: the persisted bundle does not load.
  testing::TempDir dir2;
  {
    auto store = BundleStore::Open(dir2.path(), {Ed().pub}, &error);
    ASSERT_TRUE(store && store->Apply(Make(2, Ed()), kNow).accepted);
  }
  EXPECT_FALSE(BundleStore::Open(dir2.path(), {Ec().pub}, &error));
  EXPECT_NE(error.find("signature does not verify"), std::string::npos) << error;
}

TEST(BundleCli, BundleAndVerify) {
  testing::TempDir dir;
  const auto key = dir.Write("key.pem", Ec().priv);
  const auto pub = dir.Write("pub.pem", Ec().pub);
  const auto other = dir.Write("other.pem", Ed().pub);
  const auto policy = dir.Write("p.textproto", Files()[0].content);
  const auto out = dir.path() / "b.sgpb";
  std::ostringstream o, e;
  EXPECT_EQ(RunPolicyCli({"policy", "bundle", "--key", key, "--version", "3", "--issuer", "ops",
                          policy, "-o", out},
                         o, e),
            0)
      << e.str();
  EXPECT_EQ(RunPolicyCli({"policy", "verify", out, "--pub", pub}, o, e), 0) << e.str();
  EXPECT_NE(o.str().find("version: 3\nissuer: ops\n"), std::string::npos) << o.str();
  EXPECT_EQ(RunPolicyCli({"policy", "verify", out, "--pub", other}, o, e), 1);
  EXPECT_EQ(RunPolicyCli({"policy", "bundle", "--key", key, policy, "-o", out}, o, e), 2);
  EXPECT_EQ(
      RunPolicyCli({"policy", "bundle", "--key", key, "--version", "x", policy, "-o", out}, o, e),
      2);
  EXPECT_EQ(RunPolicyCli({"policy", "verify", out}, o, e), 2);
}

}  // namespace
}  // namespace sovguard::policy
