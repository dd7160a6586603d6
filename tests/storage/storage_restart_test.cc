// Kernel tier, the storage path across restarts: enforcement survives a SIGKILLed daemon (pinned
// links and maps), a successor adopts the state (counters, quota windows, guests, pending names)
// and swaps programs without a gap; violation events are rate limited under a flood of one million
// denied connect() calls; the tamper check finds and repairs detached programs and altered maps.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "tests/harness/process.h"
#include "tests/harness/require.h"
#include "tests/storage/storage_guard_variant.skel.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using std::chrono::steady_clock;

constexpr std::uint8_t kHealth = 0, kAudited = 1, kMetered = 2;
constexpr std::uint64_t kQuota = 1 << 20;
constexpr const char* kForbidden = "203.0.113.7";  // US: allowed for no dataset

policy::CompiledStorage TestPolicy(const fs::path& approved) {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth, policy::Mode::kEnforce, approved));
  s.datasets.push_back(TestDataset("audited", kAudited, policy::Mode::kAudit));
  s.datasets.push_back(TestDataset("metered", kMetered));
  s.datasets.back().write = policy::Quota{kQuota, 3600};
  AddTestZones(s, (1ULL << kHealth) | (1ULL << kMetered));
  return s;
}

int WriteChunks(const fs::path& p, std::size_t chunk, std::size_t chunks, off_t at) {
  const int fd = ::open(p.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
  std::vector<char> buf(chunk, 'w');
  for (std::size_t i = 0; i < chunks; ++i) {
    if (::pwrite(fd, buf.data(), chunk, at + static_cast<off_t>(i * chunk)) !=
        static_cast<ssize_t>(chunk))
      return 30;
  }
  ::close(fd);
  return kOk;
}

double Ms(steady_clock::duration d) {
  return std::chrono::duration<double, std::milli>(d).count();
}

double ThreadCpuMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// Each test makes its own datapaths (predecessor and successor) on the fixture's machine cgroup.
class StorageRestartTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    enforcer::EnsureBpffs();
    MakeApprovedImage(1 << 20);
    metered_ = approved_ / "metered.img";
    WriteFile(metered_, 0);
  }

  StorageOptions Options() const {
    return StorageOptions{.machine_cgroup = cgroups_.machine(), .pin_dir = pin_.path()};
  }

  PinDir pin_;
  fs::path metered_;
};

const IoCounters* Find(const std::vector<IoCounters>& c, const std::string& guest,
                       const std::string& dataset) {
  for (const auto& x : c)
    if (x.guest == guest && x.dataset == dataset) return &x;
  return nullptr;
}

bool Refused(const ChildResult& r) {
  return r.signal == SIGKILL || (r.exited && r.exit_code == kEperm);
}

