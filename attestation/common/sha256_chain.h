// Event-log replay hashing for the verifier's hot path: for a log of N records, N SHA-256 hashes of
// record contents (each must equal the record's digest) and a chain of N PCR extends
// pcr = SHA-256(pcr || digest). The two streams are independent (the extend uses the digest the
// record carries, the content hash only checks it), so on x86-64 CPUs with the SHA extensions they
// run interleaved two blocks at a time: SHA256RNDS2 has a latency of several cycles and one stream
// leaves the unit idle. The extend chain is serial (2 blocks per record, each waiting on the last)
// and sets the floor; contents left when it ends run two at a time. More lanes were measured
// slower (SHA-NI addresses only xmm0-15: spills). With AVX-512VL the same loop is compiled a
// second time: xmm16-31 and three-operand forms for everything but the SHA instructions' operands
// (fewer spills and copies). Measured on Zen 4 for 10,000 records (bench_verify): the chain alone
// 0.71 ms (35 ns/block); chain + contents (42,500 blocks) 0.81 ms with AVX-512VL, 0.89-0.90 ms
// without; two content lanes alone run 18.8 ns/block, so 0.81 ms is the SHA unit's throughput.
// Hashing the contents on AVX-512 instead (16 per register, one per 32-bit lane; or only their
// message schedules) was measured slower: those instructions compete with the chain's for the
// vector pipes. Elsewhere, or when disabled, it is a plain loop over OpenSSL (EVP_MD fetched
// once). Every path is checked against OpenSSL by tests/attestation/sha256_chain_test.cc.
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

// The same, calling visit(ctx, i) once for every item, in order (i = 0, 1, ...), from inside
// the hashing loop: work that does not depend on the hashes (e.g. decoding each record's event)
// then runs on the integer units while the SHA unit waits on its latency, instead of in a pass
// of its own. An exception from the visitor ends the hashing and propagates.
using ChainVisitor = void (*)(void* ctx, size_t index);
ChainResult ExtendChainCheckingContents(std::span<const ChainItem> items,
                                        const Sha256Digest& initial, ChainVisitor visit, void* ctx);

// The same, with items made while hashing: source(ctx, out, max) writes the next 1..max items
// (max = kChainSourceBatch) to out[] and returns how many, or 0 when there are no more. Used to
// decode a log record by record inside the hashing loop, where the decoding runs on the integer
// units while the SHA unit waits; a batch per call keeps the call's cost (every vector register
// saved around it) off most records. Items stay valid (the chain keeps them) until it returns.
// `expected` (a hint) sizes the chain's item buffer. An exception from the source ends the
// hashing and propagates.
inline constexpr size_t kChainSourceBatch = 8;
using ChainSource = size_t (*)(void* ctx, ChainItem* out, size_t max);
ChainResult ExtendChainPulling(ChainSource source, void* ctx, const Sha256Digest& initial,
                               size_t expected = 0);

// One extend, SHA-256(pcr || digest), with the SHA extensions when the CPU has them (two blocks,
// ~40 ns; OpenSSL's EVP path costs ~125 ns): ExtendSha256 (bytes.h) uses it, so the UEFI and
// IMA replays get it too. Checked against OpenSSL by the tests.
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
