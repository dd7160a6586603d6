#include "policy/bundle/bundle.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "base/error.h"
#include "base/file.h"
#include "base/hex.h"
#include "base/openssl.h"
#include "base/sha256.h"
#include "base/time.h"
#include "policy/compile/compile.h"

namespace sovguard::policy {
namespace {

constexpr char kMagic[8] = {'S', 'G', 'B', 'U', 'N', 'D', 'L', 'E'};
constexpr std::uint32_t kFormatVersion = 1;
constexpr std::uint32_t kMaxManifest = 64u << 20;
constexpr std::uint32_t kMaxSignature = 512;

using Pkey = base::EvpPkeyPtr;

std::string OpensslError() {
  const unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

Pkey ReadKey(std::string_view pem, bool priv) {
  base::BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) return nullptr;
  return Pkey(priv ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                   : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
}

// "ed25519", "ecdsa-p256-sha256", or "" for anything else.
std::string Algorithm(EVP_PKEY* key) {
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_ED25519) return "ed25519";
  if (EVP_PKEY_get_base_id(key) == EVP_PKEY_EC) {
    char group[64] = {};
    std::size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                       &len) == 1 &&
        std::string_view(group, len) == "prime256v1") {
      return "ecdsa-p256-sha256";
    }
  }
  return "";
}

std::optional<std::string> SpkiId(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int n = i2d_PUBKEY(key, &der);
  if (n <= 0) return std::nullopt;
  const auto d = base::Sha256(std::span(der, static_cast<std::size_t>(n)));
  OPENSSL_free(der);
  return base::ToHex(d);
}

const EVP_MD* DigestFor(const std::string& algorithm) {
  return algorithm == "ed25519" ? nullptr : EVP_sha256();
}

void Put32(std::string& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint32_t Get32(std::string_view b, std::size_t at) {
  std::uint32_t v = 0;
  for (std::size_t i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(b[at + i]);
  return v;
}

bool ValidFileName(const std::string& n) {
  return !n.empty() && n.size() <= 255 && n.find('/') == std::string::npos && n != "." &&
         n != ".." && n.find('\0') == std::string::npos;
}

// base::WriteFileAtomic in this file's convention: false and *error set instead of a throw.
bool WriteAtomically(const std::filesystem::path& path, std::string_view bytes,
                     std::string* error) {
  try {
    base::WriteFileAtomic(path, bytes);
    return true;
  } catch (const base::Error& e) {
    *error = e.what();
    return false;
  }
}

}  // namespace

std::optional<std::string> KeyId(std::string_view pem, std::string* error) {
  Pkey key = ReadKey(pem, false);
  if (!key) {
    ERR_clear_error();
    key = ReadKey(pem, true);
  }
  if (!key) {
    *error = "not a PEM public or private key: " + OpensslError();
    return std::nullopt;
  }
  return SpkiId(key.get());
}

std::optional<std::string> CreateBundle(std::uint64_t version, std::string issuer,
                                        std::vector<BundleFile> files,
                                        std::string_view private_key_pem, std::string* error,
                                        std::int64_t now) {
  Pkey key = ReadKey(private_key_pem, true);
  if (!key) {
    *error = "signing key is not a PEM private key: " + OpensslError();
    return std::nullopt;
  }
  const std::string algorithm = Algorithm(key.get());
  if (algorithm.empty()) {
    *error = "signing key must be Ed25519 or ECDSA P-256";
    return std::nullopt;
  }
  if (version == 0) {
    *error = "bundle version must be at least 1";
    return std::nullopt;
  }
  if (files.empty()) {
    *error = "a bundle needs at least one policy file";
    return std::nullopt;
  }
  std::set<std::string> names;
  std::vector<std::pair<std::string, std::string>> buffers;
  for (const auto& f : files) {
    if (!ValidFileName(f.name) || !names.insert(f.name).second) {
      *error = "bundle file name \"" + f.name + "\" is empty, has a '/' or is given twice";
      return std::nullopt;
    }
    buffers.emplace_back(f.name, f.content);
  }
  auto loaded = LoadPolicyBuffers(buffers, now);
  if (!loaded.ok()) {
    *error = "refusing to sign invalid policies:";
    for (const auto& d : loaded.diagnostics) *error += "\n" + d.ToString();
    return std::nullopt;
  }
  nlohmann::json manifest;
  manifest["format"] = "sovguard-policy-bundle";
  manifest["version"] = version;
  manifest["issuer"] = std::move(issuer);
  manifest["created"] = base::FormatRfc3339(now);
  manifest["algorithm"] = algorithm;
  manifest["key_id"] = *SpkiId(key.get());
  manifest["files"] = nlohmann::json::array();
  for (const auto& f : files) {
    const auto d = base::Sha256(f.content);
    manifest["files"].push_back(
        {{"name", f.name}, {"sha256", base::ToHex(d)}, {"content", f.content}});
  }
  std::string body;
  try {
    body = manifest.dump(2);
  } catch (const nlohmann::json::exception& e) {
    *error = std::string("policy files must be UTF-8 text: ") + e.what();
    return std::nullopt;
  }
  std::string out(kMagic, sizeof kMagic);
  Put32(out, kFormatVersion);
  Put32(out, static_cast<std::uint32_t>(body.size()));
  out += body;
  base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  std::size_t siglen = 0;
  if (!ctx ||
      EVP_DigestSignInit(ctx.get(), nullptr, DigestFor(algorithm), nullptr, key.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &siglen,
                     reinterpret_cast<const unsigned char*>(out.data()), out.size()) != 1) {
    *error = "signing failed: " + OpensslError();
    return std::nullopt;
  }
  std::string sig(siglen, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &siglen,
                     reinterpret_cast<const unsigned char*>(out.data()), out.size()) != 1) {
    *error = "signing failed: " + OpensslError();
    return std::nullopt;
  }
  sig.resize(siglen);
  Put32(out, static_cast<std::uint32_t>(sig.size()));
  out += sig;
  return out;
}

