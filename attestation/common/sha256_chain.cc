#include "attestation/common/sha256_chain.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <type_traits>

#include "base/openssl.h"
#include "base/sha256.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define SOVGUARD_SHA_NI 1
// Lambdas inside the SHA-extension code need the target too, to inline its helpers.
#define SOVGUARD_SHA_TARGET __attribute__((target("sha,sse4.1,ssse3"), always_inline))
#endif

namespace sovguard::attestation {
namespace {

std::atomic<Sha256ChainPath> g_limit{Sha256ChainPath::kShaExtensionsAvx512};

// The items of one chain (the loops below ask Has(i) before reading item i).
class Items {
 public:
  explicit Items(std::span<const ChainItem> items) : items_(items) {}
  bool Has(size_t i) const { return i < items_.size(); }
  const ChainItem& operator[](size_t i) const { return items_[i]; }

 private:
  std::span<const ChainItem> items_;
};

// ---- Portable path: OpenSSL, SHA-256 fetched once per process (base::Sha256Md) ----
ChainResult ChainOpenSsl(Items& items, const Sha256Digest& initial) {
  ChainResult res;
  res.pcr = initial;
  const base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  const EVP_MD* md = base::Sha256Md();
  if (!ctx) throw AttestationError("OpenSSL: EVP_MD_CTX_new failed");
  Sha256Digest d{};
  unsigned n = 0;
  for (size_t i = 0; items.Has(i); ++i) {
    const auto& it = items[i];
    if (EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
        EVP_DigestUpdate(ctx.get(), it.content.data(), it.content.size()) != 1 ||
        EVP_DigestFinal_ex(ctx.get(), d.data(), &n) != 1 ||
        EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1 ||
        EVP_DigestUpdate(ctx.get(), res.pcr.data(), 32) != 1 ||
        EVP_DigestUpdate(ctx.get(), it.digest, 32) != 1 ||
        EVP_DigestFinal_ex(ctx.get(), res.pcr.data(), &n) != 1)
      throw AttestationError("OpenSSL: SHA-256 failed");
    if (res.first_bad_content == SIZE_MAX && std::memcmp(d.data(), it.digest, 32) != 0)
      res.first_bad_content = i;
  }
  return res;
}

#ifdef SOVGUARD_SHA_NI

bool CpuHasShaExtensions() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
  const bool ssse3 = c & (1u << 9), sse41 = c & (1u << 19);
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const bool sha = b & (1u << 29);
  return ssse3 && sse41 && sha;
}

// AVX-512 F and VL, with the OS saving the opmask and all of zmm0-31 (XCR0 bits 1, 2, 5, 6, 7).
bool CpuHasAvx512Vl() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return false;  // OSXSAVE
  uint32_t xcr0 = 0, xcr0_hi = 0;
  __asm__("xgetbv" : "=a"(xcr0), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0 & 0xE6) != 0xE6) return false;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (b & (1u << 16)) && (b & (1u << 31));
}

constexpr uint32_t kH0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
alignas(16) constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

// State in the layout SHA256RNDS2 works on: abef = {F,E,B,A} and cdgh = {H,G,D,C} (low to high).
struct State {
  __m128i abef, cdgh;
};

__attribute__((target("sha,sse4.1,ssse3"))) State Load(const uint32_t h[8]) {
  __m128i dcba = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h));
  __m128i hgfe = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + 4));
  __m128i cdab = _mm_shuffle_epi32(dcba, 0xB1);
  __m128i efgh = _mm_shuffle_epi32(hgfe, 0x1B);
  return {_mm_alignr_epi8(cdab, efgh, 8), _mm_blend_epi16(efgh, cdab, 0xF0)};
}

// The first 16 message words of a block, as SHA256RNDS2 takes them (big-endian words).
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void LoadBlock(
    const uint8_t* block, __m128i m[4]) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  for (int g = 0; g < 4; ++g)
    m[g] =
        _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 16 * g)), bswap);
}

