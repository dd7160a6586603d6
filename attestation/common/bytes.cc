#include "attestation/common/bytes.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <memory>

#include "attestation/common/sha256_chain.h"

namespace sovguard::attestation {
namespace {

struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

// Fetched once: EVP_sha256() makes every init look the implementation up again (OpenSSL 3).
const EVP_MD* Sha256Md() {
  static const std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(
      EVP_MD_fetch(nullptr, "SHA256", nullptr), &EVP_MD_free);
  if (!md) throw AttestationError("OpenSSL: cannot fetch SHA-256");
  return md.get();
}

MdCtx NewSha256() {
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), Sha256Md(), nullptr) != 1)
    throw AttestationError("OpenSSL: cannot initialise SHA-256");
  return ctx;
}

// For one-call hashes (Sha256, ExtendSha256): a context per thread, reset instead of allocated.
// Allocating and freeing one costs about twice hashing a 64-byte message (measured ~350 vs
// ~125 ns), and the verifier hashes many small things (PCR extends of the UEFI and IMA logs).
EVP_MD_CTX* ThreadSha256() {
  thread_local const MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), Sha256Md(), nullptr) != 1)
    throw AttestationError("OpenSSL: cannot initialise SHA-256");
  return ctx.get();
}

Sha256Digest Finish(EVP_MD_CTX* ctx) {
  Sha256Digest out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size())
    throw AttestationError("OpenSSL: SHA-256 final failed");
  return out;
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xf]);
  }
  return s;
}

Bytes FromHex(std::string_view hex, std::string_view what) {
  if (hex.size() % 2 != 0)
    throw AttestationError(std::string(what) + ": expected an even number of hex digits, got " +
                           std::to_string(hex.size()));
  Bytes out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0)
      throw AttestationError(std::string(what) + ": invalid hex digit at offset " +
                             std::to_string(hi < 0 ? i : i + 1));
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

Sha256Digest Sha256(std::span<const uint8_t> data) {
  EVP_MD_CTX* ctx = ThreadSha256();
  if (EVP_DigestUpdate(ctx, data.data(), data.size()) != 1)
    throw AttestationError("OpenSSL: SHA-256 update failed");
  return Finish(ctx);
}

Sha256Digest Sha256File(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw AttestationError("cannot open " + path.string() +
                           " for measurement: " + std::strerror(errno));
  auto ctx = NewSha256();
  std::array<char, 1 << 16> buf{};
  while (in) {
    in.read(buf.data(), buf.size());
    auto n = in.gcount();
    if (n > 0 && EVP_DigestUpdate(ctx.get(), buf.data(), static_cast<size_t>(n)) != 1)
      throw AttestationError("OpenSSL: SHA-256 update failed");
  }
  if (in.bad()) throw AttestationError("read error on " + path.string());
  return Finish(ctx.get());
}

Sha256Digest ExtendSha256(const Sha256Digest& old, const Sha256Digest& digest) {
  if (Sha256ChainUsesShaExtensions()) return ExtendOne(old, digest.data());
  EVP_MD_CTX* ctx = ThreadSha256();
  if (EVP_DigestUpdate(ctx, old.data(), old.size()) != 1 ||
      EVP_DigestUpdate(ctx, digest.data(), digest.size()) != 1)
    throw AttestationError("OpenSSL: SHA-256 update failed");
  return Finish(ctx);
}

Bytes ReadFileBytes(const std::filesystem::path& path) {
  Bytes out;
  if (!ReadFileIfExists(path, out))
    throw AttestationError("cannot read " + path.string() + ": " + std::strerror(errno));
  return out;
}

bool ReadFileIfExists(const std::filesystem::path& path, Bytes& out) {
  out.clear();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return false;
    throw AttestationError("cannot open " + path.string() + ": " + std::strerror(errno));
  }
  std::array<uint8_t, 1 << 16> buf{};
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw AttestationError("read error on " + path.string() + ": " + std::strerror(e));
    }
    if (n == 0) break;
    out.insert(out.end(), buf.begin(), buf.begin() + n);
  }
  ::close(fd);
  return true;
}

void WriteFileAtomic(const std::filesystem::path& path, std::span<const uint8_t> data) {
  auto tmp = path;
  tmp += ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) throw AttestationError("cannot create " + tmp.string() + ": " + std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      throw AttestationError("write error on " + tmp.string() + ": " + std::strerror(e));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw AttestationError("cannot flush " + tmp.string() + ": " + std::strerror(errno));
  std::filesystem::rename(tmp, path);
}

std::string NowRfc3339() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace sovguard::attestation