TEST_F(StorageRestartTest, EnforcementSurvivesSigkillAndSuccessorAdoptsEverything) {
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  const std::string bravo_name = "qemu-2-bravo.libvirt-qemu";
  // The "daemon": a pinned datapath with one guest by id, one announced by name, volumes.
  ForkedDaemon daemon([&](const std::function<void()>& serve) {
    StorageDatapath sp(Options());
    sp.ApplyPolicy(TestPolicy(approved_));
    sp.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                           GuestStorage{.name = "alpha",
                                        .datasets = (1ULL << kHealth) | (1ULL << kMetered),
                                        .disks = {{.source = image_, .dataset = "health"},
                                                  {.source = metered_, .dataset = "metered"}}});
    sp.ExpectGuest(bravo_name, GuestStorage{.name = "bravo", .datasets = 1ULL << kAudited});
    serve();
  });
  ASSERT_EQ(daemon.report, "ok");

  // Activity while the daemon runs: bytes, a quota window, a refused connect.
  EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(image_, 64 << 10, 1, 0); }).exit_code, kOk);
  EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(metered_, 64 << 10, 4, 0); }).exit_code,
            kOk);
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);

  const int status = daemon.Kill();
  ASSERT_NE(status, -1);
  ASSERT_TRUE(WIFSIGNALED(status));

  // No process holds the datapath now. Everything still enforces.
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm)
      << "cgroup/connect4 went away with the daemon";
  const auto bravo = cgroups_.Make(bravo_name);  // libvirt starts the announced guest meanwhile
  EXPECT_TRUE(Refused(RunInCgroup(bravo, [&] {
    return ::open(image_.c_str(), O_RDONLY) >= 0 ? kOk : (errno == EPERM ? kEperm : 21);
  }))) << "a guest without the dataset opened a protected volume while no daemon ran";
  EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(image_, 64 << 10, 1, 0); }).exit_code, kOk)
      << "the registered guest lost its dataset";

  // The successor adopts.
  const auto t0 = steady_clock::now();
  StorageDatapath sp(Options());
  const auto adopt = steady_clock::now() - t0;
  std::printf("adoption of the pinned storage datapath: %.1f ms\n", Ms(adopt));
  // A hang guard, not a speed (120-170 ms on a quiet host; README): CI runs Debug+ASan, -j2.
  EXPECT_LT(adopt, std::chrono::seconds(30));
  const auto& st = sp.Status();
  EXPECT_TRUE(st.adopted);
  EXPECT_EQ(st.guests, 2u) << "alpha by id and bravo through the pinned pending name";
  EXPECT_EQ(st.pending, 1u);
  EXPECT_EQ(st.volumes, 2u);
  EXPECT_EQ(sp.GuestNames(), (std::vector<std::string>{"alpha", "bravo"}));

  // Counters continued through the gap (before any ApplyPolicy: names from the pinned state).
  const auto c = sp.ReadCounters();
  const IoCounters* health = Find(c, "alpha", "health");
  const IoCounters* metered = Find(c, "alpha", "metered");
  ASSERT_NE(health, nullptr);
  ASSERT_NE(metered, nullptr);
  EXPECT_EQ(health->write_bytes, 2u * (64 << 10)) << "one write before the crash, one during";
  EXPECT_EQ(health->denied, 2u) << "the connect refused while no daemon ran is counted";
  EXPECT_EQ(metered->write_window_bytes, 4u * (64 << 10)) << "quota window reset";
  // Events queued while no daemon ran are delivered, naming the guests.
  const auto events = DrainEvents(sp);
  int connects = 0, bravo_open = 0;
  for (const auto& e : events) {
    if (e.kind == "connect-denied" && e.guest == "alpha" && e.dataset == "health") ++connects;
    if (e.kind == "open-denied" && e.guest == "bravo" && e.dataset == "health") ++bravo_open;
  }
  EXPECT_EQ(connects, 2);
  EXPECT_EQ(bravo_open, 1);

  // The daemon re-applies its policy; nothing is found altered, and the kept window still
  // counts: 13 more chunks of 64 KiB would fit a fresh 1 MiB window, not the adopted one.
  sp.ApplyPolicy(TestPolicy(approved_));
  for (const auto& f : sp.VerifyAttachments()) ADD_FAILURE() << f.kind << " " << f.detail;
  const auto r = RunInCgroup(alpha, [&] { return WriteChunks(metered_, 64 << 10, 13, 4 << 16); });
  EXPECT_TRUE(r.signal == SIGKILL || (r.exited && r.exit_code == 30)) << "exit " << r.exit_code;
  EXPECT_LE(fs::file_size(metered_), kQuota);
  sp.RegisterGuestCgroup(
      StorageDatapath::CgroupId(alpha),
      GuestStorage{.name = "alpha", .datasets = (1ULL << kHealth) | (1ULL << kMetered)});
  EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(image_, 64 << 10, 1, 0); }).exit_code, kOk);
  const auto c2 = sp.ReadCounters();
  ASSERT_NE(Find(c2, "alpha", "health"), nullptr);
  EXPECT_EQ(Find(c2, "alpha", "health")->write_bytes, 3u * (64 << 10)) << "same guest id kept";

  // An explicit Detach stops enforcing and removes the pins.
  sp.Detach();
  EXPECT_FALSE(fs::exists(pin_.path()));
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
            kOtherError);
}

