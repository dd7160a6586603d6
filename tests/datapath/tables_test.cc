// Unit tests of CompiledPolicy -> kernel table translation (no kernel needed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>

#include "enforcer/net/table_digest.h"
#include "enforcer/net/tables.h"
#include "tests/datapath/world_table.h"

namespace sovguard::net {
namespace {

policy::CompiledPolicy Small() {
  policy::CompiledPolicy p;
  p.datasets.push_back({.id = "a",
                        .index = 0,
                        .mode = policy::Mode::kEnforce,
                        .egress = policy::Quota{.bytes = 1000, .window_seconds = 2}});
  p.datasets.push_back({.id = "b", .index = 1, .mode = policy::Mode::kAudit});
  for (int i = 0; i < 5; ++i) p.classes.push_back(sg_class{.allowed_datasets = 1u << (i % 2)});
  p.ipv4 = {{.addr = 0x0A000000, .len = 8, .class_id = 1},    // 10/8
            {.addr = 0x0A010000, .len = 16, .class_id = 2},   // 10.1/16
            {.addr = 0x0A010100, .len = 26, .class_id = 3},   // 10.1.1.0/26
            {.addr = 0x0A010180, .len = 32, .class_id = 4},   // 10.1.1.128/32
            {.addr = 0xC0000200, .len = 28, .class_id = 4}};  // 192.0.2.0/28 (no covering /24)
  return p;
}

// The IPv6 prefix `head`::/len (the address's leading bytes, the rest zero) of class `c`.
policy::Ipv6Prefix Prefix6(std::initializer_list<std::uint8_t> head, std::uint8_t len,
                           std::uint16_t c) {
  policy::Ipv6Prefix e{};
  std::copy(head.begin(), head.end(), e.addr.begin());
  e.len = len;
  e.class_id = c;
  return e;
}

// The class `t` gives the address whose leading bytes are `head` (the rest zero).
std::uint32_t LookupV6At(const NetTables& t, std::initializer_list<std::uint8_t> head) {
  std::uint8_t a[16] = {};
  std::copy(head.begin(), head.end(), a);
  return LookupV6(t, a);
}

TEST(NetTables, V4DirectTableAndSecondLevelAgreeWithLongestPrefix) {
  const auto t = BuildNetTables(Small());
  EXPECT_EQ(LookupV4(t, 0x0A020304), 1u);
  EXPECT_EQ(LookupV4(t, 0x0A010203), 2u);
  EXPECT_EQ(LookupV4(t, 0x0A010105), 3u);
  EXPECT_EQ(LookupV4(t, 0x0A010180), 4u);
  EXPECT_EQ(LookupV4(t, 0x0A010181), 2u) << "outside the /26 and /32: the /16 covers it";
  EXPECT_EQ(LookupV4(t, 0xC0000205), 4u);
  EXPECT_EQ(LookupV4(t, 0xC0000215), 0u) << "outside the /28: unknown";
  EXPECT_EQ(LookupV4(t, 0x0B000001), 0u);
  EXPECT_EQ(t.v4_dir[0x0A0101], SG_V4_DIR_BLOCK | 0u);
  EXPECT_EQ(t.v4_dir[0xC00002], SG_V4_DIR_BLOCK | 1u);
  EXPECT_EQ(t.v4_blocks.size(), 2u * SG_V4_BLOCK_SLOTS);
  EXPECT_EQ(t.policy.enforce_mask, 1u);
  EXPECT_EQ(t.policy.quota_mask, 1u);
  EXPECT_EQ(t.policy.ds[0].quota_window_ns, 2000000000u);
  EXPECT_EQ(t.policy.n_classes, 5u);
}

TEST(NetTables, ClassZeroIsAllowedForNobody) {
  auto p = Small();
  p.classes[0].allowed_datasets = ~0ull;
  p.classes[0].flags = SG_CLASS_EXCEPTION;
  const auto t = BuildNetTables(p);
  EXPECT_EQ(t.classes[0].allowed_datasets, 0u);
  EXPECT_EQ(t.classes[0].flags & SG_CLASS_EXCEPTION, 0u);
}

TEST(NetTables, RejectsInvalidInputNamingTheField) {
  auto expect_error = [](policy::CompiledPolicy p, const std::string& needle) {
    try {
      BuildNetTables(p);
      ADD_FAILURE() << "accepted; expected an error about " << needle;
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto p = Small();
  p.ipv4[0].class_id = 99;
  expect_error(p, "ipv4[0] 10.0.0.0/8: class_id out of range");
  p = Small();
  p.ipv4[1].addr |= 1;
  expect_error(p, "bits past the prefix length");
  p = Small();
  p.ipv4.push_back({.addr = 0x0A000000, .len = 8, .class_id = 2});
  expect_error(p, "listed twice");
  p = Small();
  p.datasets[0].egress->bytes = 0;
  expect_error(p, "datasets[0].egress");
  p = Small();
  p.datasets[1].index = 5;
  expect_error(p, "datasets[1].index");
  p = Small();
  p.classes.clear();
  expect_error(p, "class 0");
  p = Small();
  p.ipv6.push_back({.addr = {0x20, 0x01, 0x0d, 0xb8, 0xff}, .len = 32, .class_id = 1});
  expect_error(p, "ipv6[0]: bits past");
}

TEST(NetTables, WorldTableBuildsAndMatchesSampledPrefixes) {
  const auto w = testing::LoadWorldTable(testing::DefaultWorldTableDir());
  ASSERT_GT(w.policy.ipv4.size(), 100000u);
  ASSERT_GT(w.policy.ipv6.size(), 30000u);
  const auto t = BuildNetTables(w.policy);
  std::mt19937 rng(7);
  for (int i = 0; i < 2000; ++i) {
    const auto& e = w.policy.ipv4[rng() % w.policy.ipv4.size()];
    const std::uint32_t host = e.len == 32 ? 0 : static_cast<std::uint32_t>(rng()) & (~0u >> e.len);
    // Aggregated per-country lists do not overlap, so the prefix's own class must come back.
    EXPECT_EQ(LookupV4(t, e.addr | host), e.class_id);
    const auto& e6 = w.policy.ipv6[rng() % w.policy.ipv6.size()];
    std::uint8_t a[16];
    std::memcpy(a, e6.addr.data(), 16);
    for (unsigned bit = e6.len; bit < 128; ++bit)
      if (rng() & 1) a[bit / 8] |= static_cast<std::uint8_t>(0x80u >> (bit % 8));
    EXPECT_EQ(LookupV6(t, a), e6.class_id);
  }
  EXPECT_LT(t.v6_trie.size(), w.policy.ipv6.size() / 100) << "the array levels should take most";
  std::printf("world table: %zu IPv6 level-2 blocks, %zu nodes below /32 (%zu KiB), trie %zu\n",
              t.v6_blocks.size() / SG_V6_BLOCK_SLOTS, t.v6_nodes.size() / SG_V6_NODE_SLOTS,
              t.v6_nodes.size() * 2 / 1024, t.v6_trie.size());
}

TEST(NetTables, V6LevelsAndTrieAgreeWithLongestPrefix) {
  auto p = Small();
  p.ipv6 = {Prefix6({0x20}, 12, 1),                          // 2000::/12
            Prefix6({0x20, 0x01, 0x0d, 0xb8}, 32, 2),        // 2001:db8::/32
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0, 1}, 48, 3),  // 2001:db8:1::/48
            Prefix6({0x2a, 0x00, 0x80}, 17, 4)};             // 2a00:8000::/17
  const auto t = BuildNetTables(p);
  auto at = [&](std::initializer_list<std::uint8_t> head) { return LookupV6At(t, head); };
  EXPECT_EQ(at({0x20, 0x05}), 1u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0, 2}), 2u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0, 1, 0xff}), 3u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb9}), 1u);
  EXPECT_EQ(at({0x2a, 0x00, 0x80, 0x01}), 4u);
  EXPECT_EQ(at({0x2a, 0x00, 0x7f}), 0u);
  EXPECT_EQ(at({0x30}), 0u);
  EXPECT_EQ(t.v6_blocks.size(), 2u * SG_V6_BLOCK_SLOTS);  // 2001::/16 and 2a00::/16
  EXPECT_EQ(t.v6_nodes.size(), 2u * SG_V6_NODE_SLOTS);    // the /40 and /48 nodes of the /48
  EXPECT_TRUE(t.v6_trie.empty());                         // nothing longer than /64
}

