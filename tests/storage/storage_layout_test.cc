// Unit tier: which cgroup layout libvirt uses on a host (systemd-machined or not) and the guest
// directory names of each layout, against fake root trees.
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "enforcer/storage/storage_datapath.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

namespace fs = std::filesystem;

// A fake "/" (a scratch directory, removed on destruction) with only the files a test puts there.
class FakeRoot {
 public:
  void Dir(const std::string& rel) const { fs::create_directories(path() / rel); }
  void File(const std::string& rel) const {
    fs::create_directories((path() / rel).parent_path());
    std::ofstream(path() / rel) << "[D-BUS Service]\n";
  }
  const fs::path& path() const { return tmp_.path(); }

 private:
  testing::TempDir tmp_;
};

constexpr const char* kMachined =
    "usr/share/dbus-1/system-services/org.freedesktop.machine1.service";

TEST(CgroupLayout, NoSystemdMeansCgroupfs) {
  FakeRoot root;
  const auto d = DetectCgroupLayout(root.path());
  EXPECT_EQ(d.layout, CgroupLayout::kCgroupfs);
  EXPECT_NE(d.reason.find("not PID 1"), std::string::npos) << d.reason;
}

TEST(CgroupLayout, MachinedWithoutSystemdAsPid1IsCgroupfs) {
  // As on this CI host: machined's files are installed (and /run/systemd/machines may exist) but
  // systemd is not PID 1, so libvirt cannot register guests with it.
  FakeRoot root;
  root.File(kMachined);
  root.Dir("run/systemd/machines");
  EXPECT_EQ(DetectCgroupLayout(root.path()).layout, CgroupLayout::kCgroupfs);
}

TEST(CgroupLayout, SystemdWithoutMachinedIsCgroupfs) {
  FakeRoot root;
  root.Dir("run/systemd/system");
  const auto d = DetectCgroupLayout(root.path());
  EXPECT_EQ(d.layout, CgroupLayout::kCgroupfs);
  EXPECT_NE(d.reason.find("systemd-container"), std::string::npos) << d.reason;
}

TEST(CgroupLayout, SystemdWithActivatableMachinedIsSystemd) {
  // Debian 12 default with systemd-container installed: machined is started by D-Bus on demand.
  FakeRoot root;
  root.Dir("run/systemd/system");
  root.File(kMachined);
  const auto d = DetectCgroupLayout(root.path());
  EXPECT_EQ(d.layout, CgroupLayout::kSystemd);
  EXPECT_NE(d.reason.find("org.freedesktop.machine1.service"), std::string::npos) << d.reason;
}

TEST(CgroupLayout, SystemdWithRunningMachinedIsSystemd) {
  FakeRoot root;
  root.Dir("run/systemd/system");
  root.Dir("run/systemd/machines");
  EXPECT_EQ(DetectCgroupLayout(root.path()).layout, CgroupLayout::kSystemd);
}

TEST(CgroupLayout, DefaultMachineCgroupPerLayout) {
  EXPECT_EQ(DefaultMachineCgroup(CgroupLayout::kCgroupfs, "/sys/fs/cgroup"),
            fs::path("/sys/fs/cgroup/machine"));
  EXPECT_EQ(DefaultMachineCgroup(CgroupLayout::kSystemd, "/sys/fs/cgroup/unified"),
            fs::path("/sys/fs/cgroup/unified/machine.slice"));
  EXPECT_EQ(ToString(CgroupLayout::kSystemd), "systemd");
  EXPECT_EQ(ToString(CgroupLayout::kCgroupfs), "cgroupfs");
}

TEST(CgroupLayout, ThisHost) {
  const auto d = DetectCgroupLayout();
  std::printf("this host: %s (%s)\n", ToString(d.layout).c_str(), d.reason.c_str());
  if (!fs::is_directory("/run/systemd/system")) {
    EXPECT_EQ(d.layout, CgroupLayout::kCgroupfs);
  }
}

TEST(GuestNames, SystemdEscapeFollowsUnitNameEscape) {
  EXPECT_EQ(SystemdEscape("qemu-1-vm1"), R"(qemu\x2d1\x2dvm1)");
  EXPECT_EQ(SystemdEscape("a.b:c_d"), "a.b:c_d");
  EXPECT_EQ(SystemdEscape(".x"), R"(\x2ex)");  // a leading dot only
  EXPECT_EQ(SystemdEscape(R"(a\b c)"), R"(a\x5cb\x20c)");
  EXPECT_EQ(SystemdEscape("a/b"), "a-b");
  EXPECT_EQ(SystemdEscape("\xc3\xa9"), R"(\xc3\xa9)");
}

TEST(GuestNames, ScopeNameIsMachinedsUnitForLibvirtsMachineName) {
  // libvirt docs/cgroups.rst: guest vm1 with id 1 -> machine.slice/machine-qemu\x2d1\x2dvm1.scope
  EXPECT_EQ(LibvirtMachineName(1, "vm1"), "qemu-1-vm1");
  EXPECT_EQ(LibvirtScopeName(1, "vm1"), R"(machine-qemu\x2d1\x2dvm1.scope)");
  EXPECT_EQ(LibvirtScopeName(3, "sgt-vm1"), R"(machine-qemu\x2d3\x2dsgt\x2dvm1.scope)");
  // The machine name drops what is not a hostname character first (then nothing is left to
  // escape but '-').
  EXPECT_EQ(LibvirtScopeName(12, ".hidden_name!"), R"(machine-qemu\x2d12\x2dhiddenname.scope)");
  EXPECT_EQ(LibvirtScopeName(1, "trailing--"), R"(machine-qemu\x2d1\x2dtrailing.scope)");
  EXPECT_EQ(GuestCgroupName(CgroupLayout::kSystemd, 5, "db"), LibvirtScopeName(5, "db"));
  EXPECT_EQ(GuestCgroupName(CgroupLayout::kCgroupfs, 5, "db"), "qemu-5-db.libvirt-qemu");
}

TEST(GuestNames, LongScopeNamesKeepTheIdInTheKernelKey) {
  // The kernel matches the first SG_STORAGE_NAME_LEN - 1 bytes: they always hold the id.
  std::string guest;
  for (int i = 0; i < 40; ++i) guest += "a-";
  const std::string name = LibvirtScopeName(2147483647, guest);
  const std::string key = name.substr(0, SG_STORAGE_NAME_LEN - 1);
  EXPECT_NE(key.find(R"(machine-qemu\x2d2147483647\x2d)"), std::string::npos) << key;
  EXPECT_GT(name.size(), SG_STORAGE_NAME_LEN - 1) << "a name longer than the key exists";
}

}  // namespace
}  // namespace sovguard::storage
