#include "attestation/common/bytes.h"

#include <algorithm>

#include "attestation/common/sha256_chain.h"

namespace sovguard::attestation {

Sha256Digest ExtendSha256(const Sha256Digest& old, const Sha256Digest& digest) {
  if (Sha256ChainUsesShaExtensions()) return ExtendOne(old, digest.data());
  std::array<uint8_t, 64> both{};
  std::copy(old.begin(), old.end(), both.begin());
  std::copy(digest.begin(), digest.end(), both.begin() + 32);
  return Sha256(both);
}

}  // namespace sovguard::attestation