// The digest of a state as message words {A,B,C,D}, {E,F,G,H}: what LoadBlock gives for its 32
// bytes, without storing them (the extend chain feeds each PCR value straight into the next
// block: no byte swaps and no store-to-load round trip on its critical path).
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void DigestWords(const State& s,
                                                                                   __m128i& dcba,
                                                                                   __m128i& hgfe) {
  const __m128i feba = _mm_shuffle_epi32(s.abef, 0x1B);
  const __m128i dchg = _mm_shuffle_epi32(s.cdgh, 0xB1);
  dcba = _mm_blend_epi16(feba, dchg, 0xF0);
  hgfe = _mm_alignr_epi8(dchg, feba, 8);
}

// The first block of an extend: the PCR (as message words) || the 32-byte digest at `d`.
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void ExtendWords(__m128i pw0,
                                                                                   __m128i pw1,
                                                                                   const uint8_t* d,
                                                                                   __m128i m[4]) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  m[0] = pw0;
  m[1] = pw1;
  m[2] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)), bswap);
  m[3] = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d + 16)), bswap);
}

// An extend done: its PCR value as the next extend's message words; the state starts again.
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void NextPcr(State& s,
                                                                               const State& h0,
                                                                               __m128i& pw0,
                                                                               __m128i& pw1) {
  DigestWords(s, pw0, pw1);
  s = h0;
}

// Whether a state's digest is the 32 bytes at `d` (no store, no memcmp call).
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline bool DigestEquals(
    const State& s, const uint8_t* d) {
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  __m128i dcba, hgfe;
  DigestWords(s, dcba, hgfe);
  const __m128i x =
      _mm_or_si128(_mm_xor_si128(_mm_shuffle_epi8(dcba, bswap),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(d))),
                   _mm_xor_si128(_mm_shuffle_epi8(hgfe, bswap),
                                 _mm_loadu_si128(reinterpret_cast<const __m128i*>(d + 16))));
  return _mm_testz_si128(x, x);
}

