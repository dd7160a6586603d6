// Kernel tier: the storage path with libvirt's systemd layout (systemd-machined, Debian 12):
// <cgroup2>/machine.slice/machine-qemu\x2dN\x2dNAME.scope/libvirt/{emulator,vcpu0}. This host has
// no systemd as PID 1, so the test makes the same directories itself below a test-owned parent,
// in the order machined and libvirt make them (scope, then libvirt/, then emulator/ and vcpuN/),
// and forked children join them as QEMU's threads would.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using std::chrono::steady_clock;

constexpr std::uint8_t kHealth = 0, kOther = 1;

policy::CompiledStorage TestPolicy(const fs::path& approved) {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth, policy::Mode::kEnforce, approved));
  s.datasets.push_back(TestDataset("other", kOther));
  AddTestZones(s, 1ULL << kHealth);
  return s;
}

// <cgroup2>/sgt-systemd-<unique>/machine.slice; every directory below is removed deepest first on
// destruction (cgroup directories go with rmdir only).
class SystemdTree {
 public:
  SystemdTree() {
    const auto root = enforcer::FindCgroup2Mount();
    if (!root) throw std::runtime_error("no cgroup2 mount");
    top_ = *root / ("sgt-systemd-" + UniqueSuffix());
    slice_ = top_ / "machine.slice";
    fs::create_directories(slice_);
  }
  ~SystemdTree() { RemoveTree(top_); }
  SystemdTree(const SystemdTree&) = delete;
  SystemdTree& operator=(const SystemdTree&) = delete;

  static void RemoveTree(const fs::path& dir) {
    std::error_code ec;
    std::vector<fs::path> dirs;
    for (auto it = fs::recursive_directory_iterator(dir, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) dirs.push_back(it->path());
    }
    std::sort(dirs.begin(), dirs.end(), [](const fs::path& a, const fs::path& b) {
      return a.string().size() > b.string().size();  // children before their parents
    });
    for (const auto& d : dirs) ::rmdir(d.c_str());
    ::rmdir(dir.c_str());
  }

  const fs::path& slice() const { return slice_; }

 private:
  fs::path top_, slice_;
};

class StorageSystemdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (kernel tier)");
    image_ = MakeApprovedImage(tmp_.path(), 1 << 20);
    approved_ = image_.parent_path();
    sp_ = std::make_unique<StorageDatapath>(StorageOptions{.machine_cgroup = tree_.slice()});
    sp_->ApplyPolicy(TestPolicy(approved_));
  }

  bool Prevents() { return OpenPrevented(*sp_); }

  // What machined does (the scope), then libvirt (libvirt/, emulator/, vcpu0/). Returns emulator/.
  fs::path MakeGuestDirs(const std::string& scope_name) {
    const fs::path scope = tree_.slice() / scope_name;
    fs::create_directory(scope);
    scopes_after_mkdir_.push_back(sp_->Status().guests);
    fs::create_directory(scope / "libvirt");
    fs::create_directory(scope / "libvirt" / "emulator");
    fs::create_directory(scope / "libvirt" / "vcpu0");
    return scope / "libvirt" / "emulator";
  }

  std::optional<StorageEvent> WaitEvent(const std::function<bool(const StorageEvent&)>& want) {
    return testing::WaitEvent(*sp_, want);
  }

  TempDir tmp_;
  SystemdTree tree_;
  fs::path approved_, image_;
  std::unique_ptr<StorageDatapath> sp_;
  std::vector<std::size_t> scopes_after_mkdir_;  // Status().guests right after each scope mkdir
};

TEST_F(StorageSystemdTest, LayoutIsSystemdForAMachineSlice) {
  const auto& st = sp_->Status();
  EXPECT_EQ(st.layout, CgroupLayout::kSystemd) << st.layout_reason;
  EXPECT_NE(st.layout_reason.find("ends in .slice"), std::string::npos) << st.layout_reason;
  EXPECT_EQ(st.machine_cgroup, tree_.slice());
  EXPECT_EQ(st.machine_cgroup_id, StorageDatapath::CgroupId(tree_.slice()));
  EXPECT_EQ(sp_->GuestCgroupName(7, "vm1"), R"(machine-qemu\x2d7\x2dvm1.scope)");
  // The cgroupfs stand-in of the other tests keeps the cgroupfs layout.
  TestCgroups plain;
  StorageDatapath other(StorageOptions{.machine_cgroup = plain.machine()});
  EXPECT_EQ(other.Status().layout, CgroupLayout::kCgroupfs);
  EXPECT_EQ(other.GuestCgroupName(7, "vm1"), "qemu-7-vm1.libvirt-qemu");
  // An explicit layout wins over the name.
  StorageDatapath forced(
      StorageOptions{.machine_cgroup = plain.machine(), .layout = CgroupLayout::kSystemd});
  EXPECT_EQ(forced.Status().layout, CgroupLayout::kSystemd);
}

