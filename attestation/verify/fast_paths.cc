#include "attestation/verify/fast_paths.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>

#include "attestation/common/sha256_chain.h"
#include "attestation/tpm/public_key.h"
#include "attestation/verify/checks.h"

namespace sovguard::attestation::verify {
namespace {
std::atomic<bool> g_fast{true};
}  // namespace

void SetFastPaths(bool enabled) {
  g_fast = enabled;
  Sha256ChainLimitPath(enabled ? Sha256ChainPath::kShaExtensionsAvx512 : Sha256ChainPath::kOpenSsl);
}

bool FastPathsEnabled() {
  return g_fast;
}

namespace detail {
namespace {

// DeriveAk's results per exact ak.tpm2b_public bytes: building the EVP_PKEY (EC group, point
// check) costs more than the rest of the AK checks. Bounded (oldest out); only complete
// derivations are kept; thread-safe (fleet mode).
class AkCache {
 public:
  static constexpr size_t kMaxEntries = 256;
  bool Get(const std::string& pub, EvpPkeyPtr& key, std::string& name, std::string& pem) {
    std::lock_guard lock(mu_);
    auto it = map_.find(pub);
    if (it == map_.end() || EVP_PKEY_up_ref(it->second.key.get()) != 1) return false;
    key.reset(it->second.key.get());
    name = it->second.name;
    pem = it->second.pem;
    return true;
  }
  void Put(const std::string& pub, EVP_PKEY* key, const std::string& name, const std::string& pem) {
    std::lock_guard lock(mu_);
    if (map_.count(pub) || EVP_PKEY_up_ref(key) != 1) return;
    EvpPkeyPtr ref(key);
    if (order_.size() >= kMaxEntries) {
      map_.erase(order_.front());
      order_.pop_front();
    }
    map_.emplace(pub, Entry{std::move(ref), name, pem});
    order_.push_back(pub);
  }

 private:
  struct Entry {
    EvpPkeyPtr key;
    std::string name, pem;
  };
  std::mutex mu_;
  std::map<std::string, Entry> map_;
  std::deque<std::string> order_;
};
AkCache& TheAkCache() {
  static AkCache cache;
  return cache;
}

}  // namespace

std::string P256PemFast(EVP_PKEY* key) {
  static constexpr uint8_t kPrefix[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                        0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00};
  char group[32] = {};
  size_t glen = 0;
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &glen) !=
          1 ||
      std::string_view(group, glen) != SN_X9_62_prime256v1)
    return {};
  uint8_t der[sizeof kPrefix + 65];
  std::memcpy(der, kPrefix, sizeof kPrefix);
  size_t plen = 0;
  if (EVP_PKEY_get_octet_string_param(key, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, der + sizeof kPrefix,
                                      65, &plen) != 1 ||
      plen != 65 || der[sizeof kPrefix] != 0x04)
    return {};
  char b64[4 * ((sizeof der + 2) / 3) + 1];
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(b64), der, sizeof der);
  std::string pem = "-----BEGIN PUBLIC KEY-----\n";
  for (int i = 0; i < n; i += 64) {
    pem.append(b64 + i, static_cast<size_t>(std::min(64, n - i)));
    pem += '\n';
  }
  pem += "-----END PUBLIC KEY-----\n";
  return pem;
}

DerivedAk DeriveAk(const std::string& tpm2b_public) {
  DerivedAk d;
  if (FastPathsEnabled() && TheAkCache().Get(tpm2b_public, d.key, d.name, d.pem)) return d;
  d.key = tpm::PublicAreaToPkey(U8(tpm2b_public));
  d.name = Str(tpm::PublicAreaName(U8(tpm2b_public)));
  if (!FastPathsEnabled()) return d;
  d.pem = P256PemFast(d.key.get());
  TheAkCache().Put(tpm2b_public, d.key.get(), d.name, d.pem);
  return d;
}

// Kept per exact PEM text (the last few; thread-safe): parsing PEM (OpenSSL 3 decoders) costs
// more than the other AK checks, and an auditor verifies the same nodes again and again.
EvpPkeyPtr EnrolledKey(const std::string& pem) {
  static std::mutex mu;
  static std::deque<std::pair<std::string, EvpPkeyPtr>> keys;  // newest first
  constexpr size_t kMax = 64;
  if (!FastPathsEnabled()) return LoadPem(pem);
  {
    std::lock_guard lock(mu);
    for (auto& [text, key] : keys)
      if (text == pem && EVP_PKEY_up_ref(key.get()) == 1) return EvpPkeyPtr(key.get());
  }
  EvpPkeyPtr key = LoadPem(pem);
  if (!key || EVP_PKEY_up_ref(key.get()) != 1) return key;
  std::lock_guard lock(mu);
  keys.emplace_front(pem, EvpPkeyPtr(key.get()));
  if (keys.size() > kMax) keys.pop_back();
  return key;
}

}  // namespace detail

// ReplayCache (verifier.h): a remembered replay is only used for a byte-identical prefix.
namespace {
bool HasPrefix(std::span<const uint8_t> data, std::span<const uint8_t> prefix) {
  return prefix.size() <= data.size() &&
         (prefix.empty() || std::memcmp(data.data(), prefix.data(), prefix.size()) == 0);
}
}  // namespace

ReplayCache::Hit ReplayCache::Lookup(const std::string& key, std::span<const uint8_t> cel) {
  std::lock_guard lock(mu_);
  for (auto it = lru_.begin(); it != lru_.end(); ++it) {
    if (it->key != key) continue;
    if (!HasPrefix(cel, it->cel)) break;
    lru_.splice(lru_.begin(), lru_, it);
    ++hits_;
    const Entry& e = lru_.front();
    return {e.cel.size(), e.records, e.pcr, e.version};
  }
  ++misses_;
  return {};
}

void ReplayCache::Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
                        const Sha256Digest& pcr) {
  Store(key, cel, records, pcr, Hit{});
}

void ReplayCache::Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
                        const Sha256Digest& pcr, const Hit& from) {
  if (cel.size() > max_bytes_) return;
  std::lock_guard lock(mu_);
  auto it = std::find_if(lru_.begin(), lru_.end(), [&](const Entry& e) { return e.key == key; });
  if (it == lru_.end()) {
    lru_.push_front(Entry{key, {}, 0, {}});
  } else {
    lru_.splice(lru_.begin(), lru_, it);
  }
  Entry& e = lru_.front();
  bytes_ -= e.cel.size();
  // The common case extends what is remembered: append the new records only. The entry the
  // replay started from, unchanged since (same version), was compared by Lookup already.
  const bool known_prefix = from.version != 0 && from.version == e.version &&
                            from.bytes == e.cel.size() && cel.size() >= e.cel.size();
  if (known_prefix || HasPrefix(cel, e.cel))
    e.cel.insert(e.cel.end(), cel.begin() + static_cast<std::ptrdiff_t>(e.cel.size()), cel.end());
  else
    e.cel.assign(cel.begin(), cel.end());
  e.records = records;
  e.pcr = pcr;
  e.version = next_version_++;
  bytes_ += e.cel.size();
  while (bytes_ > max_bytes_ && lru_.size() > 1) {
    bytes_ -= lru_.back().cel.size();
    lru_.pop_back();
  }
}

ReplayCache::Stats ReplayCache::stats() const {
  std::lock_guard lock(mu_);
  return {hits_, misses_, lru_.size(), bytes_};
}

}  // namespace sovguard::attestation::verify
