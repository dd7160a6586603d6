// SHA-256 through OpenSSL: one-call, whole file, and incremental.
#pragma once

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string_view>

#include "base/bytes.h"
#include "base/openssl.h"

namespace sovguard::base {

using Sha256Digest = std::array<uint8_t, 32>;

// OpenSSL's SHA-256, fetched once (EVP_sha256() looks the implementation up on every init).
const EVP_MD* Sha256Md();

// Throws base::Error if OpenSSL fails.
Sha256Digest Sha256(std::span<const uint8_t> data);
inline Sha256Digest Sha256(std::string_view s) {
  return Sha256(AsBytes(s));
}
// Streams the file through SHA-256 (binaries can be large); throws base::Error naming the path.
Sha256Digest Sha256File(const std::filesystem::path& path);

// Incremental SHA-256 for data hashed a piece at a time. Throws base::Error if OpenSSL fails.
class Sha256Hasher {
 public:
  Sha256Hasher();
  void Update(const void* data, std::size_t size);
  void Update(std::span<const uint8_t> data) { Update(data.data(), data.size()); }
  // The digest of everything so far; the hasher starts over afterwards.
  Sha256Digest Final();

 private:
  EvpMdCtxPtr ctx_;
};

}  // namespace sovguard::base