// W[t] + K[t] of the constant second block of every extend (0x80, zeros, length 512 bits):
// its message schedule never changes, so the extend lane skips it (fewer SHA-unit operations).
struct PadSchedule {
  alignas(16) uint32_t kw[64];
  PadSchedule() {
    uint32_t w[64] = {0x80000000u};
    w[15] = 512;
    auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
    for (int t = 16; t < 64; ++t) {
      const uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
      const uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
      w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    for (int t = 0; t < 64; ++t) kw[t] = w[t] + kK[t];
  }
};

// One block for each of `L` independent states, given the block's first 16 message words
// (m[l][0..3], overwritten), rounds interleaved so the SHA unit always has independent work.
// With kPadLane0, lane 0 is an extend's constant padding block: its W+K come from `pad` and
// m[0] is not read. Lane 0's instructions come first in each group: the oldest ready operation
// issues first, and lane 0 is the extend chain, the critical path.
// Message words of group g (rounds 4g..4g+3):
//   g < 4:  the block's words;  else msg2(msg1(M[g-4], M[g-3]) + (M[g-2]:M[g-1] >> 1 word),
//   M[g-1]).
template <int L, bool kPadLane0 = false>
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void CompressWords(
    State* st, __m128i (*m)[4], const uint32_t* pad_kw = nullptr) {
  State save[L];
  for (int l = 0; l < L; ++l) save[l] = st[l];
#pragma GCC unroll 16
  for (int g = 0; g < 16; ++g) {
    const __m128i k = _mm_load_si128(reinterpret_cast<const __m128i*>(kK + 4 * g));
    for (int l = 0; l < L; ++l) {
      __m128i kw;
      if (kPadLane0 && l == 0) {
        kw = _mm_load_si128(reinterpret_cast<const __m128i*>(pad_kw + 4 * g));
      } else {
        __m128i w;
        if (g < 4) {
          w = m[l][g];
        } else {
          const __m128i x = _mm_add_epi32(_mm_sha256msg1_epu32(m[l][g & 3], m[l][(g + 1) & 3]),
                                          _mm_alignr_epi8(m[l][(g + 3) & 3], m[l][(g + 2) & 3], 4));
          w = _mm_sha256msg2_epu32(x, m[l][(g + 3) & 3]);
        }
        m[l][g & 3] = w;
        kw = _mm_add_epi32(w, k);
      }
      st[l].cdgh = _mm_sha256rnds2_epu32(st[l].cdgh, st[l].abef, kw);
      kw = _mm_shuffle_epi32(kw, 0x0E);
      std::swap(st[l].abef, st[l].cdgh);
      st[l].cdgh = _mm_sha256rnds2_epu32(st[l].cdgh, st[l].abef, kw);
      std::swap(st[l].abef, st[l].cdgh);
    }
  }
  for (int l = 0; l < L; ++l) {
    st[l].abef = _mm_add_epi32(st[l].abef, save[l].abef);
    st[l].cdgh = _mm_add_epi32(st[l].cdgh, save[l].cdgh);
  }
}

// One 64-byte block for each of `L` independent states.
template <int L>
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline void Compress(
    State* st, const uint8_t* const* blocks) {
  __m128i m[L][4];
  for (int l = 0; l < L; ++l) LoadBlock(blocks[l], m[l]);
  CompressWords<L>(st, m);
}

// Blocks of one message with SHA-256 padding: whole blocks straight from the input, the last
// one or two from a small buffer.
struct Message {
  const uint8_t* data = nullptr;
  size_t full = 0, total = 0, next = 0;
  alignas(16) uint8_t tail[128];
  void Start(std::span<const uint8_t> m) {
    data = m.data();
    full = m.size() / 64;
    const size_t rem = m.size() % 64;
    const size_t tail_blocks = rem + 9 <= 64 ? 1 : 2;
    total = full + tail_blocks;
    next = 0;
    std::memset(tail, 0, sizeof tail);
    if (rem) std::memcpy(tail, data + 64 * full, rem);
    tail[rem] = 0x80;
    const uint64_t bits = static_cast<uint64_t>(m.size()) * 8;
    uint8_t* len = tail + 64 * tail_blocks - 8;
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
  }
  const uint8_t* block() const {
    return next < full ? data + 64 * next : tail + 64 * (next - full);
  }
};

// The loop, compiled once per register set by the two functions after it.
__attribute__((target("sha,sse4.1,ssse3"), always_inline)) inline ChainResult ChainShaNiLoop(
    Items& items, const Sha256Digest& initial) {
  ChainResult res;
  const State h0 = Load(kH0);
  static const PadSchedule pad_schedule;
  // Lane 0: the extend chain, two blocks per record: pcr || digest, then constant padding. The
  // PCR value stays in registers as message words (pw0, pw1) from one extend to the next.
  __m128i pw0, pw1;
  {
    __m128i m[4];
    alignas(16) uint8_t first[64] = {};
    std::memcpy(first, initial.data(), 32);
    LoadBlock(first, m);
    pw0 = m[0];
    pw1 = m[1];
  }
  size_t ia = 0;
  int ba = 0;
  // Lanes 1 and 2: content hashes, each taking the next item when its message ends. Lane 1
  // runs beside every chain block. Contents average more blocks (2-3) than an extend (2), so
  // one lane alone falls behind the chain and its excess ran after it, two lanes at a time, at
  // their latency; lane 2 opens whenever the contents fall behind the chain (their next item
  // is at most one past the chain's), and hashes only beside the chain's padding blocks:
  // those need no message schedule, so the SHA unit has room for a third block there, while
  // beside the chain's first block a third lane delays the chain (bench/attestation/README.md).
  // The next item's message is laid out (Start) before a lane takes it: its stores then reach
  // the cache before the lane loads them, instead of stalling the loads (byte stores do not
  // forward to 16-byte loads).
  // (Lanes are addressed by constant indices only: a state array indexed at run time would be
  // kept in memory rather than in registers.)
  State st[3] = {h0, h0, h0};
  Message msgs[3];
  Message* lane[2] = {&msgs[0], &msgs[1]};
  Message* spare = &msgs[2];
  size_t lane_item[2] = {0, 0};
  size_t next = 0;  // the next item no lane has taken: *spare holds its message when it exists
  if (items.Has(0)) spare->Start(items[0].content);
  auto take = [&]<int L>() SOVGUARD_SHA_TARGET {
    std::swap(lane[L], spare);
    lane_item[L] = next++;
    st[1 + L] = h0;
    if (items.Has(next)) spare->Start(items[next].content);
  };
  // Content lane L on by one block; when its message ends, its digest is checked and it takes
  // the next item if `may_take` and there is one. False: the lane is closed.
  auto advance = [&]<int L>(bool may_take) SOVGUARD_SHA_TARGET {
    if (++lane[L]->next < lane[L]->total) return true;
    if (!DigestEquals(st[1 + L], items[lane_item[L]].digest))
      res.first_bad_content = std::min(res.first_bad_content, lane_item[L]);
    if (!may_take || !items.Has(next)) return false;
    take.template operator()<L>();
    return true;
  };
  // Lane 2 takes the place of a closed lane 1.
  auto lane2_to_lane1 = [&]() SOVGUARD_SHA_TARGET {
    st[1] = st[2];
    std::swap(lane[0], lane[1]);
    lane_item[0] = lane_item[1];
  };
  // Both content lanes on by one block.
  auto advance_both = [&](bool lane2_may_take) SOVGUARD_SHA_TARGET {
    const bool open0 = advance.template operator()<0>(true);
    const bool open1 = advance.template operator()<1>(lane2_may_take);
    if (!open0 && open1) lane2_to_lane1();
    return open0 + open1;
  };
  int n = 0;  // content lanes open: st[1..n]
  if (items.Has(next)) {
    take.template operator()<0>();
    n = 1;
  }
  auto chain_step = [&]<int N>() SOVGUARD_SHA_TARGET {
    __m128i m[1 + N][4];
    for (int l = 0; l < N; ++l) LoadBlock(lane[l]->block(), m[1 + l]);
    if (ba == 0) {
      ExtendWords(pw0, pw1, items[ia].digest, m[0]);
      CompressWords<1 + N>(st, m);
      ba = 1;
    } else {
      CompressWords<1 + N, true>(st, m, pad_schedule.kw);
      ba = 0;
      NextPcr(st[0], h0, pw0, pw1);  // the new PCR value: first half of the next block
      ++ia;
    }
  };
  while (items.Has(ia)) {
    if (n == 0) [[unlikely]] {
      chain_step.template operator()<0>();
    } else if (n == 1) {
      chain_step.template operator()<1>();
      if (!advance.template operator()<0>(true)) {
        n = 0;
      } else if (next <= ia + 1 && items.Has(next)) {
        take.template operator()<1>();
        n = 2;
      }
    } else if (ba == 0) {  // lane 2 waits beside the chain's first block
      chain_step.template operator()<1>();
      if (!advance.template operator()<0>(true)) {
        lane2_to_lane1();  // (lane 2 did not move this step)
        n = 1;
      }
    } else {
      chain_step.template operator()<2>();
      n = advance_both(false);  // a finished lane 2 closes: it reopens when needed
    }
  }
  // Contents left when the chain ends (few: lane 2 keeps up) run two at a time.
  if (n == 1 && items.Has(next)) {
    take.template operator()<1>();
    n = 2;
  }
  while (n == 2) {
    __m128i m[2][4];
    LoadBlock(lane[0]->block(), m[0]);
    LoadBlock(lane[1]->block(), m[1]);
    CompressWords<2>(st + 1, m);
    n = advance_both(true);
  }
  while (n == 1) {
    __m128i m[1][4];
    LoadBlock(lane[0]->block(), m[0]);
    CompressWords<1>(st + 1, m);
    n = advance.template operator()<0>(true);
  }
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(res.pcr.data()), _mm_shuffle_epi8(pw0, bswap));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(res.pcr.data() + 16), _mm_shuffle_epi8(pw1, bswap));
  return res;
}
__attribute__((target("sha,sse4.1,ssse3"))) ChainResult ChainShaNi(Items& items,
                                                                   const Sha256Digest& initial) {
  return ChainShaNiLoop(items, initial);
}

