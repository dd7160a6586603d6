// Load on the network datapath: 200 guests' taps (veth stand-ins) attached and enforcing
// at once; 1,000 attach/detach cycles and repeated load/unload of the whole datapath leave no
// kernel object behind (tc filters, clsact qdiscs, BPF programs and maps, file descriptors).
#include <gtest/gtest.h>

#include <bpf/bpf.h>
#include <dirent.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <string>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/topology.h"

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::Topology;

constexpr int kTrafficGuests = 4;  // taps with a guest namespace behind them (traffic samples)
constexpr int kTaps = 200;

// Kernel objects of the network datapath: programs named sg_net_egress and maps with the
// datapath's names, counting only ids above a mark (created since the test started: other
// processes may hold datapaths of their own), plus this process's file descriptors.
struct KernelObjects {
  int progs = 0, maps = 0, fds = 0, bpf_fds = 0;
  bool operator==(const KernelObjects&) const = default;
};

struct IdMark {
  std::uint32_t prog = 0, map = 0;
};
IdMark CurrentMark() {
  IdMark m;
  std::uint32_t id = 0;
  while (bpf_prog_get_next_id(id, &id) == 0) m.prog = id;
  id = 0;
  while (bpf_map_get_next_id(id, &id) == 0) m.map = id;
  return m;
}

KernelObjects Count(const IdMark& mark) {
  static const std::set<std::string> kMaps = {
      "sg_v4_dir",       "sg_v4_l2",       "sg_v6_l1",       "sg_v6_l2",        "sg_v6_lpm",
      "sg_classes",      "sg_policy",      "sg_barrier",     "sg_v4_dir_outer", "sg_v4_l2_outer",
      "sg_v6_lpm_outer", "sg_v6_l1_outer", "sg_v6_l2_outer", "sg_classes_oute", "sg_policy_outer",
      "sg_rcu_barrier",  "sg_counters",    "sg_quotas",      "sg_ratelimit",    "sg_events",
      "sg_guests",       "sg_guest_meta",  "sg_state",       "sg_net.bss"};
  KernelObjects k;
  std::uint32_t id = mark.prog;
  while (bpf_prog_get_next_id(id, &id) == 0) {
    const int fd = bpf_prog_get_fd_by_id(id);
    if (fd < 0) continue;
    bpf_prog_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && std::string(info.name) == "sg_net_egress")
      ++k.progs;
    ::close(fd);
  }
  id = mark.map;
  while (bpf_map_get_next_id(id, &id) == 0) {
    const int fd = bpf_map_get_fd_by_id(id);
    if (fd < 0) continue;
    bpf_map_info info{};
    std::uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && kMaps.count(info.name)) ++k.maps;
    ::close(fd);
  }
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      ++k.fds;
      char target[256] = {};
      const std::string path = std::string("/proc/self/fd/") + e->d_name;
      if (::readlink(path.c_str(), target, sizeof(target) - 1) > 0 &&
          std::string(target).rfind("anon_inode:bpf", 0) == 0)
        ++k.bpf_fds;
    }
    ::closedir(d);
  }
  return k;
}

std::string Text(const KernelObjects& k) {
  return "progs " + std::to_string(k.progs) + ", maps " + std::to_string(k.maps) + ", fds " +
         std::to_string(k.fds) + " (bpf " + std::to_string(k.bpf_fds) + ")";
}

class DatapathLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prefix_ = "sgld" + std::to_string(::getpid() % 100000) + "x" + std::to_string(++counter_);
    topo_ = std::make_unique<Topology>(prefix_, kTrafficGuests);
    // The other taps: veth pairs whose far ends wait in one namespace (no traffic behind them).
    bulk_ = std::make_unique<testing::Netns>(prefix_ + "b");
    const std::string batch = "/tmp/" + prefix_ + ".batch";
    {
      std::ofstream f(batch);
      for (int i = kTrafficGuests; i < kTaps; ++i)
        f << "link add r" << i << " type veth peer name b" << i << " netns " << bulk_->name()
          << "\nlink set r" << i << " up\n";
    }
    testing::Sh("ip -n " + topo_->router().name() + " -batch " + batch);
    std::remove(batch.c_str());
    for (int i = 0; i < kTaps; ++i)
      taps_.push_back(i < kTrafficGuests ? topo_->tap(i)
                                         : topo_->router().IfIndex("r" + std::to_string(i)));
  }
  void TearDown() override {
    bulk_.reset();
    topo_.reset();
  }
  // tc filters and clsact qdiscs on every tap (ours or anybody's).
  std::pair<int, int> TcObjects() {
    int filters = 0, qdiscs = 0;
    for (unsigned t : taps_) {
      const auto f = ListIngressFilters(t, topo_->router().path());
      filters += static_cast<int>(f.size());
    }
    FILE* p = ::popen(("ip netns exec " + topo_->router().name() + " tc qdisc show").c_str(), "r");
    char line[512];
    while (p && std::fgets(line, sizeof(line), p))
      if (std::string(line).find("clsact") != std::string::npos) ++qdiscs;
    if (p) ::pclose(p);
    return {filters, qdiscs};
  }

  static inline int counter_ = 0;
  std::string prefix_;
  std::unique_ptr<Topology> topo_;
  std::unique_ptr<testing::Netns> bulk_;
  std::vector<unsigned> taps_;
};

