// Kernel tier: storage-open prevention through fanotify permission events, as an attacker in a
// guest cgroup would test it, and the one storage-open ladder shared by the probe and the
// datapath. Children join a guest cgroup below a stand-in machine cgroup and open there, as QEMU
// would; what they actually read is counted in memory shared with the test.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "enforcer/probe/probe.h"
#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using std::chrono::steady_clock;

constexpr std::uint8_t kHealth = 0, kAudited = 1;

policy::CompiledStorage Policy(const fs::path& approved) {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth, policy::Mode::kEnforce, approved));
  s.datasets.push_back(TestDataset("audited", kAudited, policy::Mode::kAudit));
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  return s;
}

// Opens `p` `times` times (bounded); every open must fail with EPERM. Returns kEperm when all
// did, kOk when any succeeded, kOtherError otherwise.
int OpenRefusedEveryTime(const fs::path& p, int times) {
  for (int i = 0; i < times; ++i) {
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ::close(fd);
      return kOk;
    }
    if (errno != EPERM) return kOtherError;
  }
  return kEperm;
}

// Reads the whole file; returns the bytes read, or -1 when the open fails.
long ReadAll(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char buf[65536];
  long total = 0;
  for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) total += n;
  ::close(fd);
  return total;
}

class StorageFanotifyTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    MakeApprovedImage(1 << 20);
  }

  void Start(StorageOptions options = {}) {
    StorageTest::Start(Policy(approved_), std::move(options));
    const PathStatus* open = sp_->Status().Find("storage-open");
    ASSERT_NE(open, nullptr);
    // This kernel has no BPF LSM and has fanotify permission events (ENGINEERING.md): the ladder
    // must stop at fanotify. Where BPF LSM works it is selected instead, and prevents too.
    if (!VfsHooks()) {
      ASSERT_EQ(open->mechanism, "fanotify:open_perm")
          << (open->unavailable.empty() ? "" : open->unavailable.back());
    }
    ASSERT_EQ(open->guarantee, Guarantee::kPrevents);
  }
};

TEST_F(StorageFanotifyTest, GuestWithoutTheDatasetGetsEpermAndStaysAlive) {
  Start();
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(bravo, [&] { return OpenRefusedEveryTime(image_, 200); });
  EXPECT_TRUE(r.exited) << "killed by signal " << r.signal << ": nothing prevented the open";
  EXPECT_EQ(r.exit_code, kEperm);
  // The denial is reported like the programs' own: guest, dataset, path, prevented.
  std::optional<StorageEvent> seen;
  const auto deadline = steady_clock::now() + std::chrono::seconds(5);
  while (!seen && steady_clock::now() < deadline) {
    sp_->PollEvents(
        [&](const StorageEvent& e) {
          if (e.kind == "open-denied" && !seen) seen = e;
        },
        100);
  }
  ASSERT_TRUE(seen.has_value());
  EXPECT_EQ(seen->guest, "bravo");
  EXPECT_EQ(seen->dataset, "health");
  EXPECT_EQ(seen->path, fs::canonical(image_).string());
  EXPECT_EQ(seen->verdict, Verdict::kPrevented);
  // Counted for the guest and in the rung's own answers; nothing failed to be decided.
  std::uint64_t denied = 0;
  for (const auto& c : sp_->ReadCounters())
    if (c.guest == "bravo" && c.dataset == "health") denied = c.denied;
  EXPECT_EQ(denied, 200u);
  const auto& st = sp_->Status();
  if (sp_->Status().Find("storage-open")->mechanism == "fanotify:open_perm") {
    EXPECT_EQ(st.fanotify_denied, 200u);
    EXPECT_EQ(st.fanotify_failed, 0u);
  }
}

TEST_F(StorageFanotifyTest, GuestHoldingTheDatasetOpensAndReads) {
  Start();
  const auto alpha =
      StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto r = RunInCgroup(alpha, [&] { return ReadAll(image_) == (1 << 20) ? kOk : 30; });
  ExpectExited(r, kOk);
}

TEST_F(StorageFanotifyTest, UnprotectedFileOnTheSameFileSystemIsUnaffected) {
  Start();
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto plain = approved_ / "plain.img";
  WriteFile(plain, 64 << 10);
  const auto bravo = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(bravo, [&] { return ReadAll(plain) == (64 << 10) ? kOk : 30; });
  ExpectExited(r, kOk);
}

