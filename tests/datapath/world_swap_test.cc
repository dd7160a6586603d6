// "No gap" with the full world table: the whole table (175,198 IPv4 + 67,842 IPv6 prefixes plus
// the documentation ranges) is written into the inactive generation and switched, alternately
// into both slots, while lock-step traffic flows from a guest namespace to an allowed
// (198.51.100.10, DE) and a forbidden (203.0.113.10, US) destination. The two policies number
// their classes differently, so a frame that saw half of one generation would be misclassified.
// Counted at the destination: 0 forbidden datagrams delivered, and no more allowed ones lost than
// the same run loses with the same traffic and no swaps.
#include <gtest/gtest.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/topology.h"
#include "tests/datapath/world_table.h"

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The same jurisdictions with every class id but 0 renumbered (n - id).
policy::CompiledPolicy Renumbered(const policy::CompiledPolicy& a) {
  policy::CompiledPolicy b = a;
  const auto n = static_cast<std::uint16_t>(a.classes.size());
  auto map = [n](std::uint16_t id) { return id == 0 ? id : static_cast<std::uint16_t>(n - id); };
  for (std::uint16_t id = 1; id < n; ++id) b.classes[map(id)] = a.classes[id];
  for (auto& e : b.ipv4) e.class_id = map(e.class_id);
  for (auto& e : b.ipv6) e.class_id = map(e.class_id);
  b.digest[0] ^= 1;
  return b;
}

TEST(WorldTableSwap, FullTableSwapsUnderTrafficLeakNothingAndLoseNothing) {
  auto world = testing::LoadWorldTable(testing::DefaultWorldTableDir());
  testing::AddDocumentationRanges(world);
  const policy::CompiledPolicy a = world.policy;
  const policy::CompiledPolicy b = Renumbered(a);

  testing::Topology topo("sgws" + std::to_string(::getpid()), 1, false);
  NetDatapath dp(NetDatapathOptions{});
  dp.ApplyPolicy(a);
  dp.AddGuest({.name = "vm-swap",
               .ifindex = topo.tap(0),
               .datasets = 1,  // eu-eea (enforce): DE allowed, US forbidden
               .netns = topo.router().path()});

  // Baseline, same run: the same lock-step traffic with no swap.
  std::uint64_t baseline_lost = 0, baseline_sent = 0;
  {
    testing::LockStepTraffic traffic(topo, 5101);
    ASSERT_TRUE(traffic.WaitExchanges(200, 20s)) << "traffic does not flow without swaps";
    traffic.Stop();
    baseline_lost = traffic.lost();
    baseline_sent = traffic.sent_allowed();
    EXPECT_EQ(traffic.ForbiddenDelivered(), 0);
  }

  // All 100 swaps, each with traffic crossing it; the time bound only guards against a hang.
  constexpr int kSwaps = 100;
  constexpr auto kBound = 600s;
  testing::LockStepTraffic traffic(topo, 5102, std::chrono::seconds(630));
  ASSERT_TRUE(traffic.WaitExchanges(10, 10s));
  const auto start = Clock::now();
  int swaps = 0, swaps_with_traffic = 0;
  for (; swaps < kSwaps && Clock::now() - start < kBound; ++swaps) {
    const std::uint64_t before = traffic.sent_allowed();
    dp.ApplyPolicy(swaps % 2 ? a : b);
    swaps_with_traffic += traffic.sent_allowed() > before;
  }
  const auto elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  traffic.Stop();

  std::printf(
      "world table swaps: %d in %.1f s (%.0f ms each); allowed sent %llu lost %llu, forbidden "
      "sent %llu; baseline without swaps: sent %llu lost %llu\n",
      swaps, elapsed, swaps ? 1000 * elapsed / swaps : 0.0,
      static_cast<unsigned long long>(traffic.sent_allowed()),
      static_cast<unsigned long long>(traffic.lost()),
      static_cast<unsigned long long>(traffic.sent_forbidden()),
      static_cast<unsigned long long>(baseline_sent),
      static_cast<unsigned long long>(baseline_lost));
  EXPECT_EQ(swaps, kSwaps) << "the swaps did not finish within the hang guard";
  EXPECT_EQ(swaps_with_traffic, swaps) << "some swaps happened with no traffic flowing";
  EXPECT_EQ(traffic.ForbiddenDelivered(), 0) << "forbidden datagrams delivered";
  EXPECT_LE(traffic.lost(), baseline_lost) << "allowed datagrams lost beyond the baseline";
  EXPECT_EQ(traffic.received_allowed() + traffic.lost(), traffic.sent_allowed());
  const auto c = dp.ReadCounters(topo.tap(0), 0);
  EXPECT_GE(c.dropped_packets, traffic.sent_forbidden());
  EXPECT_EQ(dp.Status().swaps, static_cast<std::uint64_t>(swaps) + 1);
}

}  // namespace
}  // namespace sovguard::net