// The machine cgroup removed and made again while no daemon ran (a test run or `systemctl stop
// machine.slice` between two daemons): the pinned state names a cgroup that no longer exists, so no
// process can be under it and it guards nothing. Without on_stale_state it is refused as before;
// with it the successor reports it (the daemon measures it) before releasing it, starts over on
// the current cgroup, and a guest cgroup without the dataset is refused the volume the old state
// protected.
TEST_F(StorageRestartTest, StateOfAMachineCgroupReplacedWhileNoDaemonRanIsReleasedAndStartedOver) {
  const auto policy = TestPolicy(approved_);
  std::uint64_t old_id = 0;
  {
    StorageDatapath sp(Options());
    sp.ApplyPolicy(policy);
    sp.ProtectVolume(image_, "health", false);
    old_id = sp.Status().machine_cgroup_id;
  }  // the daemon is gone; the pinned state stays
  ASSERT_EQ(::rmdir(cgroups_.machine().c_str()), 0) << strerror(errno);
  ASSERT_EQ(::mkdir(cgroups_.machine().c_str(), 0755), 0) << strerror(errno);
  ASSERT_NE(StorageDatapath::CgroupId(cgroups_.machine()), old_id);

  EXPECT_THROW(StorageDatapath{Options()}, StorageError) << "refused without on_stale_state";
  std::vector<std::string> reported;
  StorageOptions options = Options();
  options.on_stale_state = [&](const std::string& detail) {
    // Reported while the stale pins still exist: measured before anything is released.
    EXPECT_TRUE(fs::exists(pin_.path() / "sg_storage_state"));
    reported.push_back(detail);
  };
  std::unique_ptr<StorageDatapath> sp;
  ASSERT_NO_THROW(sp = std::make_unique<StorageDatapath>(options));
  ASSERT_EQ(reported.size(), 1u);
  EXPECT_NE(reported[0].find("machine cgroup id " + std::to_string(old_id)), std::string::npos)
      << reported[0];
  EXPECT_NE(reported[0].find("no longer exists"), std::string::npos) << reported[0];
  EXPECT_FALSE(sp->Status().adopted);
  EXPECT_EQ(sp->Status().machine_cgroup_id, StorageDatapath::CgroupId(cgroups_.machine()));
  ASSERT_EQ(sp->ReleasedStaleVolumes().size(), 1u);
  EXPECT_EQ(sp->ReleasedStaleVolumes()[0].path, fs::canonical(image_));
  EXPECT_EQ(sp->ReleasedStaleVolumes()[0].dataset, "health");

  sp->ApplyPolicy(policy);
  for (const auto& v : sp->ReleasedStaleVolumes()) sp->ProtectVolume(v.path, v.dataset, v.readonly);
  for (const auto& f : sp->VerifyAttachments()) ADD_FAILURE() << f.kind << " " << f.detail;
  const auto intruder = cgroups_.Make("qemu-9-intruder.libvirt-qemu");
  EXPECT_TRUE(Refused(RunInCgroup(intruder, [&] {
    return ::open(image_.c_str(), O_RDONLY) >= 0 ? kOk : (errno == EPERM ? kEperm : 21);
  }))) << "a guest without the dataset opened the protected volume after the restart";
  // The cgroup programs sit on the new machine cgroup: a guest holding the dataset opens its
  // volume and is refused a forbidden endpoint.
  const auto holder = cgroups_.Make("qemu-10-holder.libvirt-qemu");
  sp->RegisterGuestCgroup(StorageDatapath::CgroupId(holder),
                          GuestStorage{.name = "holder", .datasets = 1ULL << kHealth});
  EXPECT_EQ(RunInCgroup(holder, [&] { return WriteChunks(image_, 4096, 1, 0); }).exit_code, kOk);
  EXPECT_EQ(RunInCgroup(holder, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm)
      << "cgroup/connect4 is not on the new machine cgroup";
}

// Pinned state of another machine cgroup that still exists may still guard processes there: it
// is refused even with on_stale_state, nothing is reported, and its owner adopts it intact.
TEST_F(StorageRestartTest, StateOfAnotherMachineCgroupThatStillExistsIsRefused) {
  {
    StorageDatapath sp(Options());
    sp.ApplyPolicy(TestPolicy(approved_));
    sp.ProtectVolume(image_, "health", false);
  }
  TestCgroups other;
  StorageOptions options = Options();
  options.machine_cgroup = other.machine();
  int reported = 0;
  options.on_stale_state = [&](const std::string&) { ++reported; };
  try {
    StorageDatapath sp(options);
    ADD_FAILURE() << "adopted or released the state of a live machine cgroup";
  } catch (const StorageError& e) {
    EXPECT_NE(std::string(e.what()).find("still exists"), std::string::npos) << e.what();
  }
  EXPECT_EQ(reported, 0);
  StorageDatapath owner(Options());
  EXPECT_TRUE(owner.Status().adopted);
  EXPECT_EQ(owner.Status().volumes, 1u);
}

TEST_F(StorageRestartTest, DestroyingAnUnpinnedDatapathDetaches) {
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  {
    StorageDatapath sp(StorageOptions{.machine_cgroup = cgroups_.machine()});
    sp.ApplyPolicy(TestPolicy(approved_));
    sp.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                           GuestStorage{.name = "alpha", .datasets = 1ULL << kHealth});
    EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
  }
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
            kOtherError);
}