TEST_F(StorageFanotifyTest, OtherPathsToTheSameInodeAreDeniedToo) {
  Start();
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  // Made after the volume was protected: the mark is on the inode, not on a name.
  const auto link = tmp_.path() / "elsewhere.img";
  ASSERT_EQ(::link(image_.c_str(), link.c_str()), 0) << std::strerror(errno);
  const auto symlink = tmp_.path() / "sym.img";
  fs::create_symlink(image_, symlink);
  const auto bravo = StartGuest("bravo", 1ULL << kAudited);
  for (const auto& path : {link, symlink, approved_ / "." / "health.img"}) {
    const auto r = RunInCgroup(bravo, [&] { return OpenRefusedEveryTime(path, 20); });
    EXPECT_TRUE(r.exited) << path << ": signal " << r.signal;
    EXPECT_EQ(r.exit_code, kEperm) << path;
  }
  // Re-opening an inherited O_PATH descriptor through /proc/self/fd (the descriptor opened by a
  // host process, as libvirt passes descriptors to QEMU; O_PATH itself reads nothing).
  const int path_fd = ::open(image_.c_str(), O_PATH | O_CLOEXEC);
  ASSERT_GE(path_fd, 0);
  const auto r = RunInCgroup(
      bravo, [&] { return OpenRefusedEveryTime("/proc/self/fd/" + std::to_string(path_fd), 20); });
  ::close(path_fd);
  ExpectExited(r, kEperm);
}

// fanotify raises no event for an O_PATH open (it reads nothing): the tracepoint backstop judges
// the descriptor it returns, as on the fallback rung, and kills the guest without the dataset.
TEST_F(StorageFanotifyTest, OPathOpenIsLeftToTheBackstop) {
  Start();
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(bravo, [&] {
    const int fd = ::open(image_.c_str(), O_PATH | O_CLOEXEC);
    return fd < 0 ? (errno == EPERM ? kEperm : kOtherError) : kOk;
  });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == kEperm) << "exit " << r.exit_code;
}

TEST_F(StorageFanotifyTest, VolumeProtectedAfterTheGuestStartedIsMarkedThen) {
  Start();
  const auto bravo = StartGuest("bravo", 1ULL << kAudited);
  const auto later = approved_ / "later.img";
  WriteFile(later, 64 << 10);
  EXPECT_EQ(RunInCgroup(bravo, [&] { return ReadAll(later) == (64 << 10) ? kOk : 30; }).exit_code,
            kOk)
      << "not protected yet";
  sp_->ProtectVolume(later, "health", false);  // e.g. a policy reload labels a new disk
  const auto r = RunInCgroup(bravo, [&] { return OpenRefusedEveryTime(later, 20); });
  ExpectExited(r, kEperm);
}

TEST_F(StorageFanotifyTest, ProbeAndDatapathSelectTheSameRungWithTheSameGuarantee) {
  Start();
  const enforcer::ProbeReport report = enforcer::RunProbe();
  const enforcer::PathResult* probed = report.Find("storage-open");
  ASSERT_NE(probed, nullptr);
  const PathStatus* running = sp_->Status().Find("storage-open");
  EXPECT_EQ(probed->mechanism, running->mechanism);
  EXPECT_EQ(ToString(probed->guarantee), ToString(running->guarantee));
  std::printf("storage-open: probe %s (%s), datapath %s (%s)\n", probed->mechanism.c_str(),
              ToString(probed->guarantee).c_str(), running->mechanism.c_str(),
              ToString(running->guarantee).c_str());
  // The forced fallback is the same rung in both vocabularies too.
  sp_.reset();
  sp_ = std::make_unique<StorageDatapath>(
      StorageOptions{.machine_cgroup = cgroups_.machine(), .force_tracepoint_fallback = true});
  const PathStatus* fallback = sp_->Status().Find("storage-open");
  const auto& last = StorageOpenLadder().back();
  EXPECT_EQ(fallback->mechanism, last.mechanism);
  EXPECT_EQ(fallback->guarantee, last.guarantee);
  bool probe_names_it = false;
  for (const auto& a : probed->attempts) probe_names_it |= a.mechanism == last.mechanism;
  EXPECT_TRUE(probe_names_it || probed->attempts.size() < StorageOpenLadder().size())
      << "the probe tries the ladder's rungs under the ladder's names";
}