TEST_F(StorageSystemdTest, ScopeAnnouncedByNameIsRegisteredAtMkdirBeforeAnyProcessJoins) {
  const std::string scope = sp_->GuestCgroupName(7, "vm1");
  sp_->ExpectGuest(scope, GuestStorage{.name = "vm1",
                                       .datasets = 1ULL << kHealth,
                                       .disks = {{.source = image_, .dataset = "health"}}});
  EXPECT_EQ(sp_->Status().pending, 1u);
  EXPECT_EQ(sp_->Status().guests, 0u) << "nothing exists yet";
  const auto emulator = MakeGuestDirs(scope);
  // Registered by the scope's mkdir itself, with no process anywhere below it yet; libvirt/,
  // emulator/ and vcpu0/ (deeper levels) add nothing.
  ASSERT_EQ(scopes_after_mkdir_.size(), 1u);
  EXPECT_EQ(scopes_after_mkdir_[0], 1u) << "cgroup_mkdir did not register the announced scope";
  EXPECT_EQ(sp_->Status().guests, 1u);
  std::string procs;
  std::ifstream(tree_.slice() / scope / "cgroup.procs") >> procs;
  EXPECT_TRUE(procs.empty());
  // QEMU's main thread in <scope>/libvirt/emulator and a vCPU thread: the guest, with its dataset
  // (were the registered cgroup not the scope, the ancestor lookup would find no guest and the
  // open of a protected volume would be refused).
  EXPECT_EQ(RunInCgroup(emulator, [&] { return OpenAndClose(image_, O_RDWR); }).exit_code, kOk);
  EXPECT_EQ(
      RunInCgroup(emulator.parent_path() / "vcpu0", [&] { return OpenAndClose(image_, O_RDONLY); })
          .exit_code,
      kOk);
}

TEST_F(StorageSystemdTest, GuestWithoutTheDatasetInLibvirtEmulatorIsRefused) {
  sp_->ExpectGuest(sp_->GuestCgroupName(7, "vm1"),
                   GuestStorage{.name = "vm1",
                                .datasets = 1ULL << kHealth,
                                .disks = {{.source = image_, .dataset = "health"}}});
  MakeGuestDirs(sp_->GuestCgroupName(7, "vm1"));
  sp_->ExpectGuest(sp_->GuestCgroupName(8, "vm2"),
                   GuestStorage{.name = "vm2", .datasets = 1ULL << kOther});
  const auto emulator = MakeGuestDirs(sp_->GuestCgroupName(8, "vm2"));
  const auto r = RunInCgroup(emulator, [&] { return OpenAndClose(image_, O_RDONLY); });
  const auto e = ExpectStoppedAndReported(*sp_, r, Prevents(), "open-denied", "vm2");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->dataset, "health");
  EXPECT_EQ(e->path, fs::canonical(image_).string());
}

TEST_F(StorageSystemdTest, ForbiddenConnectFromLibvirtEmulatorGetsEperm) {
  sp_->ExpectGuest(sp_->GuestCgroupName(9, "nbd"),
                   GuestStorage{.name = "nbd", .datasets = 1ULL << kHealth});
  const auto emulator = MakeGuestDirs(sp_->GuestCgroupName(9, "nbd"));
  EXPECT_EQ(RunInCgroup(emulator, [] { return ConnectInEmptyNetns("203.0.113.7"); }).exit_code,
            kEperm);
  // The allowed zone passes the program (and then finds no route in the empty namespace).
  EXPECT_EQ(RunInCgroup(emulator, [] { return ConnectInEmptyNetns("198.51.100.7"); }).exit_code,
            kOtherError);
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "connect-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, "nbd");
  EXPECT_EQ(e->address, "203.0.113.7:10809");
  EXPECT_EQ(e->verdict, Verdict::kPrevented);
}