TEST(NetTables, V6NodesRefineDownTo64AndTheTrieTakesLongerPrefixes) {
  auto p = Small();
  p.classes.resize(6);
  p.ipv6 = {Prefix6({0x20, 0x01, 0x0d, 0xb8}, 32, 1),                       // /32
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0x10}, 36, 2),                 // /36 inside
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x30}, 44, 3),           // /44 inside the /36
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x80}, 57, 4),  // /57
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x81}, 64, 5),  // /64
            Prefix6({0x20, 0x02, 0, 0, 0, 0, 0, 0, 0x80}, 72, 2),           // /72: trie
            Prefix6({0x20, 0x02}, 16, 1)};
  const auto t = BuildNetTables(p);
  auto at = [&](std::initializer_list<std::uint8_t> head) { return LookupV6At(t, head); };
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x20}), 1u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x1f, 0xff}), 2u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x3f}), 3u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x80, 0xff}), 4u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x81, 0xff}), 5u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x82}), 4u);
  EXPECT_EQ(at({0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x7f}), 3u);
  EXPECT_EQ(at({0x20, 0x02, 0, 0, 0, 0, 0, 0, 0x80, 1}), 2u);
  EXPECT_EQ(at({0x20, 0x02, 0, 0, 0, 0, 0, 0, 0x7f}), 1u);
  // Only the /32 with the /72 goes to the trie: its /32 fallback and the /72.
  EXPECT_EQ(t.v6_trie.size(), 2u);
  // Out of nodes: the /32s that do not fit go to the trie whole, with the same answers.
  for (std::size_t max_nodes : {0u, 1u, 3u}) {
    const auto small = BuildNetTables(p, max_nodes);
    EXPECT_LE(small.v6_nodes.size(), max_nodes * SG_V6_NODE_SLOTS);
    EXPECT_GT(small.v6_trie.size(), t.v6_trie.size());
    std::uint8_t a[16] = {0x20, 0x01, 0x0d, 0xb8, 0x12, 0x34, 0, 0x81, 0xff};
    EXPECT_EQ(LookupV6(small, a), 5u) << max_nodes;
    a[7] = 0x7f;
    EXPECT_EQ(LookupV6(small, a), 3u) << max_nodes;
  }
}