// The same code with AVX-512VL enabled: three-operand (VEX/EVEX) forms of the non-SHA
// instructions and xmm16-31 for the values that are not SHA-instruction operands (message words,
// constants, PCR words, saved states): fewer register copies and spills beside the rounds.
// Only 128-bit instructions: no AVX-512 frequency licence on Intel.
__attribute__((target("sha,sse4.1,ssse3,avx,avx2,avx512f,avx512vl"))) ChainResult ChainShaNiVl(
    Items& items, const Sha256Digest& initial) {
  return ChainShaNiLoop(items, initial);
}

__attribute__((target("sha,sse4.1,ssse3"))) Sha256Digest ExtendOneShaNi(const Sha256Digest& pcr,
                                                                        const uint8_t* digest) {
  static const PadSchedule pad_schedule;
  alignas(16) uint8_t block[64];
  std::memcpy(block, pcr.data(), 32);
  std::memcpy(block + 32, digest, 32);
  State st = Load(kH0);
  Compress<1>(&st, std::array<const uint8_t*, 1>{block}.data());
  // The constant second block (0x80, zeros, length 512 bits) from its precomputed schedule.
  CompressWords<1, true>(&st, nullptr, pad_schedule.kw);
  __m128i dcba, hgfe;
  DigestWords(st, dcba, hgfe);
  const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
  Sha256Digest out;
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.data()), _mm_shuffle_epi8(dcba, bswap));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out.data() + 16), _mm_shuffle_epi8(hgfe, bswap));
  return out;
}