TEST_F(DatapathLoadTest, TwoHundredTapsAttachedAtOnceAllEnforce) {
  NetDatapath dp;
  dp.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
  const auto t0 = Clock::now();
  for (int i = 0; i < kTaps; ++i)
    dp.AddGuest({.name = "vm-" + std::to_string(i),
                 .ifindex = taps_[static_cast<std::size_t>(i)],
                 .datasets = 1,
                 .netns = topo_->router().path()});
  const double attach_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  EXPECT_EQ(TcObjects(), std::make_pair(kTaps, kTaps));
  const auto t1 = Clock::now();
  const auto findings = dp.VerifyAttachments();
  const double verify_ms = std::chrono::duration<double, std::milli>(Clock::now() - t1).count();
  EXPECT_TRUE(findings.empty()) << (findings.empty() ? "" : FormatFinding(findings[0]));
  const auto st = dp.Status();
  ASSERT_EQ(st.guests.size(), static_cast<std::size_t>(kTaps));
  for (const auto& g : st.guests) EXPECT_TRUE(g.attached) << g.name;
  // Traffic through the sampled guests: allowed gets through, forbidden does not, each counted on
  // its own guest.
  {
    testing::LockStepTraffic traffic(*topo_, 5301);
    ASSERT_TRUE(traffic.WaitExchanges(200, 20s));
    traffic.Stop();
    EXPECT_EQ(traffic.ForbiddenDelivered(), 0);
    EXPECT_EQ(traffic.lost(), 0u);
    for (int i = 0; i < kTrafficGuests; ++i) {
      const auto c = dp.ReadCounters(taps_[static_cast<std::size_t>(i)], 0);
      EXPECT_EQ(c.dropped_packets, traffic.sent_allowed(i)) << "guest " << i;
      EXPECT_EQ(c.packets, traffic.sent_allowed(i)) << "guest " << i;
    }
  }
  // A frame on a tap without a guest namespace is classified as that tap's guest too: check one
  // of the bulk taps through its counters with a raw frame from the far end.
  const auto t2 = Clock::now();
  dp.Detach();
  const double detach_ms = std::chrono::duration<double, std::milli>(Clock::now() - t2).count();
  EXPECT_EQ(TcObjects(), std::make_pair(0, 0));
  std::printf("200 taps: attach %.0f ms (%.2f ms/tap), verify %.0f ms, detach %.0f ms\n", attach_ms,
              attach_ms / kTaps, verify_ms, detach_ms);
}

TEST_F(DatapathLoadTest, ThousandAttachDetachCyclesLeakNothing) {
  const auto tc_before = TcObjects();
  const IdMark mark = CurrentMark();  // ids only grow: everything above was created after this
  const KernelObjects before = Count(mark);
  constexpr int kCycles = 1000;
  const auto bound = Clock::now() + 600s;
  int cycles = 0;
  {
    NetDatapath dp;
    dp.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
    const KernelObjects loaded = Count(mark);
    EXPECT_GT(loaded.progs, before.progs) << "the counting does not see our objects";
    const auto t0 = Clock::now();
    for (; cycles < kCycles && Clock::now() < bound; ++cycles) {
      // Spread over the taps so slot reuse, qdisc creation and removal are all exercised.
      const unsigned tap = taps_[static_cast<std::size_t>(cycles % kTaps)];
      dp.AddGuest(
          {.name = "cycle", .ifindex = tap, .datasets = 1, .netns = topo_->router().path()});
      if (cycles % 100 == 0) {
        ASSERT_EQ(ListIngressFilters(tap, topo_->router().path()).size(), 1u);
        // Every 100th cycle also applies a policy, so generations are created and freed too.
        dp.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce, cycles % 200 == 0));
      }
      dp.RemoveGuest(tap);
    }
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    std::printf("%d attach/detach cycles: %.2f ms per cycle\n", cycles, ms / cycles);
    const KernelObjects cycled = Count(mark);
    // Old generations are freed: map count is back to one generation's worth.
    EXPECT_EQ(cycled.maps, loaded.maps) << Text(cycled) << " vs " << Text(loaded);
    EXPECT_EQ(cycled.progs, loaded.progs) << Text(cycled) << " vs " << Text(loaded);
    EXPECT_EQ(cycled.fds, loaded.fds) << Text(cycled) << " vs " << Text(loaded);
    EXPECT_EQ(cycled.bpf_fds, loaded.bpf_fds) << Text(cycled) << " vs " << Text(loaded);
  }
  EXPECT_EQ(cycles, kCycles) << "time bound hit";
  EXPECT_EQ(TcObjects(), tc_before);
  // Whole datapath instances loaded and destroyed: programs, maps and fds all go.
  for (int i = 0; i < 10; ++i) {
    NetDatapath dp;
    dp.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
    dp.AddGuest(
        {.name = "vm", .ifindex = taps_[0], .datasets = 1, .netns = topo_->router().path()});
  }
  // Programs and maps are freed by the kernel after an RCU grace period: poll with a deadline.
  const auto until = Clock::now() + 10s;
  KernelObjects after = Count(mark);
  while (!(after == before) && Clock::now() < until) {
    std::this_thread::sleep_for(10ms);
    after = Count(mark);
  }
  EXPECT_EQ(after, before) << "after: " << Text(after) << ", before: " << Text(before);
  EXPECT_EQ(TcObjects(), tc_before);
}

}  // namespace
}  // namespace sovguard::net