// A predecessor of another version pinned links of programs this one does not have and maps it
// does not use (the per-syscall tracepoint programs and the in-flight hash of earlier versions).
// The successor attaches its own programs first, then releases those pins: none is left, the old
// link goes, and the guest's I/O is counted across the hand-over.
TEST_F(StorageRestartTest, SuccessorOfAnotherProgramSetReleasesItsPinsAndKeepsCounting) {
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  const fs::path old_link_pin = pin_.path() / "link_sg_exit_pread64";
  const fs::path old_map_pin = pin_.path() / "sg_io_inflight";
  std::uint32_t old_link_id = 0;
  {
    StorageDatapath sp(Options());
    sp.ApplyPolicy(TestPolicy(approved_));
    sp.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                           GuestStorage{.name = "alpha",
                                        .datasets = 1ULL << kHealth,
                                        .disks = {{.source = image_, .dataset = "health"}}});
    EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(image_, 64 << 10, 1, 0); }).exit_code,
              kOk);
    // The other version's pins: a link under a program name this version does not have (a
    // second pin of one of ours: released only when both pins are gone) and a map of its own.
    base::UniqueFd link(bpf_obj_get((pin_.path() / "link_sg_sys_exit").c_str()));
    ASSERT_TRUE(link) << std::strerror(errno);
    ASSERT_EQ(bpf_obj_pin(link.Get(), old_link_pin.c_str()), 0) << std::strerror(errno);
    bpf_link_info info{};
    std::uint32_t len = sizeof info;
    ASSERT_EQ(bpf_obj_get_info_by_fd(link.Get(), &info, &len), 0);
    old_link_id = info.id;
    base::UniqueFd map(bpf_map_create(BPF_MAP_TYPE_HASH, "sg_io_inflight", 8, 16, 16, nullptr));
    ASSERT_TRUE(map) << std::strerror(errno);
    ASSERT_EQ(bpf_obj_pin(map.Get(), old_map_pin.c_str()), 0) << std::strerror(errno);
  }  // the predecessor exits; its pins stay

  StorageDatapath sp(Options());
  EXPECT_TRUE(sp.Status().adopted);
  EXPECT_FALSE(fs::exists(old_link_pin)) << "a link of a program this version does not have";
  EXPECT_FALSE(fs::exists(old_map_pin)) << "a map this version does not use";
  std::set<std::string> link_pins;
  for (const auto& p : sp.Programs()) link_pins.insert(p.pin.filename().string());
  for (const auto& e : fs::directory_iterator(pin_.path())) {
    const std::string name = e.path().filename().string();
    if (name.starts_with("link_")) EXPECT_TRUE(link_pins.contains(name)) << name;
  }
  EXPECT_TRUE(test::PollUntil(std::chrono::seconds(10),
                              [&] {
                                const int fd = bpf_link_get_fd_by_id(old_link_id);
                                if (fd >= 0) ::close(fd);
                                return fd < 0 && errno == ENOENT;
                              }))
      << "the predecessor's link " << old_link_id << " still exists";
  for (const auto& f : sp.VerifyAttachments()) ADD_FAILURE() << f.kind << " " << f.detail;

  EXPECT_EQ(RunInCgroup(alpha, [&] { return WriteChunks(image_, 64 << 10, 1, 0); }).exit_code, kOk);
  const auto c = sp.ReadCounters();
  ASSERT_NE(Find(c, "alpha", "health"), nullptr);
  EXPECT_EQ(Find(c, "alpha", "health")->write_bytes, 2u * (64 << 10))
      << "one write before the hand-over, one after";
  sp.Detach();
  EXPECT_FALSE(fs::exists(pin_.path())) << "a pin of either version was left";
}

TEST_F(StorageRestartTest, UpgradeSwapsEveryProgramWithoutAWindowForAForbiddenConnect) {
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  const auto charlie = cgroups_.Make("qemu-3-charlie.libvirt-qemu");
  std::vector<AttachedProgram> before;
  {
    StorageDatapath old(Options());
    old.ApplyPolicy(TestPolicy(approved_));
    old.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                            GuestStorage{.name = "alpha", .datasets = 1ULL << kHealth});
    old.RegisterGuestCgroup(StorageDatapath::CgroupId(charlie),
                            GuestStorage{.name = "charlie", .datasets = 1ULL << kAudited});
    old.ProtectVolume(image_, "health", false);
    before = old.Programs();
  }  // the old daemon stops cleanly: its pinned programs keep enforcing
  // Tracepoint links too (a destroyed libbpf perf link would have disabled its event).
  EXPECT_TRUE(Refused(RunInCgroup(charlie, [&] {
    return ::open(image_.c_str(), O_RDONLY) >= 0 ? kOk : (errno == EPERM ? kEperm : 21);
  }))) << "the open path stopped enforcing when the daemon stopped";
  ConnectLoop loop(alpha, kForbidden, 5'000'000, std::chrono::seconds(60));
  loop.WaitAttempts(1000);
  const std::uint64_t at_swap = loop.attempts();
  std::size_t size = 0;
  const void* elf = storage_guard_variant__elf_bytes(&size);
  const auto t0 = steady_clock::now();
  StorageDatapath upgraded(
      StorageOptions{.machine_cgroup = cgroups_.machine(),
                     .pin_dir = pin_.path(),
                     .program_object = {static_cast<const std::uint8_t*>(elf), size}});
  const auto swap = steady_clock::now() - t0;
  const std::uint64_t after_swap = loop.attempts();
  loop.WaitAttempts(after_swap + 1000);
  loop.Stop();
  std::printf(
      "upgrade: %.1f ms; connect attempts %llu (%llu during the swap), refused %llu, "
      "other %llu\n",
      Ms(swap), static_cast<unsigned long long>(loop.attempts()),
      static_cast<unsigned long long>(after_swap - at_swap),
      static_cast<unsigned long long>(loop.eperm()), static_cast<unsigned long long>(loop.other()));
  EXPECT_GT(after_swap, at_swap) << "the loop did not run during the swap";
  EXPECT_EQ(loop.other(), 0u) << "a forbidden connect was not refused during the upgrade";
  EXPECT_EQ(loop.eperm(), loop.attempts());

  const auto after = upgraded.Programs();
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    ASSERT_EQ(after[i].name, before[i].name);
    EXPECT_NE(after[i].prog_id, before[i].prog_id) << after[i].name;
    // The variant differs in the guest lookup every judging program inlines.
    if (after[i].name == "sg_connect4" || after[i].name == "sg_cgroup_dev" ||
        after[i].name == "sg_sys_exit" || after[i].name == "sg_sys_enter") {
      EXPECT_NE(after[i].tag, before[i].tag) << after[i].name << ": the variant has other code";
    }
    if (after[i].hook.starts_with("cgroup/")) {
      EXPECT_EQ(after[i].link_id, before[i].link_id)
          << after[i].name << ": a cgroup link is updated in place (bpf_link_update)";
    }
  }
  for (const auto& f : upgraded.VerifyAttachments()) ADD_FAILURE() << f.kind << " " << f.detail;
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
  upgraded.Detach();
}

