#include "attestation/common/bytes.h"

#include <algorithm>
#include <ctime>

#include "attestation/common/sha256_chain.h"

namespace sovguard::attestation {

Sha256Digest ExtendSha256(const Sha256Digest& old, const Sha256Digest& digest) {
  if (Sha256ChainUsesShaExtensions()) return ExtendOne(old, digest.data());
  std::array<uint8_t, 64> both{};
  std::copy(old.begin(), old.end(), both.begin());
  std::copy(digest.begin(), digest.end(), both.begin() + 32);
  return Sha256(both);
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