// The loader writes and hashes the tables a chunk at a time from the plan (the daemon never holds
// a whole table): every chunking must give the same bytes as the tables built whole, so the
// digests taken while writing match what the tamper check reads back.
void ExpectPlanMatchesWholeTables(const policy::CompiledPolicy& p, std::size_t max_nodes,
                                  const char* what, std::size_t smallest_chunk = 1) {
  SCOPED_TRACE(what);
  const NetTablePlan plan(p, max_nodes);
  const NetTables whole = BuildNetTables(plan);
  const TableDigests digests = DigestTables(whole);
  for (std::size_t chunk :
       {smallest_chunk, std::size_t{5000}, std::size_t{1} << 20, std::size_t{64} << 20}) {
    EXPECT_EQ(DigestTables(plan, chunk), digests) << "chunk " << chunk;
  }
  // Any range of an array table equals the same range of the whole table.
  auto check_ranges = [&](NetTable table, const auto& values, std::size_t per_entry) {
    const std::uint32_t used = plan.Used(table);
    ASSERT_EQ(values.size(), std::size_t{used} * per_entry) << static_cast<int>(table);
    std::mt19937 rng(static_cast<unsigned>(table));
    for (int i = 0; i < 20 && used > 0; ++i) {
      const auto first = static_cast<std::uint32_t>(rng() % used);
      const auto count =
          static_cast<std::uint32_t>(1 + rng() % std::min<std::uint32_t>(used - first, 7));
      std::vector<std::uint8_t> out(count * NetTablePlan::ValueSize(table));
      plan.Fill(table, first, count, out.data());
      EXPECT_EQ(std::memcmp(out.data(), values.data() + std::size_t{first} * per_entry, out.size()),
                0)
          << "table " << static_cast<int>(table) << " [" << first << ", +" << count << ")";
    }
  };
  check_ranges(NetTable::kV4Dir, whole.v4_dir, SG_V4_DIR_SLOTS);
  check_ranges(NetTable::kV4L2, whole.v4_blocks, SG_V4_BLOCK_SLOTS);
  check_ranges(NetTable::kV6L1, whole.v6_l1, 1);
  check_ranges(NetTable::kV6L2, whole.v6_blocks, SG_V6_BLOCK_SLOTS);
  check_ranges(NetTable::kV6L3, whole.v6_nodes, SG_V6_NODE_SLOTS);
  std::vector<std::uint8_t> one(NetTablePlan::ValueSize(NetTable::kV4Dir));
  EXPECT_THROW(plan.Fill(NetTable::kV4Dir, SG_V4_DIR_BUCKETS, 1, one.data()), std::out_of_range);
  EXPECT_THROW(plan.Fill(NetTable::kV6Lpm, 0, 0, one.data()), std::logic_error);
  EXPECT_EQ(plan.Entries(NetTable::kV6L3), SG_V6_MAX_NODES);
  EXPECT_EQ(plan.Entries(NetTable::kV4L2), std::max<std::uint32_t>(plan.Used(NetTable::kV4L2), 1));
}