// Runs `calls` connect() calls to a forbidden address in a child of `cgroup` while this thread's
// poller drains events; returns what happened.
struct FloodResult {
  std::uint64_t eperm = 0;
  int delivered = 0;
  double wall_ms = 0, poller_cpu_ms = 0;
};

FloodResult Flood(StorageDatapath& sp, const fs::path& cgroup, std::uint64_t calls) {
  SharedWithChildren<std::atomic<std::uint64_t>> eperm_seen;
  FloodResult out;
  std::atomic<bool> child_done{false};
  std::atomic<int> delivered{0};
  double cpu = 0;
  std::thread poller([&] {
    const double c0 = ThreadCpuMs();
    // The daemon's loop: poll with a timeout; bounded by the child's end plus a drained ring.
    for (int quiet = 0; quiet < 3;) {
      const int n = sp.PollEvents([&](const StorageEvent&) { delivered.fetch_add(1); }, 50);
      quiet = child_done.load() && n == 0 ? quiet + 1 : 0;
    }
    cpu = ThreadCpuMs() - c0;
  });
  const auto t0 = steady_clock::now();
  const auto r = RunInCgroup(
      cgroup,
      [&] {
        if (::unshare(CLONE_NEWNET) != 0) return kNoNetns;
        const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        const sockaddr_in a = NbdAddress(kForbidden);
        std::uint64_t eperm = 0;
        for (std::uint64_t i = 0; i < calls; ++i) {
          if (::connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof a) != 0 && errno == EPERM)
            ++eperm;
        }
        eperm_seen->store(eperm);
        return kOk;
      },
      std::chrono::seconds(50));
  out.wall_ms = Ms(steady_clock::now() - t0);
  child_done.store(true);
  poller.join();
  EXPECT_TRUE(r.exited && r.exit_code == kOk);
  out.eperm = eperm_seen->load();
  out.delivered = delivered.load();
  out.poller_cpu_ms = cpu;
  return out;
}

