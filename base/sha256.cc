#include "base/sha256.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "base/error.h"

namespace sovguard::base {
namespace {

void Init(EVP_MD_CTX* ctx) {
  if (!ctx || EVP_DigestInit_ex2(ctx, Sha256Md(), nullptr) != 1)
    throw Error("OpenSSL: cannot initialise SHA-256");
}

Sha256Digest Finish(EVP_MD_CTX* ctx) {
  Sha256Digest out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx, out.data(), &len) != 1 || len != out.size())
    throw Error("OpenSSL: SHA-256 final failed");
  return out;
}

// For one-call hashes: a context per thread, reset instead of allocated. Allocating and freeing
// one costs about twice hashing a 64-byte message, and the verifier hashes many small things.
EVP_MD_CTX* ThreadSha256() {
  thread_local const EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  Init(ctx.get());
  return ctx.get();
}

}  // namespace

const EVP_MD* Sha256Md() {
  static const EvpMdPtr md(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  if (!md) throw Error("OpenSSL: cannot fetch SHA-256");
  return md.get();
}

Sha256Digest Sha256(std::span<const uint8_t> data) {
  EVP_MD_CTX* ctx = ThreadSha256();
  if (EVP_DigestUpdate(ctx, data.data(), data.size()) != 1)
    throw Error("OpenSSL: SHA-256 update failed");
  return Finish(ctx);
}

Sha256Digest Sha256File(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error("cannot open " + path.string() + " for measurement: " + std::strerror(errno));
  Sha256Hasher h;
  std::array<char, 1 << 16> buf{};
  while (in) {
    in.read(buf.data(), buf.size());
    const auto n = in.gcount();
    if (n > 0) h.Update(buf.data(), static_cast<size_t>(n));
  }
  if (in.bad()) throw Error("read error on " + path.string());
  return h.Final();
}

Sha256Hasher::Sha256Hasher() : ctx_(EVP_MD_CTX_new()) {
  Init(ctx_.get());
}

void Sha256Hasher::Update(const void* data, std::size_t size) {
  if (size != 0 && EVP_DigestUpdate(ctx_.get(), data, size) != 1)
    throw Error("OpenSSL: SHA-256 update failed");
}

Sha256Digest Sha256Hasher::Final() {
  const Sha256Digest out = Finish(ctx_.get());
  Init(ctx_.get());
  return out;
}

}  // namespace sovguard::base
