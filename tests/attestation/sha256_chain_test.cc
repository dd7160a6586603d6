// The interleaved replay hashing (common/sha256_chain.h) against OpenSSL, on every path: the
// SHA extensions with AVX-512VL's registers, with SSE registers only (each when the CPU has
// them), and forced onto the portable OpenSSL loop.
#include "attestation/common/sha256_chain.h"
#include "tests/harness/require.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <stdexcept>

namespace sovguard::attestation {

// Readable parameter names in test output (found by argument-dependent lookup).
void PrintTo(Sha256ChainPath p, std::ostream* os) {
  *os << (p == Sha256ChainPath::kOpenSsl         ? "kOpenSsl"
          : p == Sha256ChainPath::kShaExtensions ? "kShaExtensions"
                                                 : "kShaExtensionsAvx512");
}

namespace {

struct Log {
  std::vector<Bytes> contents;
  std::vector<Sha256Digest> digests;
  std::vector<ChainItem> Items() const {
    std::vector<ChainItem> items;
    for (size_t i = 0; i < contents.size(); ++i) items.push_back({contents[i], digests[i].data()});
    return items;
  }
};

// Contents of every length 0..300 (every padding case: 55/56/63/64/119/120 ... bytes).
Log MakeLog(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Log log;
  for (size_t i = 0; i < n; ++i) {
    Bytes c(i % 301);
    for (auto& b : c) b = static_cast<uint8_t>(rng());
    log.digests.push_back(Sha256(c));
    log.contents.push_back(std::move(c));
  }
  return log;
}

// An extend by OpenSSL alone (ExtendSha256 may take the SHA-extension path under test).
Sha256Digest OpenSslExtend(const Sha256Digest& pcr, const uint8_t* digest) {
  uint8_t in[64];
  std::memcpy(in, pcr.data(), 32);
  std::memcpy(in + 32, digest, 32);
  Sha256Digest out{};
  unsigned n = 0;
  if (EVP_Digest(in, sizeof in, out.data(), &n, EVP_sha256(), nullptr) != 1 || n != 32)
    throw std::runtime_error("OpenSSL SHA-256 failed");
  return out;
}

Sha256Digest Reference(const Log& log, Sha256Digest pcr = {}) {
  for (const auto& d : log.digests) pcr = OpenSslExtend(pcr, d.data());
  return pcr;
}

const char* PathName(Sha256ChainPath p) {
  switch (p) {
    case Sha256ChainPath::kOpenSsl:
      return "OpenSsl";
    case Sha256ChainPath::kShaExtensions:
      return "ShaExtensions";
    case Sha256ChainPath::kShaExtensionsAvx512:
      return "ShaExtensionsAvx512";
  }
  return "?";
}

class Sha256Chain : public ::testing::TestWithParam<Sha256ChainPath> {
 protected:
  void SetUp() override {
    Sha256ChainLimitPath(GetParam());
    if (Sha256ChainActivePath() != GetParam())
      SOVGUARD_SKIP_CPU_FEATURE(
          GetParam() == Sha256ChainPath::kShaExtensionsAvx512 ? "avx512" : "sha-ni",
          "this CPU (or OS) does not support the " << PathName(GetParam())
                                                   << " path; the slower paths are tested");
  }
  void TearDown() override { Sha256ChainLimitPath(Sha256ChainPath::kShaExtensionsAvx512); }
};

TEST_P(Sha256Chain, MatchesOpenSsl) {
  EXPECT_EQ(Sha256ChainActivePath(), GetParam());
  EXPECT_EQ(Sha256ChainUsesShaExtensions(), GetParam() != Sha256ChainPath::kOpenSsl);
  for (size_t n : {0u, 1u, 2u, 3u, 64u, 301u, 1000u}) {
    const auto log = MakeLog(n, static_cast<uint32_t>(n));
    const auto items = log.Items();
    auto r = ExtendChainCheckingContents(items);
    EXPECT_EQ(r.pcr, Reference(log)) << n;
    EXPECT_EQ(r.first_bad_content, SIZE_MAX) << n;
    Sha256Digest start{};
    start[5] = 7;
    EXPECT_EQ(ExtendChainCheckingContents(items, start).pcr, Reference(log, start)) << n;
  }
}

// One extend (ExtendOne, and ExtendSha256 through it): the UEFI and IMA replays.
TEST_P(Sha256Chain, ExtendOneMatchesOpenSsl) {
  const auto log = MakeLog(300, 4);
  Sha256Digest a{}, b{}, c{};
  for (const auto& d : log.digests) {
    a = ExtendOne(a, d.data());
    b = ExtendSha256(b, d);
    c = OpenSslExtend(c, d.data());
    ASSERT_EQ(a, c);
    ASSERT_EQ(b, c);
  }
  Sha256Digest ones;
  ones.fill(0xff);
  EXPECT_EQ(ExtendOne(ones, ones.data()), OpenSslExtend(ones, ones.data()));
}

TEST_P(Sha256Chain, FindsTheFirstTamperedContent) {
  auto log = MakeLog(400, 9);
  for (size_t bad : {0u, 1u, 57u, 299u, 399u}) {
    auto t = log;
    if (t.contents[bad].empty()) t.contents[bad].push_back(0);
    t.contents[bad].back() ^= 1;
    auto r = ExtendChainCheckingContents(t.Items());
    EXPECT_EQ(r.first_bad_content, bad);
    EXPECT_EQ(r.pcr, Reference(log));  // the chain is over the digests, tampered or not
  }
  // A tampered digest: the chain changes and the content no longer matches.
  auto t = log;
  t.digests[200][0] ^= 1;
  auto r = ExtendChainCheckingContents(t.Items());
  EXPECT_EQ(r.first_bad_content, 200u);
  EXPECT_NE(r.pcr, Reference(log));
  EXPECT_EQ(r.pcr, Reference(t));
}

// Contents of every length 0..300 (every padding case, one and two tail blocks, several whole
// blocks): tampering any one content is found, at its index, whatever the content's length.
TEST_P(Sha256Chain, FindsATamperedContentOfEveryLength) {
  const auto log = MakeLog(301, 21);  // content i is i bytes long
  const Sha256Digest ref = Reference(log);
  for (size_t bad = 0; bad <= 300; ++bad) {
    auto t = log;
    if (bad == 0)
      t.contents[0].push_back(0);  // (an empty content can only grow)
    else
      t.contents[bad][bad / 2] ^= 0x01;
    const auto r = ExtendChainCheckingContents(t.Items());
    ASSERT_EQ(r.first_bad_content, bad);
    ASSERT_EQ(r.pcr, ref) << bad;
  }
}

// The edges: no items, one item (good or bad), and every item bad (the first is reported).
TEST_P(Sha256Chain, EmptyOneAndAllBad) {
  Sha256Digest start{};
  start[31] = 1;
  auto r = ExtendChainCheckingContents({}, start);
  EXPECT_EQ(r.pcr, start);
  EXPECT_EQ(r.first_bad_content, SIZE_MAX);
  for (size_t len : {0u, 1u, 55u, 56u, 64u, 119u, 120u}) {
    auto log = MakeLog(len + 1, 4);
    log.contents.erase(log.contents.begin(), log.contents.end() - 1);
    log.digests.erase(log.digests.begin(), log.digests.end() - 1);
    ASSERT_EQ(log.contents[0].size(), len);
    r = ExtendChainCheckingContents(log.Items(), start);
    EXPECT_EQ(r.pcr, ExtendSha256(start, log.digests[0])) << len;
    EXPECT_EQ(r.first_bad_content, SIZE_MAX) << len;
    log.contents[0].push_back(7);
    EXPECT_EQ(ExtendChainCheckingContents(log.Items(), start).first_bad_content, 0u) << len;
  }
  auto log = MakeLog(40, 8);
  for (auto& c : log.contents) c.push_back(1);
  r = ExtendChainCheckingContents(log.Items());
  EXPECT_EQ(r.first_bad_content, 0u);
  EXPECT_EQ(r.pcr, Reference(log));
}

// Every path gives the same result as the others on the same log (bad contents included).
TEST(Sha256ChainPaths, AgreeWithEachOther) {
  auto log = MakeLog(2000, 77);
  log.contents[1234].push_back(5);
  log.contents[1500].clear();
  std::vector<ChainResult> results;
  for (auto p : {Sha256ChainPath::kOpenSsl, Sha256ChainPath::kShaExtensions,
                 Sha256ChainPath::kShaExtensionsAvx512}) {
    Sha256ChainLimitPath(p);
    results.push_back(ExtendChainCheckingContents(log.Items()));
  }
  Sha256ChainLimitPath(Sha256ChainPath::kShaExtensionsAvx512);
  for (const auto& r : results) {
    EXPECT_EQ(r.pcr, Reference(log));
    EXPECT_EQ(r.first_bad_content, 1234u);
  }
}

// The older switch still works: false forces OpenSSL, true goes back to the fastest path.
TEST(Sha256ChainPaths, AllowShaExtensionsSwitch) {
  Sha256ChainAllowShaExtensions(false);
  EXPECT_EQ(Sha256ChainActivePath(), Sha256ChainPath::kOpenSsl);
  EXPECT_FALSE(Sha256ChainUsesShaExtensions());
  Sha256ChainAllowShaExtensions(true);
  const auto best = Sha256ChainActivePath();
  EXPECT_EQ(Sha256ChainUsesShaExtensions(), best != Sha256ChainPath::kOpenSsl);
  Sha256ChainLimitPath(Sha256ChainPath::kShaExtensions);
  EXPECT_EQ(Sha256ChainActivePath(), std::min(best, Sha256ChainPath::kShaExtensions));
  Sha256ChainLimitPath(Sha256ChainPath::kShaExtensionsAvx512);
  EXPECT_EQ(Sha256ChainActivePath(), best);
}

// Contents far longer than an extend: the chain ends first and the remaining contents run two
// at a time; the first tampered one must still be the one reported, whichever lane finds it.
TEST_P(Sha256Chain, LongContentsAndSeveralTampered) {
  std::mt19937 rng(5);
  Log log;
  for (size_t i = 0; i < 60; ++i) {
    Bytes c(i < 10 ? 3 : 200 + (i * 37) % 900);
    for (auto& b : c) b = static_cast<uint8_t>(rng());
    log.digests.push_back(Sha256(c));
    log.contents.push_back(std::move(c));
  }
  auto r = ExtendChainCheckingContents(log.Items());
  EXPECT_EQ(r.pcr, Reference(log));
  EXPECT_EQ(r.first_bad_content, SIZE_MAX);
  for (const std::vector<size_t>& bad :
       std::vector<std::vector<size_t>>{{59}, {58, 59}, {41, 40}, {55, 12}, {0, 59}, {9, 10, 11}}) {
    auto t = log;
    for (size_t b : bad) t.contents[b].front() ^= 0x80;
    r = ExtendChainCheckingContents(t.Items());
    EXPECT_EQ(r.first_bad_content, *std::min_element(bad.begin(), bad.end()));
    EXPECT_EQ(r.pcr, Reference(log));
  }
}

// The content lanes keep pace with the chain: a second content lane opens whenever the
// contents fall behind and closes when it catches up, items change lanes as they finish, and
// the chain may end before or after them. Logs whose contents run ahead of the chain (short),
// behind it (long), and in bursts of each (the second lane opens and closes many times), with
// tampered contents anywhere: the PCR and the first tampered index are OpenSSL's.
TEST_P(Sha256Chain, ContentLanesKeepPaceWithTheChain) {
  std::mt19937 rng(23);
  auto make = [&](size_t n, auto&& length_of) {
    Log log;
    for (size_t i = 0; i < n; ++i) {
      Bytes c(length_of(i));
      for (auto& b : c) b = static_cast<uint8_t>(rng());
      log.digests.push_back(Sha256(c));
      log.contents.push_back(std::move(c));
    }
    return log;
  };
  const std::vector<Log> logs = {
      make(500, [](size_t) { return 10; }),                                 // 1 block: ahead
      make(500, [](size_t i) { return 130 + i % 200; }),                    // 3-6 blocks: behind
      make(700, [](size_t i) { return (i / 16) % 2 ? 200 : 20; }),          // bursts of 16
      make(700, [](size_t i) { return (i / 3) % 5 ? 60 : 119; }),           // 2 blocks, some 3
      make(900, [&](size_t) { return static_cast<size_t>(rng() % 260); }),  // random
  };
  for (size_t k = 0; k < logs.size(); ++k) {
    const auto& log = logs[k];
    const Sha256Digest ref = Reference(log);
    auto r = ExtendChainCheckingContents(log.Items());
    ASSERT_EQ(r.pcr, ref) << k;
    ASSERT_EQ(r.first_bad_content, SIZE_MAX) << k;
    for (int trial = 0; trial < 40; ++trial) {
      auto t = log;
      std::vector<size_t> bad;
      const size_t count = 1 + rng() % 4;
      for (size_t j = 0; j < count; ++j) bad.push_back(rng() % t.contents.size());
      if (trial == 0) bad = {t.contents.size() - 1};
      if (trial == 1) bad = {t.contents.size() - 2, t.contents.size() - 1};
      for (size_t b : bad) t.contents[b].push_back(static_cast<uint8_t>(b));
      r = ExtendChainCheckingContents(t.Items());
      ASSERT_EQ(r.first_bad_content, *std::min_element(bad.begin(), bad.end()))
          << k << " " << trial;
      ASSERT_EQ(r.pcr, ref) << k << " " << trial;
    }
  }
}

// Every log of up to 6 records whose contents take 1, 2, 3 or 5 blocks (every order): each
// way the lanes can meet the end of the items and of the chain, with no tampered content and
// with each one tampered in turn.
TEST_P(Sha256Chain, EveryShortLogOfMixedLengths) {
  constexpr size_t kLengths[] = {10, 60, 120, 250};
  for (size_t n = 1; n <= 6; ++n) {
    size_t combos = 1;
    for (size_t i = 0; i < n; ++i) combos *= 4;
    for (size_t code = 0; code < combos; ++code) {
      Log log;
      for (size_t i = 0, c = code; i < n; ++i, c /= 4) {
        Bytes content(kLengths[c % 4], static_cast<uint8_t>(i + 1));
        log.digests.push_back(Sha256(content));
        log.contents.push_back(std::move(content));
      }
      const Sha256Digest ref = Reference(log);
      auto r = ExtendChainCheckingContents(log.Items());
      ASSERT_EQ(r.pcr, ref) << n << " " << code;
      ASSERT_EQ(r.first_bad_content, SIZE_MAX) << n << " " << code;
      for (size_t bad = 0; bad < n; ++bad) {
        auto t = log;
        t.contents[bad][0] ^= 0x80;
        r = ExtendChainCheckingContents(t.Items());
        ASSERT_EQ(r.first_bad_content, bad) << n << " " << code;
        ASSERT_EQ(r.pcr, ref) << n << " " << code;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, Sha256Chain,
                         ::testing::Values(Sha256ChainPath::kShaExtensionsAvx512,
                                           Sha256ChainPath::kShaExtensions,
                                           Sha256ChainPath::kOpenSsl),
                         [](const auto& p) { return PathName(p.param); });

}  // namespace
}  // namespace sovguard::attestation
