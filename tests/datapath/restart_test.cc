// Restart hand-over and upgrade without a gap, with real traffic:
// - a separate process holding the datapath is SIGKILLed while guests send; the pinned program and
//   maps keep enforcing with no process at all, and a successor adopts everything (guests, slots,
//   counters, quota use) within 1 s, then applies a new policy;
// - an "upgraded" program (another object, another tag) replaces the old one on every tap with
//   BPF_TC_F_REPLACE while traffic flows: no forbidden datagram passes, no allowed one is lost.
#include <gtest/gtest.h>

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/sg_net_variant.skel.h"
#include "tests/datapath/topology.h"

extern char** environ;

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::LockStepTraffic;
using testing::Topology;

// A bpffs mounted on a fresh directory, unmounted and removed on destruction.
class TempBpffs {
 public:
  TempBpffs() {
    if (!::mkdtemp(dir_)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
    if (::mount("bpf", dir_, "bpf", 0, nullptr) != 0) {
      const int err = errno;
      ::rmdir(dir_);
      throw std::runtime_error(std::string("mount bpffs: ") + std::strerror(err));
    }
  }
  ~TempBpffs() {
    ::umount2(dir_, MNT_DETACH);
    ::rmdir(dir_);
  }
  std::string path() const { return dir_; }

 private:
  char dir_[32] = "/tmp/sgdp-bpffs-XXXXXX";
};

// The holder process: spawned (fork+exec), its stdout read up to "ready", killed on destruction.
class Holder {
 public:
  Holder(const std::string& pin_dir, const std::string& netns, const std::string& ifindexes) {
    int out[2], in[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(in, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, out[1], STDOUT_FILENO);
    posix_spawn_file_actions_adddup2(&fa, in[0], STDIN_FILENO);
    const std::string exe = SG_DP_HOLDER;
    std::vector<std::string> args = {exe, pin_dir, netns, ifindexes};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, exe.c_str(), &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    ::close(in[0]);
    out_ = out[0];
    in_ = in[1];
    if (rc != 0) throw std::runtime_error(std::string("posix_spawn: ") + std::strerror(rc));
  }
  ~Holder() {
    if (pid_ > 0) Kill();
    ::close(out_);
    ::close(in_);
  }
  // The "ready <id> <tag>" line, or "" at the deadline / on exit.
  std::string WaitReady(std::chrono::milliseconds deadline) {
    std::string line;
    const auto end = Clock::now() + deadline;
    while (Clock::now() < end) {
      pollfd p{.fd = out_, .events = POLLIN, .revents = 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (::poll(&p, 1, static_cast<int>(left.count()) + 1) != 1) break;
      char c;
      if (::read(out_, &c, 1) != 1) break;
      if (c == '\n') return line;
      line += c;
    }
    return "";
  }
  void Kill() {
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1, in_ = -1;
};

std::string Unique(const char* what) {
  static int n = 0;
  return std::string("sg") + what + std::to_string(::getpid() % 100000) + "x" + std::to_string(++n);
}

TEST(DatapathRestartTest, SigkillWhileTrafficFlowsLeaksNothingAndSuccessorAdoptsEverything) {
  Topology topo(Unique("rs"), 2);
  TempBpffs bpffs;
  const std::string taps = std::to_string(topo.tap(0)) + "," + std::to_string(topo.tap(1));
  Holder holder(bpffs.path(), topo.router().path(), taps);
  const std::string ready = holder.WaitReady(60s);
  ASSERT_EQ(ready.rfind("ready ", 0), 0u) << "holder did not get ready: '" << ready << "'";
  std::uint32_t old_id = 0;
  std::string old_tag;
  std::istringstream(ready.substr(6)) >> old_id >> old_tag;

  LockStepTraffic traffic(topo, 5101);
  ASSERT_TRUE(traffic.WaitExchanges(20, 10s)) << "no traffic before the kill";
  holder.Kill();
  // No process holds the datapath now: traffic goes on through the pinned program.
  const std::uint64_t at_kill = traffic.received_allowed();
  ASSERT_TRUE(traffic.WaitExchanges(50, 10s)) << "traffic stopped after the kill";
  const std::uint64_t in_gap = traffic.received_allowed() - at_kill;

  const auto t0 = Clock::now();
  NetDatapath second(NetDatapathOptions{.pin_dir = bpffs.path(), .detach_on_destroy = true});
  const auto adopted = second.Adopt();
  const auto adopt_time = Clock::now() - t0;
  const double adopt_ms = std::chrono::duration<double, std::milli>(adopt_time).count();
  std::printf("restart: %llu allowed exchanges with no process; construct + Adopt() = %.1f ms\n",
              static_cast<unsigned long long>(in_gap), adopt_ms);
  // A hang guard, not a speed (211-443 ms on a quiet host; README): CI runs Debug+ASan, -j2.
  EXPECT_LT(adopt_time, 30s) << "adoption took " << adopt_ms << " ms";

  ASSERT_EQ(adopted.size(), 2u);
  ASSERT_EQ(second.AdoptedGuests().size(), 2u);
  const ProgramIdentity ours = second.program();
  EXPECT_NE(ours.id, old_id);
  for (int i = 0; i < 2; ++i) {
    const auto& a = adopted[static_cast<std::size_t>(i)];
    EXPECT_EQ(a.config.name, "vm-" + std::to_string(i));
    EXPECT_EQ(a.config.ifindex, topo.tap(i));
    EXPECT_EQ(a.config.netns, topo.router().path());
    EXPECT_EQ(a.config.datasets, 1u);
    EXPECT_EQ(a.slot, static_cast<std::uint32_t>(i));
    EXPECT_TRUE(a.tap_present);
    ASSERT_TRUE(a.previous_filter.has_value()) << "the killed process's filter was not found";
    EXPECT_EQ(a.previous_filter->program.id, old_id);
    EXPECT_EQ(a.previous_filter->program.tag, old_tag);
    EXPECT_TRUE(a.attached);
    const auto filters = ListIngressFilters(topo.tap(i), topo.router().path());
    ASSERT_EQ(filters.size(), 1u);
    EXPECT_EQ(filters[0].program.id, ours.id) << "our program did not replace the old one";
  }
  EXPECT_TRUE(second.policy_loaded());
  const auto st = second.Status();
  EXPECT_EQ(st.swaps, 1u) << "swap count not adopted";
  EXPECT_EQ(st.policy_digest, testing::TestPolicy(policy::Mode::kEnforce).digest);
  EXPECT_TRUE(second.VerifyAttachments().empty());

  ASSERT_TRUE(traffic.WaitExchanges(20, 10s));
  traffic.Stop();
  EXPECT_EQ(traffic.ForbiddenDelivered(), 0) << "forbidden datagrams passed";
  EXPECT_EQ(traffic.lost(), 0u) << "allowed datagrams lost";
  // Counters and quota use include the traffic before the kill: nothing was reset.
  for (int i = 0; i < 2; ++i) {
    const auto c = second.ReadCounters(topo.tap(i), 0);
    const std::uint64_t sent = traffic.sent_allowed(i);
    EXPECT_EQ(c.packets, sent) << "guest " << i;
    EXPECT_EQ(c.dropped_packets, sent) << "guest " << i;  // one forbidden per allowed one
    EXPECT_EQ(c.quota_used_bytes, sent * LockStepTraffic::kFrameLen) << "guest " << i;
  }

  // A fresh policy applies on the adopted state, and it enforces.
  second.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce, true));
  EXPECT_EQ(second.Status().swaps, 2u);
  {
    LockStepTraffic more(topo, 5102);
    ASSERT_TRUE(more.WaitExchanges(10, 10s));
    more.Stop();
    EXPECT_EQ(more.ForbiddenDelivered(), 0);
    EXPECT_EQ(more.lost(), 0u);
  }
  EXPECT_TRUE(second.VerifyAttachments().empty());
  // The successor owns what the predecessor created: Detach removes the qdiscs too.
  second.Detach();
  second.Unpin();
  EXPECT_FALSE(topo.HasClsact(0));
  EXPECT_FALSE(topo.HasClsact(1));
}

TEST(DatapathRestartTest, UpgradedProgramReplacesTheOldOneOnEveryTapWithoutAGap) {
  constexpr int kGuests = 3;
  Topology topo(Unique("up"), kGuests);
  TempBpffs bpffs;
  std::size_t variant_size = 0;
  const auto* variant = static_cast<const std::uint8_t*>(sg_net_variant__elf_bytes(&variant_size));
  auto options = [&](bool use_variant) {
    NetDatapathOptions o{.pin_dir = bpffs.path(), .detach_on_destroy = false};
    if (use_variant) o.program_object = std::span<const std::uint8_t>(variant, variant_size);
    return o;
  };
  std::string variant_tag, builtin_tag;
  {
    NetDatapath first(options(true));
    first.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
    for (int i = 0; i < kGuests; ++i)
      first.AddGuest({.name = "vm-" + std::to_string(i),
                      .ifindex = topo.tap(i),
                      .datasets = 1,
                      .netns = topo.router().path()});
    variant_tag = first.program().tag;
  }
  LockStepTraffic traffic(topo, 5103);
  ASSERT_TRUE(traffic.WaitExchanges(20, 10s));
  // Alternate old and new objects: each step is an upgrade (or downgrade) under traffic.
  int with_traffic = 0;
  constexpr int kUpgrades = 10;
  std::unique_ptr<NetDatapath> last;
  for (int step = 0; step < kUpgrades; ++step) {
    const bool to_variant = step % 2 == 1;
    last.reset();  // the predecessor exits (its filters stay, detach_on_destroy = false)
    last = std::make_unique<NetDatapath>(options(to_variant));
    NetDatapath& next = *last;
    const ProgramIdentity ours = next.program();
    (to_variant ? variant_tag : builtin_tag) = ours.tag;
    const std::uint64_t before = traffic.sent_allowed();
    const auto adopted = next.Adopt();
    with_traffic += traffic.sent_allowed() > before;
    ASSERT_EQ(adopted.size(), static_cast<std::size_t>(kGuests));
    for (int i = 0; i < kGuests; ++i) {
      const auto& a = adopted[static_cast<std::size_t>(i)];
      ASSERT_TRUE(a.previous_filter.has_value());
      EXPECT_EQ(a.previous_filter->program.tag, to_variant ? builtin_tag : variant_tag);
      const auto filters = ListIngressFilters(topo.tap(i), topo.router().path());
      ASSERT_EQ(filters.size(), 1u);
      EXPECT_EQ(filters[0].program.id, ours.id);
      EXPECT_EQ(filters[0].program.tag, ours.tag);
    }
    EXPECT_TRUE(next.VerifyAttachments({.hash_tables = false}).empty());
    ASSERT_TRUE(traffic.WaitExchanges(3, 10s));
  }
  traffic.Stop();
  last->Detach();
  last->Unpin();
  EXPECT_NE(variant_tag, builtin_tag) << "the variant object must have another tag";
  std::printf(
      "upgrade: %d program replacements on %d taps, %d with traffic in flight, %llu "
      "allowed / %llu forbidden datagrams\n",
      kUpgrades, kGuests, with_traffic, static_cast<unsigned long long>(traffic.sent_allowed()),
      static_cast<unsigned long long>(traffic.sent_forbidden()));
  // A replace takes a few ms on a loaded 2-core machine: the sender thread is not always scheduled
  // inside it, but across the steps it must have been, most of the time.
  EXPECT_GE(with_traffic, kUpgrades / 2) << "replacements happened with no traffic flowing";
  EXPECT_EQ(traffic.ForbiddenDelivered(), 0) << "forbidden datagrams passed during a replace";
  EXPECT_EQ(traffic.lost(), 0u) << "allowed datagrams lost during a replace";
  EXPECT_EQ(traffic.received_allowed(), traffic.sent_allowed());
  for (int i = 0; i < kGuests; ++i) EXPECT_FALSE(topo.HasClsact(i));
}

// A tap that disappeared while no daemon ran (guest shut down meanwhile): Adopt reports it, the
// daemon removes it, the other guest is taken over normally.
TEST(DatapathRestartTest, TapGoneDuringTheGapIsReportedAndRemovable) {
  Topology topo(Unique("tg"), 2);
  TempBpffs bpffs;
  {
    NetDatapath first(NetDatapathOptions{.pin_dir = bpffs.path(), .detach_on_destroy = false});
    first.ApplyPolicy(testing::TestPolicy(policy::Mode::kEnforce));
    for (int i = 0; i < 2; ++i)
      first.AddGuest({.name = "vm-" + std::to_string(i),
                      .ifindex = topo.tap(i),
                      .datasets = 1,
                      .netns = topo.router().path()});
  }
  topo.router().Ip("link del r1");
  NetDatapath second(NetDatapathOptions{.pin_dir = bpffs.path()});
  const auto adopted = second.Adopt();
  ASSERT_EQ(adopted.size(), 2u);
  EXPECT_TRUE(adopted[0].tap_present);
  EXPECT_TRUE(adopted[0].attached);
  EXPECT_FALSE(adopted[1].tap_present);
  EXPECT_FALSE(adopted[1].attached);
  EXPECT_EQ(adopted[1].config.name, "vm-1");
  const auto findings = second.VerifyAttachments({.hash_tables = false});
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].kind, TamperKind::kTapMissing);
  EXPECT_EQ(findings[0].guest, "vm-1");
  const auto r = second.Repair({.hash_tables = false});
  EXPECT_TRUE(r.repaired.empty());
  EXPECT_EQ(r.remaining.size(), 1u) << "the daemon reconciles a missing tap, not Repair";
  second.RemoveGuest(topo.tap(1));
  EXPECT_TRUE(second.VerifyAttachments().empty());
  // Its slot is free again for the next guest.
  EXPECT_EQ(second.AddGuest({.name = "vm-2", .ifindex = topo.tap(1) + 1000, .attach = false}), 1u);
  const auto filters = ListIngressFilters(topo.tap(0), topo.router().path());
  ASSERT_EQ(filters.size(), 1u);
  EXPECT_EQ(filters[0].program.id, second.program().id);
  second.Detach();
  second.Unpin();
  EXPECT_FALSE(topo.HasClsact(0));
}

}  // namespace
}  // namespace sovguard::net
