// Event-log replay hashing for the verifier's hot path: for a log of N records, N SHA-256 hashes of
// record contents (each must equal the record's digest) and a chain of N PCR extends
// pcr = SHA-256(pcr || digest). The two streams are independent (the extend uses the digest the
// record carries, the content hash only checks it), so on x86-64 CPUs with the SHA extensions they
// run interleaved: SHA256RNDS2 issues one per cycle but its result takes four (Zen 4), so one
// stream leaves the unit idle. The extend chain is serial (2 blocks per record, each waiting on
// the last) and sets the floor; the contents are hashed beside it in one lane, and in a second
// lane beside the chain's padding blocks whenever they fall behind (sha256_chain.cc says why).
// With AVX-512VL the same loop is compiled a second time: xmm16-31 and three-operand forms for
// everything but the SHA instructions' operands (fewer spills and copies). The figures behind
// these choices are in bench/attestation/README.md. Elsewhere, or when disabled (also by the
// verifier's SetFastPaths(false)), it is a plain loop over OpenSSL (EVP_MD fetched once). Every
// path is checked against OpenSSL by tests/attestation/sha256_chain_test.cc.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "attestation/common/bytes.h"

namespace sovguard::attestation {

struct ChainItem {
  std::span<const uint8_t> content;  // hashed and compared with `digest`
  const uint8_t* digest = nullptr;   // 32 bytes: extended into the PCR
};

struct ChainResult {
  Sha256Digest pcr{};                   // the PCR after every extend
  size_t first_bad_content = SIZE_MAX;  // first i with SHA-256(content) != digest, or SIZE_MAX
};

// Extends `initial` by every item's digest in order and checks every item's content hash.
ChainResult ExtendChainCheckingContents(std::span<const ChainItem> items,
                                        const Sha256Digest& initial = {});

// One extend, SHA-256(pcr || digest), with the SHA extensions when the CPU has them (OpenSSL's
// EVP path otherwise): ExtendSha256 (bytes.h) uses it, so the UEFI and IMA replays get it too.
// Checked against OpenSSL by the tests.
Sha256Digest ExtendOne(const Sha256Digest& pcr, const uint8_t* digest);

// The hashing paths, slowest first.
enum class Sha256ChainPath {
  kOpenSsl,             // portable: OpenSSL's SHA-256
  kShaExtensions,       // the SHA extensions, SSE registers (xmm0-15)
  kShaExtensionsAvx512  // the same loop with AVX-512VL's 32 registers (OS must save zmm state)
};
// The path used now: the fastest the CPU and OS support, within the limit below.
Sha256ChainPath Sha256ChainActivePath();
// Tests and benchmarks: use no path faster than `limit` (kShaExtensionsAvx512: auto-detection).
void Sha256ChainLimitPath(Sha256ChainPath limit);

// Whether a SHA-extension path is used (CPU support and not disabled).
bool Sha256ChainUsesShaExtensions();
// Tests: force the portable OpenSSL path (false) or back to auto-detection (true).
void Sha256ChainAllowShaExtensions(bool allow);

}  // namespace sovguard::attestation
