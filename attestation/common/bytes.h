// What attestation adds to base/: its error type, the PCR extend and big-endian integers. The
// byte, hex, SHA-256, file and time helpers are base/'s; the using-declarations let
// attestation code name them unqualified. Kept free of TPM headers so the verifier links it alone.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "base/bytes.h"
#include "base/error.h"
#include "base/file.h"
#include "base/hex.h"
#include "base/sha256.h"
#include "base/time.h"

namespace sovguard::attestation {

using base::Bytes;
using base::FromHex;
using base::NowRfc3339;
using base::ReadFileBytes;
using base::ReadFileIfExists;
using base::Sha256;
using base::Sha256Digest;
using base::Sha256File;
using base::ToHex;
using base::WriteFileAtomic;

// Every failure in this library throws an AttestationError with a message that says what was
// expected; TPM failures carry the decoded TSS2 return code (see tpm/tpm.h). It is base::Error
// itself, so a handler for it also catches the failures of the base/ helpers attestation calls.
using AttestationError = base::Error;

// PCR extend in software: SHA-256(old || digest).
Sha256Digest ExtendSha256(const Sha256Digest& old, const Sha256Digest& digest);

inline void PutBe(Bytes& out, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
inline uint64_t GetBe(std::span<const uint8_t> in, size_t off, int width) {
  uint64_t v = 0;
  for (int i = 0; i < width; ++i) v = (v << 8) | in[off + static_cast<size_t>(i)];
  return v;
}

}  // namespace sovguard::attestation