std::optional<VerifiedBundle> VerifyBundle(std::string_view b,
                                           const std::vector<std::string>& trusted,
                                           std::string* error, std::int64_t now) {
  auto fail = [&](std::string why) -> std::optional<VerifiedBundle> {
    *error = std::move(why);
    return std::nullopt;
  };
  if (b.size() < 16 || std::memcmp(b.data(), kMagic, sizeof kMagic) != 0) {
    return fail("not a sovguard policy bundle (bad magic, expected \"SGBUNDLE\")");
  }
  if (Get32(b, 8) != kFormatVersion) {
    return fail("unsupported bundle format version " + std::to_string(Get32(b, 8)) +
                " (this build reads 1)");
  }
  const std::uint32_t mlen = Get32(b, 12);
  if (mlen > kMaxManifest || b.size() < 16ull + mlen + 4) {
    return fail("truncated bundle: manifest length " + std::to_string(mlen) + " exceeds the " +
                std::to_string(b.size()) + "-byte file");
  }
  const std::size_t signed_len = 16 + mlen;
  const std::uint32_t slen = Get32(b, signed_len);
  if (slen == 0 || slen > kMaxSignature || b.size() != signed_len + 4 + slen) {
    return fail("bad signature length " + std::to_string(slen) + " for a " +
                std::to_string(b.size()) + "-byte bundle (truncated or trailing bytes)");
  }
  if (trusted.empty()) return fail("no trusted public key configured");
  const auto* sig = reinterpret_cast<const unsigned char*>(b.data() + signed_len + 4);
  std::string signer_id, signer_alg;
  for (const auto& pem : trusted) {
    Pkey key = ReadKey(pem, false);
    if (!key) {
      return fail("trusted key is not a PEM public key: " + OpensslError());
    }
    const std::string alg = Algorithm(key.get());
    if (alg.empty()) return fail("trusted key must be Ed25519 or ECDSA P-256");
    base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
    if (ctx && EVP_DigestVerifyInit(ctx.get(), nullptr, DigestFor(alg), nullptr, key.get()) == 1 &&
        EVP_DigestVerify(ctx.get(), sig, slen, reinterpret_cast<const unsigned char*>(b.data()),
                         signed_len) == 1) {
      signer_id = *SpkiId(key.get());
      signer_alg = alg;
      break;
    }
    ERR_clear_error();
  }
  if (signer_id.empty()) {
    return fail(
        "signature does not verify with any trusted key (tampered, or signed by another "
        "key)");
  }
  VerifiedBundle out;
  out.sha256 = base::Sha256(b);
  auto& m = out.manifest;
  try {
    const auto j = nlohmann::json::parse(b.substr(16, mlen));
    if (j.value("format", "") != "sovguard-policy-bundle") {
      return fail("manifest: format must be \"sovguard-policy-bundle\"");
    }
    m.version = j.at("version").get<std::uint64_t>();
    m.issuer = j.at("issuer").get<std::string>();
    m.created = j.at("created").get<std::string>();
    m.algorithm = j.at("algorithm").get<std::string>();
    m.key_id = j.at("key_id").get<std::string>();
    for (const auto& f : j.at("files")) {
      BundleFile bf{f.at("name").get<std::string>(), f.at("content").get<std::string>()};
      const auto d = base::Sha256(bf.content);
      if (f.at("sha256").get<std::string>() != base::ToHex(d)) {
        return fail("manifest: sha256 of file \"" + bf.name + "\" does not match its content");
      }
      m.files.push_back(std::move(bf));
    }
  } catch (const nlohmann::json::exception& e) {
    return fail(std::string("manifest: ") + e.what());
  }
  if (m.key_id != signer_id || m.algorithm != signer_alg) {
    return fail("manifest names key " + m.key_id + " (" + m.algorithm + ") but was signed by " +
                signer_id + " (" + signer_alg + ")");
  }
  if (m.version == 0) return fail("manifest: version must be at least 1");
  if (!ParseRfc3339(m.created)) return fail("manifest: created is not an RFC 3339 time");
  if (m.files.empty()) return fail("manifest: no policy files");
  std::vector<std::pair<std::string, std::string>> buffers;
  std::set<std::string> names;
  for (const auto& f : m.files) {
    if (!ValidFileName(f.name) || !names.insert(f.name).second) {
      return fail("manifest: bad or duplicate file name \"" + f.name + "\"");
    }
    buffers.emplace_back(f.name, f.content);
  }
  auto loaded = LoadPolicyBuffers(buffers, now);
  if (!loaded.ok()) {
    std::string why = "bundle policies are invalid:";
    for (const auto& d : loaded.diagnostics) why += "\n" + d.ToString();
    return fail(why);
  }
  out.policy = std::move(*loaded.policy);
  return out;
}