// The attacker loops forbidden opens while the daemon holding the fanotify group is killed with
// SIGKILL. Every open either fails with EPERM (group alive) or the attacker is killed by the
// tracepoint backstop (group gone, its pending events answered FAN_ALLOW by the kernel); no byte
// of the volume is ever read.
TEST_F(StorageFanotifyTest, KillingTheDaemonDuringForbiddenOpensLeavesNoGap) {
  enforcer::EnsureBpffs();
  PinDir pin;
  const auto bravo_dir = "qemu-2-bravo.libvirt-qemu";
  ForkedDaemon daemon([&](const std::function<void()>& serve) {
    StorageDatapath sp(StorageOptions{.machine_cgroup = cgroups_.machine(), .pin_dir = pin.path()});
    sp.ApplyPolicy(Policy(approved_));
    if (sp.Status().Find("storage-open")->mechanism != "fanotify:open_perm")
      throw std::runtime_error("storage-open runs " + sp.Status().Find("storage-open")->mechanism);
    sp.ProtectVolume(image_, "health", false);
    sp.ExpectGuest(bravo_dir, GuestStorage{.name = "bravo", .datasets = 1ULL << kAudited});
    serve();
  });
  if (daemon.report.starts_with("storage-open runs "))  // a VFS rung: prevents without a daemon
    GTEST_SKIP() << daemon.report << " selected: no fanotify group to kill";
  ASSERT_EQ(daemon.report, "ok");

  struct Counts {
    std::atomic<long> eperm{0}, opened{0}, bytes_read{0};
  };
  SharedWithChildren<Counts> shared;
  const auto bravo = cgroups_.Make(bravo_dir);
  const pid_t attacker = ::fork();
  ASSERT_GE(attacker, 0);
  if (attacker == 0) {
    if (!JoinCgroup(bravo)) ::_exit(100);
    // Bounded: at most 2,000,000 opens or 20 s.
    const auto end = steady_clock::now() + std::chrono::seconds(20);
    char data[4096];
    for (long i = 0; i < 2000000 && steady_clock::now() < end; ++i) {
      const int f = ::open(image_.c_str(), O_RDONLY | O_CLOEXEC);
      if (f < 0) {
        if (errno != EPERM) ::_exit(kOtherError);
        shared->eperm.fetch_add(1);
        continue;
      }
      shared->opened.fetch_add(1);
      const ssize_t got = ::read(f, data, sizeof data);
      if (got > 0) shared->bytes_read.fetch_add(got);
      ::close(f);
    }
    ::_exit(kOk);
  }
  // Kill the daemon once the attacker is refused steadily (bounded wait).
  const auto deadline = steady_clock::now() + std::chrono::seconds(15);
  while (shared->eperm.load() < 1000 && steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling a counter, bounded
  const long eperm_before = shared->eperm.load();
  ASSERT_NE(daemon.Kill(), -1);
  int status = 0;
  ASSERT_EQ(::waitpid(attacker, &status, 0), attacker);
  std::printf(
      "attacker: %ld opens refused (EPERM) before the kill, %ld in all, %ld opened, "
      "%ld bytes read, then %s\n",
      eperm_before, shared->eperm.load(), shared->opened.load(), shared->bytes_read.load(),
      WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "exited");
  EXPECT_GE(eperm_before, 1000) << "fanotify did not refuse while the daemon ran";
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the attacker outlived the daemon: exit " << WEXITSTATUS(status);
  EXPECT_EQ(shared->bytes_read.load(), 0) << "the attacker read protected data";
  EXPECT_EQ(shared->opened.load(), 0) << "an open returned a descriptor to the attacker";

  // A successor adopts the pinned state and marks the adopted volume in its own group: the
  // guest is refused with EPERM again and lives.
  StorageDatapath successor(
      StorageOptions{.machine_cgroup = cgroups_.machine(), .pin_dir = pin.path()});
  EXPECT_EQ(successor.Status().Find("storage-open")->mechanism, "fanotify:open_perm");
  const auto again = RunInCgroup(bravo, [&] { return OpenRefusedEveryTime(image_, 20); });
  ExpectExited(again, kEperm);
  successor.Detach();
}

}  // namespace
}  // namespace sovguard::storage