TEST_F(StorageRestartTest, MillionDeniedConnectsAreAllRefusedAndEventsAreRateLimited) {
  constexpr std::uint32_t kRate = 100, kBurst = 200;  // the defaults (as the net path's)
  StorageDatapath sp(StorageOptions{.machine_cgroup = cgroups_.machine()});
  ASSERT_EQ(StorageOptions{}.events_per_sec, kRate);
  ASSERT_EQ(StorageOptions{}.event_burst, kBurst);
  sp.ApplyPolicy(TestPolicy(approved_));
  struct Run {
    const char* guest;
    std::uint64_t calls;
    FloodResult r;
  };
  std::vector<Run> runs = {{"small", 10'000, {}}, {"flood", 1'000'000, {}}};
  int id = 1;
  for (auto& run : runs) {
    const auto cg =
        cgroups_.Make("qemu-" + std::to_string(id++) + "-" + run.guest + ".libvirt-qemu");
    sp.RegisterGuestCgroup(StorageDatapath::CgroupId(cg),
                           GuestStorage{.name = run.guest, .datasets = 1ULL << kHealth});
    run.r = Flood(sp, cg, run.calls);
    const auto suppressed = sp.SuppressedEvents();
    const std::uint64_t supp = suppressed.contains(run.guest) ? suppressed.at(run.guest) : 0;
    const double allowed = kBurst + kRate * run.r.wall_ms / 1000.0 + 5;
    std::printf(
        "%s: %llu connect() in %.0f ms wall, all EPERM: %s; events delivered %d (bound "
        "%.0f), suppressed %llu; poller thread CPU %.1f ms\n",
        run.guest, static_cast<unsigned long long>(run.calls), run.r.wall_ms,
        run.r.eperm == run.calls ? "yes" : "NO", run.r.delivered, allowed,
        static_cast<unsigned long long>(supp), run.r.poller_cpu_ms);
    EXPECT_EQ(run.r.eperm, run.calls) << "the limiter must never change a verdict";
    EXPECT_LE(run.r.delivered, allowed);
    EXPECT_GE(run.r.delivered, static_cast<int>(kBurst)) << "the burst is delivered";
    EXPECT_EQ(supp, run.calls - static_cast<std::uint64_t>(run.r.delivered));
    const auto c = sp.ReadCounters();
    const IoCounters* h = Find(c, run.guest, "health");
    ASSERT_NE(h, nullptr);
    EXPECT_EQ(h->denied, run.calls) << "every refusal is counted, limited or not";
  }
  EXPECT_EQ(sp.Status().events_suppressed, runs[0].calls + runs[1].calls -
                                               static_cast<std::uint64_t>(runs[0].r.delivered) -
                                               static_cast<std::uint64_t>(runs[1].r.delivered));
  // The consumer's CPU follows the events delivered (bounded by the rate), not the flood: 100x
  // the calls may cost the poller no more than its wake-ups over the longer wall time.
  const double per_second_small = runs[0].r.poller_cpu_ms / (runs[0].r.wall_ms / 1000.0 + 0.15);
  const double per_second_flood = runs[1].r.poller_cpu_ms / (runs[1].r.wall_ms / 1000.0 + 0.15);
  std::printf("poller CPU per wall second: %.2f ms (10k) vs %.2f ms (1M)\n", per_second_small,
              per_second_flood);
  EXPECT_LT(runs[1].r.poller_cpu_ms, 0.05 * runs[1].r.wall_ms + 50)
      << "the poller burns CPU in proportion to the flood";
}

TEST_F(StorageRestartTest, TamperCheckFindsAndRepairsDetachedProgramsAndAlteredMaps) {
  StorageDatapath sp(Options());
  sp.ApplyPolicy(TestPolicy(approved_));
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  sp.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                         GuestStorage{.name = "alpha", .datasets = 1ULL << kHealth});
  sp.ProtectVolume(image_, "health", false);
  // The generation in force, as a root editing the pinned maps reads it (0 when unreadable: the
  // edits below then miss and their expectations fail).
  const auto active_generation = [&] {
    std::uint32_t zero = 0, gen = 0;
    const int fd = bpf_obj_get((pin_.path() / "sg_storage_active").c_str());
    EXPECT_GE(fd, 0);
    if (fd >= 0) {
      EXPECT_EQ(bpf_map_lookup_elem(fd, &zero, &gen), 0);
      ::close(fd);
    }
    return gen;
  };
  const auto timed_verify = [&] {
    const auto t0 = steady_clock::now();
    auto f = sp.VerifyAttachments();
    std::printf("VerifyAttachments: %.2f ms, %zu finding(s)\n", Ms(steady_clock::now() - t0),
                f.size());
    for (const auto& x : f)
      std::printf("  %s %s: %s\n", std::string(FindingKindName(x.kind)).c_str(), x.object.c_str(),
                  x.detail.c_str());
    return f;
  };
  const auto has = [](const std::vector<StorageFinding>& f, const std::string& kind,
                      const std::string& object) {
    return std::any_of(f.begin(), f.end(), [&](const StorageFinding& x) {
      return FindingKindName(x.kind) == kind && x.object == object;
    });
  };
  EXPECT_TRUE(timed_verify().empty());
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);

  const auto link_id_now = [](const StorageDatapath& d) {
    for (const auto& p : d.Programs())
      if (p.name == "sg_connect4") return p.link_id;
    return 0u;
  };
  // 1. Someone detaches our cgroup/connect4 link (by id, as bpftool would).
  std::uint32_t link_id = 0;
  for (const auto& p : sp.Programs())
    if (p.name == "sg_connect4") link_id = p.link_id;
  ASSERT_NE(link_id, 0u);
  {
    const int fd = bpf_link_get_fd_by_id(link_id);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bpf_link_detach(fd), 0) << std::strerror(errno);
    ::close(fd);
  }
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
            kOtherError)
      << "the detach did not take effect (test premise)";
  auto f = timed_verify();
  EXPECT_TRUE(has(f, "program-detached", "sg_connect4"));
  auto repaired = sp.Repair();
  EXPECT_TRUE(has(repaired.repaired, "program-detached", "sg_connect4"));
  EXPECT_TRUE(repaired.remaining.empty());
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
  EXPECT_TRUE(timed_verify().empty());

  // 1b. Someone swaps the program inside our link for a pass-everything one (the variant object
  // with its own empty maps: no machine cgroup configured, so it judges nobody).
  {
    std::unique_ptr<storage_guard_variant, void (*)(storage_guard_variant*)> other(
        storage_guard_variant__open(), storage_guard_variant__destroy);
    ASSERT_TRUE(other);
    bpf_program* prog = nullptr;
    bpf_object__for_each_program(prog, other->obj) {
      bpf_program__set_autoload(prog, prog == other->progs.sg_connect4);
    }
    ASSERT_EQ(storage_guard_variant__load(other.get()), 0);
    const int fd = bpf_link_get_fd_by_id(link_id_now(sp));
    ASSERT_GE(fd, 0);
    ASSERT_EQ(bpf_link_update(fd, bpf_program__fd(other->progs.sg_connect4), nullptr), 0)
        << std::strerror(errno);
    ::close(fd);
    EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
              kOtherError);
    f = timed_verify();
    EXPECT_TRUE(has(f, "program-replaced", "sg_connect4"));
    repaired = sp.Repair();
    EXPECT_TRUE(has(repaired.repaired, "program-replaced", "sg_connect4"));
    EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
    EXPECT_TRUE(timed_verify().empty());
  }

  // 2. Someone edits the classes table from outside: the US class now allows health.
  {
    const int fd = bpf_obj_get((pin_.path() / "sg_storage_classes").c_str());
    ASSERT_GE(fd, 0);
    const std::uint32_t gen = active_generation();
    const std::uint32_t us = gen * SG_MAX_CLASSES + 2;  // class 2 of the generation in force
    const sg_class open_class{.allowed_datasets = ~0ULL, .country = 0x5553, .zone = 0, .flags = 0};
    ASSERT_EQ(bpf_map_update_elem(fd, &us, &open_class, BPF_ANY), 0);
    ::close(fd);
  }
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
            kOtherError);
  // ... and removes the protection of a volume, and a pinned link.
  {
    const int fd = bpf_obj_get((pin_.path() / "sg_volumes").c_str());
    ASSERT_GE(fd, 0);
    struct stat st {};
    ASSERT_EQ(::stat(image_.c_str(), &st), 0);
    const sg_volume_key key{.dev = (std::uint64_t{major(st.st_dev)} << 20) | minor(st.st_dev),
                            .ino = st.st_ino};
    ASSERT_EQ(bpf_map_delete_elem(fd, &key), 0);
    ::close(fd);
  }
  ASSERT_EQ(::unlink((pin_.path() / "link_sg_cgroup_dev").c_str()), 0);
  f = timed_verify();
  EXPECT_TRUE(has(f, "policy-map-altered", "sg_storage_classes"));
  EXPECT_TRUE(has(f, "policy-map-altered", "sg_volumes"));
  EXPECT_TRUE(has(f, "pin-missing", "sg_cgroup_dev"));
  repaired = sp.Repair();
  EXPECT_EQ(repaired.repaired.size(), f.size());
  EXPECT_TRUE(repaired.remaining.empty());
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
  EXPECT_TRUE(fs::exists(pin_.path() / "link_sg_cgroup_dev"));
  EXPECT_TRUE(timed_verify().empty());

  // 2b. A /32 for the forbidden address added to the world-sized endpoint table in force, in DE's
  // class (which allows health): found, and deleted again by the repair.
  {
    const int fd = bpf_obj_get((pin_.path() / "sg_endpoints4").c_str());
    ASSERT_GE(fd, 0);
    const std::uint32_t gen = active_generation();
    const sg_storage_lpm4_key key{
        .prefixlen = 32 + 32, .gen = gen, .addr = NbdAddress(kForbidden).sin_addr.s_addr};
    const std::uint16_t de_class = 1;
    ASSERT_EQ(bpf_map_update_elem(fd, &key, &de_class, BPF_ANY), 0);
    EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code,
              kOtherError);
    f = timed_verify();
    EXPECT_TRUE(has(f, "policy-map-altered", "sg_endpoints4"));
    repaired = sp.Repair();
    EXPECT_TRUE(repaired.remaining.empty());
    // The kernel's longest match for the address is US's /24 again: the added /32 is gone.
    std::uint16_t match = 0;
    EXPECT_EQ(bpf_map_lookup_elem(fd, &key, &match), 0);
    EXPECT_EQ(match, 2);
    ::close(fd);
  }
  EXPECT_EQ(RunInCgroup(alpha, [] { return ConnectInEmptyNetns(kForbidden); }).exit_code, kEperm);
  EXPECT_TRUE(timed_verify().empty());

  // 3. A guest entry rewritten to hold every dataset.
  {
    const int fd = bpf_obj_get((pin_.path() / "sg_storage_guests").c_str());
    ASSERT_GE(fd, 0);
    const std::uint64_t cg = StorageDatapath::CgroupId(alpha);
    sg_storage_guest g{};
    ASSERT_EQ(bpf_map_lookup_elem(fd, &cg, &g), 0);
    g.datasets = ~0ULL;
    ASSERT_EQ(bpf_map_update_elem(fd, &cg, &g, BPF_ANY), 0);
    ::close(fd);
  }
  EXPECT_TRUE(has(timed_verify(), "guest-entry-altered", "sg_storage_guests"));
  sp.Repair();
  EXPECT_TRUE(timed_verify().empty());
  sp.Detach();
}