TEST(NetTablePlan, ChunksAndRangesMatchTheWholeTables) {
  auto p = Small();
  p.ipv6 = {Prefix6({0x20}, 12, 1),
            Prefix6({0x20, 0x01, 0x0d, 0xb8}, 32, 2),
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0, 1}, 48, 3),
            Prefix6({0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0x80}, 72, 4),  // trie
            Prefix6({0x20, 0x01, 0x0d, 0xb9, 0x12}, 40, 3),
            Prefix6({0x2a, 0x00, 0x80}, 17, 4)};
  for (std::size_t max_nodes : {0u, 1u, 2u, 3u, unsigned{SG_V6_MAX_NODES}})
    ExpectPlanMatchesWholeTables(p, max_nodes, "small");
  ExpectPlanMatchesWholeTables(policy::CompiledPolicy{.classes = {sg_class{}}}, SG_V6_MAX_NODES,
                               "empty");
}

TEST(NetTablePlan, WorldTableChunksMatchTheWholeTables) {
  auto w = testing::LoadWorldTable(testing::DefaultWorldTableDir());
  testing::AddDocumentationRanges(w);
  // (A chunk of one entry rebuilds a /32's nodes for each of them: too slow for the world.)
  ExpectPlanMatchesWholeTables(w.policy, SG_V6_MAX_NODES, "world", 5000);
  // Few nodes: most /32s with longer prefixes go to the trie.
  ExpectPlanMatchesWholeTables(w.policy, 100, "world, 100 nodes", 5000);
}

// Input order does not matter (the contract says sorted, but nothing relies on it).
TEST(NetTablePlan, SameTablesForAnyInputOrder) {
  auto w = testing::LoadWorldTable(testing::DefaultWorldTableDir());
  const auto digests = DigestTables(NetTablePlan(w.policy));
  std::mt19937 rng(3);
  std::shuffle(w.policy.ipv4.begin(), w.policy.ipv4.end(), rng);
  std::shuffle(w.policy.ipv6.begin(), w.policy.ipv6.end(), rng);
  EXPECT_EQ(DigestTables(NetTablePlan(w.policy)), digests);
}

}  // namespace
}  // namespace sovguard::net
