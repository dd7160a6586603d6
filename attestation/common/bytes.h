// Byte helpers shared by the node side and (later) the verifier: hex, SHA-256, big-endian
// integers, whole-file I/O. Kept free of TPM headers so the verifier can link them alone.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sovguard::attestation {

using Bytes = std::vector<uint8_t>;
using Sha256Digest = std::array<uint8_t, 32>;

// Every failure in this library is an AttestationError with a message that says what was
// expected; TPM failures carry the decoded TSS2 return code (see tpm/tpm.h).
class AttestationError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string ToHex(std::span<const uint8_t> bytes);
// Accepts upper or lower case; throws AttestationError naming `what` on odd length or bad digit.
Bytes FromHex(std::string_view hex, std::string_view what = "hex string");

Sha256Digest Sha256(std::span<const uint8_t> data);
inline Sha256Digest Sha256(std::string_view s) {
  return Sha256(std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}
// Streams the file through SHA-256 (binaries can be large); throws naming the path.
Sha256Digest Sha256File(const std::filesystem::path& path);

// PCR extend in software: SHA-256(old || digest).
Sha256Digest ExtendSha256(const Sha256Digest& old, const Sha256Digest& digest);

Bytes ReadFileBytes(const std::filesystem::path& path);
// Pseudo-files such as /sys/kernel/security/tpm0/binary_bios_measurements report size 0:
// read until EOF. Returns false if the file does not exist.
bool ReadFileIfExists(const std::filesystem::path& path, Bytes& out);
// Writes to PATH.tmp, fsyncs, renames: a crash leaves the old or the new file, never half.
void WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> data);
inline void WriteFileAtomic(const std::filesystem::path& path, std::string_view s) {
  WriteFileAtomic(path, std::span(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
}

// The current time as RFC 3339 UTC, seconds: "2026-01-01T00:00:00Z".
std::string NowRfc3339();

inline void PutBe(Bytes& out, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline uint64_t GetBe(std::span<const uint8_t> in, size_t off, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v = (v << 8) | in[off + static_cast<size_t>(i)];
  return v;
}

}  // namespace sovguard::attestation