TEST_F(StorageSystemdTest, UnannouncedScopeIsFailClosed) {
  sp_->ProtectVolume(image_, "health", false);
  const auto emulator = MakeGuestDirs(sp_->GuestCgroupName(10, "stranger"));
  EXPECT_EQ(scopes_after_mkdir_.back(), 0u);
  const auto r = RunInCgroup(emulator, [&] { return OpenAndClose(image_, O_RDONLY); });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == kEperm)
      << "exit " << r.exit_code << " signal " << r.signal;
}

TEST_F(StorageSystemdTest, ScopeNameLongerThanTheKernelKeyIsMatchedByItsPrefix) {
  // Every '-' of the machine name becomes "\x2d": real guest names pass the 63-byte key.
  const std::string guest = "customer-a-db-primary-eu-west-1";
  const std::string scope = sp_->GuestCgroupName(11, guest);
  ASSERT_GT(scope.size(), SG_STORAGE_NAME_LEN - 1u) << scope;
  sp_->ExpectGuest(scope, GuestStorage{.name = guest,
                                       .datasets = 1ULL << kHealth,
                                       .disks = {{.source = image_, .dataset = "health"}}});
  const auto emulator = MakeGuestDirs(scope);
  EXPECT_EQ(scopes_after_mkdir_.back(), 1u) << "the long scope was not registered";
  EXPECT_EQ(RunInCgroup(emulator, [&] { return OpenAndClose(image_, O_RDWR); }).exit_code, kOk);
  // Another guest without the dataset, also with a long name, stays refused.
  const std::string other = "customer-b-db-replica-eu-west-2";
  sp_->ExpectGuest(sp_->GuestCgroupName(12, other),
                   GuestStorage{.name = other, .datasets = 1ULL << kOther});
  const auto other_emulator = MakeGuestDirs(sp_->GuestCgroupName(12, other));
  const auto r = RunInCgroup(other_emulator, [&] { return OpenAndClose(image_, O_RDONLY); });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == kEperm)
      << "exit " << r.exit_code << " signal " << r.signal;
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "open-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, other);
  EXPECT_EQ(sp_->Status().pending, 2u);
  sp_->RemoveGuest(guest);
  EXPECT_EQ(sp_->Status().pending, 1u);
}

TEST_F(StorageSystemdTest, RunningGuestRegisteredByScopeIdAfterRestart) {
  // The daemon's reconcile path: the scope exists already, its id is registered.
  const std::string scope = sp_->GuestCgroupName(13, "running");
  const auto emulator = MakeGuestDirs(scope);
  sp_->ProtectVolume(image_, "health", false);
  sp_->RegisterGuestCgroup(StorageDatapath::CgroupId(sp_->Status().machine_cgroup / scope),
                           GuestStorage{.name = "running", .datasets = 1ULL << kHealth});
  EXPECT_EQ(RunInCgroup(emulator, [&] { return OpenAndClose(image_, O_RDWR); }).exit_code, kOk);
}

TEST_F(StorageSystemdTest, RecreatedMachineSliceIsReported) {
  EXPECT_TRUE(sp_->VerifyAttachments().empty());
  ASSERT_EQ(::rmdir(tree_.slice().c_str()), 0);  // e.g. `systemctl stop machine.slice`
  auto found = sp_->VerifyAttachments();
  auto replaced = std::find_if(found.begin(), found.end(), [](const StorageFinding& f) {
    return FindingKindName(f.kind) == "machine-cgroup-replaced";
  });
  ASSERT_NE(replaced, found.end());
  EXPECT_NE(replaced->detail.find("gone"), std::string::npos) << replaced->detail;
  fs::create_directory(tree_.slice());  // started again: a new cgroup without our programs
  found = sp_->VerifyAttachments();
  replaced = std::find_if(found.begin(), found.end(), [](const StorageFinding& f) {
    return FindingKindName(f.kind) == "machine-cgroup-replaced";
  });
  ASSERT_NE(replaced, found.end());
  EXPECT_NE(replaced->detail.find("now cgroup id"), std::string::npos) << replaced->detail;
  const auto repair = sp_->Repair();
  EXPECT_TRUE(std::any_of(
      repair.remaining.begin(), repair.remaining.end(),
      [](const StorageFinding& f) { return FindingKindName(f.kind) == "machine-cgroup-replaced"; }))
      << "Repair cannot move the programs: it must say so";
}

}  // namespace
}  // namespace sovguard::storage