std::optional<BundleStore> BundleStore::Open(const std::filesystem::path& state_dir,
                                             std::vector<std::string> trusted, std::string* error) {
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    *error = state_dir.string() + ": " + ec.message();
    return std::nullopt;
  }
  BundleStore s;
  s.dir_ = state_dir;
  s.trusted_ = std::move(trusted);
  const auto state_path = state_dir / "state";
  if (!std::filesystem::exists(state_path, ec)) {
    if (std::filesystem::exists(state_dir / "active.bundle", ec)) {
      *error = state_path.string() +
               ": missing while active.bundle exists; refusing to reset "
               "the anti-rollback version";
      return std::nullopt;
    }
    return s;  // first start: no bundle yet
  }
  std::string err;
  const auto text = base::TryReadFileText(state_path, &err);
  if (!text) {
    *error = state_path.string() + ": " + err;
    return std::nullopt;
  }
  std::istringstream in(*text);
  std::string magic, key_v, key_h, hash;
  std::uint64_t version = 0;
  if (!(in >> magic >> key_v >> version >> key_h >> hash) || magic != "sovguard-bundle-state-1" ||
      key_v != "version" || key_h != "sha256" || hash.size() != 64) {
    *error = state_path.string() +
             ": corrupt (expected \"sovguard-bundle-state-1\\nversion N\\nsha256 HEX\")";
    return std::nullopt;
  }
  s.version_ = version;
  const auto bundle = base::TryReadFileText(state_dir / "active.bundle", &err);
  if (!bundle) {
    *error = (state_dir / "active.bundle").string() + ": " + err;
    return std::nullopt;
  }
  // Re-verify signature, hash and policies at start. Time 0: a validity window that ended since
  // the bundle was accepted does not make the last good bundle unusable (the kernel enforces
  // the window itself).
  auto v = VerifyBundle(*bundle, s.trusted_, &err, 0);
  if (!v) {
    *error = (state_dir / "active.bundle").string() + ": " + err;
    return std::nullopt;
  }
  if (base::ToHex(v->sha256) != hash || v->manifest.version != version) {
    *error = (state_dir / "active.bundle").string() + ": does not match the state file";
    return std::nullopt;
  }
  s.active_ = std::move(v);
  s.active_bytes_ = *bundle;
  return s;
}

std::optional<VerifiedBundle> BundleStore::Check(std::string_view bundle, ApplyResult* result,
                                                 std::int64_t now) const {
  ApplyResult& r = *result;
  r = ApplyResult{};
  r.version = version_;
  std::string err;
  auto v = VerifyBundle(bundle, trusted_, &err, now);
  if (!v) {
    r.error = err;
    return std::nullopt;
  }
  const auto incoming = v->manifest.version;
  if (incoming < version_) {
    r.error = "rollback refused: bundle version " + std::to_string(incoming) +
              " is lower than the active version " + std::to_string(version_);
    return std::nullopt;
  }
  if (incoming == version_ && active_ && active_->sha256 != v->sha256) {
    r.error = "bundle version " + std::to_string(incoming) +
              " is already active with different content; issue a higher version";
    return std::nullopt;
  }
  r.accepted = true;
  r.changed = !(active_ && active_->sha256 == v->sha256);
  r.version = incoming;
  return v;
}

BundleStore::ApplyResult BundleStore::Apply(std::string_view bundle, std::int64_t now) {
  ApplyResult r;
  auto v = Check(bundle, &r, now);
  if (!v || !r.changed) return r;
  const auto incoming = v->manifest.version;
  r.accepted = false;
  r.changed = false;
  std::string err;
  if (!WriteAtomically(dir_ / "active.bundle", bundle, &err)) {
    r.error = "cannot persist the bundle: " + err;
    return r;
  }
  const std::string state = "sovguard-bundle-state-1\nversion " + std::to_string(incoming) +
                            "\nsha256 " + base::ToHex(v->sha256) + "\n";
  if (!WriteAtomically(dir_ / "state", state, &err)) {
    // The bundle file is ahead of the state: put the previous one back so both agree again.
    std::string restore_error;
    const bool restored =
        active_ ? WriteAtomically(dir_ / "active.bundle", active_bytes_, &restore_error)
                : std::filesystem::remove(dir_ / "active.bundle");
    r.error = "cannot persist the anti-rollback state: " + err +
              (restored ? "" : "; restoring the previous bundle failed too: " + restore_error);
    return r;
  }
  active_ = std::move(v);
  active_bytes_ = std::string(bundle);
  version_ = incoming;
  r.accepted = true;
  r.changed = true;
  r.version = incoming;
  return r;
}

}  // namespace sovguard::policy