TEST_F(StorageRestartTest, TamperCheckDurationWithWorldSizedTable) {
  StorageDatapath sp(StorageOptions{.machine_cgroup = cgroups_.machine()});
  auto p = TestPolicy(approved_);
  for (std::uint32_t i = 0; i < 175'000; ++i) p.ipv4.push_back({0x01000000u + (i << 8), 24, 1});
  sp.ApplyPolicy(p);
  const auto t0 = steady_clock::now();
  const auto f = sp.VerifyAttachments();
  const auto took = steady_clock::now() - t0;
  const auto t1 = steady_clock::now();
  const auto quick = sp.VerifyAttachments(StorageVerifyOptions{.compare_endpoints = false});
  const auto took_quick = steady_clock::now() - t1;
  std::printf(
      "VerifyAttachments with %zu IPv4 prefixes: %.0f ms; without the endpoint tables: "
      "%.2f ms\n",
      p.ipv4.size(), Ms(took), Ms(took_quick));
  EXPECT_TRUE(f.empty());
  EXPECT_TRUE(quick.empty());
  EXPECT_LT(took, std::chrono::seconds(60));  // a hang guard, not a speed
}

// Tracepoint and tp_btf links cannot be detached by id (the kernel has no detach for them): only
// dropping every reference removes them, which the pin check catches (pin-missing). Should a kernel
// allow it, the check must say so.
TEST_F(StorageRestartTest, NonCgroupLinksCannotBeDetachedUnnoticed) {
  StorageDatapath sp(Options());
  sp.ApplyPolicy(TestPolicy(approved_));
  std::vector<std::string> detached;
  for (const auto& p : sp.Programs()) {
    if (p.hook.starts_with("cgroup/")) continue;
    const int fd = bpf_link_get_fd_by_id(p.link_id);
    ASSERT_GE(fd, 0) << p.name;
    const int rc = bpf_link_detach(fd);
    const int err = errno;
    ::close(fd);
    if (rc == 0) {
      detached.push_back(p.name);
    } else {
      EXPECT_EQ(err, EOPNOTSUPP) << p.name;
    }
  }
  const auto f = sp.VerifyAttachments();
  for (const auto& name : detached) {
    EXPECT_TRUE(
        std::any_of(f.begin(), f.end(), [&](const StorageFinding& x) { return x.object == name; }))
        << name << " was detached and the check did not notice";
  }
  std::printf("non-cgroup links detachable by id on this kernel: %zu\n", detached.size());
  sp.Detach();
}

// Policy reloads are atomic: 100 reloads alternating between two policies that number their
// classes differently (a table rewritten in place would, for a moment, map the forbidden prefix
// to the other policy's allowed class), while a guest connects to the forbidden address in a loop.
TEST_F(StorageRestartTest, HundredReloadsUnderLoadNeverLetAForbiddenConnectThrough) {
  StorageDatapath sp(StorageOptions{.machine_cgroup = cgroups_.machine()});
  const auto a = TestPolicy(approved_);
  auto b = a;
  std::swap(b.classes[1], b.classes[2]);  // DE is class 2, US class 1
  b.ipv4 = {{0xC6336400u, 24, 2}, {0xCB007100u, 24, 1}};
  sp.ApplyPolicy(a);
  const auto alpha = cgroups_.Make("qemu-1-alpha.libvirt-qemu");
  sp.RegisterGuestCgroup(StorageDatapath::CgroupId(alpha),
                         GuestStorage{.name = "alpha", .datasets = 1ULL << kHealth});
  ConnectLoop loop(alpha, kForbidden, 20'000'000, std::chrono::seconds(100));
  loop.WaitAttempts(1000);
  const std::uint64_t start = loop.attempts();
  const auto t0 = steady_clock::now();
  // At least 100 reloads, and on until 50,000 connects overlapped them (bounded: 3,000 reloads).
  int reloads = 0;
  while (reloads < 3000 && (reloads < 100 || loop.attempts() - start < 50'000))
    sp.ApplyPolicy(reloads++ % 2 == 0 ? b : a);
  const auto took = steady_clock::now() - t0;
  const std::uint64_t during = loop.attempts() - start;
  loop.Stop();
  std::printf("%d reloads in %.0f ms while %llu forbidden connects ran: %llu not refused\n",
              reloads, Ms(took), static_cast<unsigned long long>(during),
              static_cast<unsigned long long>(loop.other()));
  EXPECT_GE(reloads, 100);
  EXPECT_GT(during, 1000u) << "the connect loop did not overlap the reloads";
  EXPECT_EQ(loop.other(), 0u) << "a reload let a forbidden connect through";
  EXPECT_TRUE(sp.VerifyAttachments().empty());
}

}  // namespace
}  // namespace sovguard::storage
