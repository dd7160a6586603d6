// Load on the storage path: 200 guests' cgroups registered at once, every one enforced;
// 1,000 register/remove cycles with nothing left behind in the kernel or in this process.
// A stand-in "machine" cgroup is used (tests/storage/storage_test_util.h), not libvirt's.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <string>

#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using Clock = std::chrono::steady_clock;

constexpr int kGuests = 200;
constexpr int kCycles = 1000;
constexpr std::uint8_t kHealth = 0;

policy::CompiledStorage TestPolicy(const fs::path& approved) {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth, policy::Mode::kEnforce, approved));
  AddTestZones(s, 1ULL << kHealth);
  return s;
}

// Entries of every BPF map this process holds, by map name (hash maps grow with guests; arrays
// are constant), plus this process's file descriptors: what a leak would show.
struct Held {
  std::map<std::string, int> entries;
  int fds = 0;
  bool operator==(const Held&) const = default;
};

Held CountHeld() {
  Held h;
  std::map<std::uint32_t, int> seen;  // map id -> an fd of ours
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      ++h.fds;
      std::ifstream info(std::string("/proc/self/fdinfo/") + e->d_name);
      std::string line;
      while (std::getline(info, line)) {
        if (line.rfind("map_id:", 0) == 0)
          seen.emplace(std::stoul(line.substr(7)), std::stoi(e->d_name));
      }
    }
    ::closedir(d);
  }
  for (const auto& [id, fd] : seen) {
    bpf_map_info info{};
    std::uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) continue;
    if (info.type == BPF_MAP_TYPE_RINGBUF || info.key_size == 0) continue;
    std::vector<std::uint8_t> key(info.key_size), next(info.key_size);
    int n = 0;
    void* prev = nullptr;
    while (n <= static_cast<int>(info.max_entries) &&
           bpf_map_get_next_key(fd, prev, next.data()) == 0) {
      key = next;
      prev = key.data();
      ++n;
    }
    h.entries[std::string(info.name) + "#" + std::to_string(id)] = n;  // names are cut at 15
  }
  return h;
}

// A forbidden connect from inside `cgroup`, in a network namespace of the test's own (so nothing
// could leave the host even if enforcement were broken): EPERM expected.
int ConnectForbidden(const fs::path& cgroup, const std::string& netns) {
  return RunInCgroup(cgroup, [&] { return ConnectInNetns(netns, "203.0.113.7"); }).exit_code;
}

class StorageLoadTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    netns_ = "sgt-sload-" + UniqueSuffix();
    ASSERT_EQ(
        std::system(("ip netns add " + netns_ + " && ip -n " + netns_ + " link set lo up").c_str()),
        0);
    MakeApprovedImage(64 << 10);
    Start(TestPolicy(approved_));
    sp_->ProtectVolume(image_, "health", false);
  }
  void TearDown() override {
    sp_.reset();
    if (!netns_.empty()) (void)std::system(("ip netns del " + netns_ + " 2>/dev/null").c_str());
  }
  // Registered at `start begin` before the cgroup exists, as the daemon does for libvirt.
  fs::path StartGuest(const std::string& name, bool health) {
    if (!health) return StorageTest::StartGuest(name, 0);
    return StorageTest::StartGuest(name, 1ULL << kHealth,
                                   {GuestDisk{.source = image_, .dataset = "health"}});
  }

  std::string netns_;
};

TEST_F(StorageLoadTest, TwoHundredGuestCgroupsAtOnceAllEnforce) {
  std::vector<fs::path> cgroups;
  const auto t0 = Clock::now();
  for (int i = 0; i < kGuests; ++i)
    cgroups.push_back(StartGuest("load" + std::to_string(i), i % 2 == 0));
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  std::printf("storage load: %d guest cgroups registered in %.1f ms (%.2f ms each)\n", kGuests, ms,
              ms / kGuests);
  EXPECT_EQ(sp_->Status().guests, static_cast<std::size_t>(kGuests));
  // Every guest cgroup is known to the kernel by id (turned from its announced name at mkdir).
  int guest_maps = 0;
  for (const auto& [name, n] : CountHeld().entries) {
    if (name.rfind("sg_storage_gue", 0) != 0) continue;  // sg_storage_guests, ..._guest_meta
    ++guest_maps;
    EXPECT_EQ(n, kGuests) << name;
  }
  EXPECT_GE(guest_maps, 1);
  const bool prevents = Prevents();
  int allowed_ok = 0, denied_ok = 0, connect_denied = 0;
  for (int i = 0; i < kGuests; ++i) {
    const auto r = RunInCgroup(cgroups[i], [&] { return OpenAndClose(image_, O_RDONLY); });
    if (i % 2 == 0) {
      allowed_ok += r.exited && r.exit_code == kOk;
    } else {
      denied_ok += prevents ? (r.exited && r.exit_code == kEperm) : (r.signal == SIGKILL);
    }
    // Network storage residency binds the datasets a guest holds.
    if (i % 2 == 0) connect_denied += ConnectForbidden(cgroups[i], netns_) == kEperm;
  }
  EXPECT_EQ(allowed_ok, kGuests / 2) << "guests holding the dataset opened their volume";
  EXPECT_EQ(denied_ok, kGuests / 2) << "guests without it were refused (or killed)";
  EXPECT_EQ(connect_denied, kGuests / 2) << "every dataset holder's forbidden connect got EPERM";
}

TEST_F(StorageLoadTest, ThousandRegisterRemoveCyclesLeakNothing) {
  // One cycle first so lazily created state (ring buffer, first map entries) is in the baseline.
  auto cycle = [&](int i, bool check) {
    const std::string name = "cyc" + std::to_string(i);
    const fs::path cg = StartGuest(name, true);
    if (check) {
      EXPECT_EQ(ConnectForbidden(cg, netns_), kEperm) << "cycle " << i;
    }
    sp_->RemoveGuest(name);
    ASSERT_EQ(::rmdir(cg.c_str()), 0) << cg;
  };
  cycle(-1, true);
  sp_->PollEvents([](const StorageEvent&) {}, 0);
  const Held before = CountHeld();
  const auto t0 = Clock::now();
  for (int i = 0; i < kCycles; ++i) {
    cycle(i, i % 100 == 0);
    if (HasFatalFailure()) return;
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  sp_->PollEvents([](const StorageEvent&) {}, 0);
  const Held after = CountHeld();
  std::printf("storage load: %d register/remove cycles in %.0f ms (%.2f ms each); fds %d -> %d\n",
              kCycles, ms, ms / kCycles, before.fds, after.fds);
  for (const auto& [name, n] : after.entries)
    std::printf("  map %-16s entries %d -> %d\n", name.c_str(),
                before.entries.count(name) ? before.entries.at(name) : -1, n);
  EXPECT_EQ(after, before) << "kernel map entries or file descriptors leaked";
  EXPECT_EQ(sp_->Status().guests, 0u);
  EXPECT_EQ(sp_->Status().pending, 0u);
}

}  // namespace
}  // namespace sovguard::storage