#endif  // SOVGUARD_SHA_NI

// The fastest path this CPU and OS support.
Sha256ChainPath BestPath() {
#ifdef SOVGUARD_SHA_NI
  static const Sha256ChainPath best = !CpuHasShaExtensions() ? Sha256ChainPath::kOpenSsl
                                      : CpuHasAvx512Vl()     ? Sha256ChainPath::kShaExtensionsAvx512
                                                             : Sha256ChainPath::kShaExtensions;
  return best;
#else
  return Sha256ChainPath::kOpenSsl;
#endif
}

Sha256ChainPath ActivePath() {
  return std::min(BestPath(), g_limit.load(std::memory_order_relaxed));
}

ChainResult Chain(Items& items, const Sha256Digest& initial) {
  switch (ActivePath()) {
#ifdef SOVGUARD_SHA_NI
    case Sha256ChainPath::kShaExtensionsAvx512:
      return ChainShaNiVl(items, initial);
    case Sha256ChainPath::kShaExtensions:
      return ChainShaNi(items, initial);
#endif
    default:  // kOpenSsl (and every path on other architectures)
      break;
  }
  return ChainOpenSsl(items, initial);
}

}  // namespace

ChainResult ExtendChainCheckingContents(std::span<const ChainItem> items,
                                        const Sha256Digest& initial) {
  Items it(items);
  return Chain(it, initial);
}

Sha256ChainPath Sha256ChainActivePath() {
  return ActivePath();
}

void Sha256ChainLimitPath(Sha256ChainPath limit) {
  g_limit.store(limit, std::memory_order_relaxed);
}

Sha256Digest ExtendOne(const Sha256Digest& pcr, const uint8_t* digest) {
#ifdef SOVGUARD_SHA_NI
  if (ActivePath() != Sha256ChainPath::kOpenSsl) return ExtendOneShaNi(pcr, digest);
#endif
  ChainItem item{{}, digest};
  Items items(std::span(&item, 1));
  return ChainOpenSsl(items, pcr).pcr;  // (its content check of the empty content is unused)
}

bool Sha256ChainUsesShaExtensions() {
  return ActivePath() != Sha256ChainPath::kOpenSsl;
}

void Sha256ChainAllowShaExtensions(bool allow) {
  Sha256ChainLimitPath(allow ? Sha256ChainPath::kShaExtensionsAvx512 : Sha256ChainPath::kOpenSsl);
}

}  // namespace sovguard::attestation
