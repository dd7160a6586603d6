// Volume identity: a protected volume is recognised by the programs however its bytes are reached.
// Real kernel, real file systems and block devices made by the test: an image in a btrfs
// subvolume (loop-mounted btrfs), an image in an overlayfs lower layer (opened through the overlay
// and through the layer), and block-device aliases (a partition of a protected loop device, a
// device-mapper linear target over one, the loop device under a protected dm target, a loop device
// over a protected image, the SCSI generic and bsg nodes of a protected SCSI disk). A guest cgroup
// without the dataset is refused (EPERM) or killed; one with it opens the volume and its bytes are
// counted on the volume's dataset.
#include <fcntl.h>
#include <linux/bsg.h>
#include <linux/nvme_ioctl.h>
#include <scsi/sg.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/file.h"
#include "enforcer/storage/block_uevents.h"
#include "enforcer/storage/volume_identity.h"
#include "tests/harness/mounts.h"
#include "tests/harness/process.h"
#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT

constexpr std::uint8_t kHealth = 0, kOther = 1, kAudited = 2;
constexpr int kShortRead = 21;  // beside the fixture's exit codes

policy::CompiledStorage Policy() {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth));
  s.datasets.push_back(TestDataset("other", kOther));
  s.datasets.push_back(TestDataset("audited", kAudited, policy::Mode::kAudit));
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  return s;
}

std::string Output(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  ::pclose(p);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  return out;
}

bool Sh(const std::string& cmd) {
  return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0;
}

// What a test set up on the host (a loop device, a mount, a dm target, a module) undone on
// destruction: runs the function given last to Set(), if any. Not copyable, so neither is an
// object holding one.
class Undo {
 public:
  Undo() = default;
  ~Undo() {
    if (undo_) undo_();
  }
  Undo(const Undo&) = delete;
  Undo& operator=(const Undo&) = delete;
  void Set(std::function<void()> undo) { undo_ = std::move(undo); }

 private:
  std::function<void()> undo_;
};

// mknod `node` (`type`, mode 0600) for the device "MAJ:MIN" in `dev`: `node`, or empty when that
// fails.
fs::path MakeNode(const std::string& dev, mode_t type, const fs::path& node) {
  unsigned maj = 0, min = 0;
  if (std::sscanf(dev.c_str(), " %u:%u", &maj, &min) != 2) return {};
  return ::mknod(node.c_str(), type | 0600, makedev(maj, min)) == 0 ? node : fs::path{};
}

// losetup (with -P: partitions scanned), detached on destruction.
class Loop {
 public:
  explicit Loop(const fs::path& file, bool partitions = false)
      : dev_(Output("losetup -f --show " + std::string(partitions ? "-P " : "") + file.string() +
                    " 2>/dev/null")) {
    if (!dev_.empty()) detach_.Set([dev = dev_] { Sh("losetup -d " + dev); });
  }
  const std::string& dev() const { return dev_; }

 private:
  std::string dev_;
  Undo detach_;
};

using test::ScopedMount;

// An overlayfs whose lower layer holds a 1 MiB health.img: the lower layer on the test's directory,
// the upper on a tmpfs (layers on two file systems, xino off, so stat() through the overlay reports
// a per-layer pseudo device, not the overlay's). Both mounts go with the object.
class OverlayWithImage {
 public:
  explicit OverlayWithImage(const fs::path& dir)
      : lower_(dir / "lower"),
        upper_fs_(dir / "upperfs"),
        merged_(dir / "merged"),
        tmpfs_(upper_fs_),
        overlay_(merged_) {}
  // Makes the layers and the image and mounts both; false when a mount failed. `upper_size`: the
  // tmpfs's size (mount's size=), empty for its default. Without `upper`, a read-only overlay of
  // two lower layers (the image in the upper one of them) and no tmpfs. `options`: more mount
  // options for the overlay ("ro", "metacopy=on").
  bool Make(const std::string& upper_size = "", bool upper = true,
            const std::string& options = "") {
    for (const auto& d : {lower_, upper_fs_, merged_}) fs::create_directories(d);
    WriteFile(lower_ / "health.img", 1 << 20);
    if (!upper) {
      return overlay_.Mount(
          {"-t", "overlay", "sgt-overlay", "-o",
           "lowerdir=" + lower_.string() + ":" + upper_fs_.string() + ",xino=off"});
    }
    if (!tmpfs_.Mount({"-t", "tmpfs", "-o", "size=" + (upper_size.empty() ? "50%" : upper_size),
                       "sgt-upper"}))
      return false;
    fs::create_directories(upper_fs_ / "upper");
    fs::create_directories(upper_fs_ / "work");
    return overlay_.Mount({"-t", "overlay", "sgt-overlay", "-o",
                           "lowerdir=" + lower_.string() +
                               ",upperdir=" + (upper_fs_ / "upper").string() +
                               ",workdir=" + (upper_fs_ / "work").string() + ",xino=off" +
                               (options.empty() ? "" : "," + options)});
  }
  fs::path lower() const { return lower_; }
  fs::path image() const { return merged_ / "health.img"; }                // through the overlay
  fs::path upper_image() const { return upper_fs_ / "upper/health.img"; }  // after a copy-up

 private:
  fs::path lower_, upper_fs_, merged_;
  ScopedMount tmpfs_, overlay_;
};

// Opens `p` and reads `bytes` from it (0: open and close only).
int OpenRead(const fs::path& p, std::size_t bytes = 0) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
  std::vector<char> buf(bytes);
  const ssize_t n = bytes ? ::pread(fd, buf.data(), bytes, 0) : 0;
  ::close(fd);
  return n == static_cast<ssize_t>(bytes) ? kOk : kShortRead;
}

class VolumeIdTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    Start(Policy());
  }
  // A file open by a guest without the dataset: refused (VFS hooks), refused or killed (fanotify
  // marks the volume, not its aliases, which the tracepoints underneath kill), or killed
  // (tracepoint fallback).
  void ExpectFileOpenStopped(const fs::path& cg, const fs::path& p) {
    const auto r = RunInCgroup(cg, [&] { return OpenRead(p); });
    if (VfsHooks()) {
      EXPECT_EQ(r.exit_code, kEperm) << p;
    } else if (Prevents()) {
      EXPECT_TRUE(r.exit_code == kEperm || r.signal == SIGKILL)
          << p << ": exit code " << r.exit_code << ", signal " << r.signal;
    } else {
      EXPECT_EQ(r.signal, SIGKILL) << p << ": exit code " << r.exit_code;
    }
  }
  // A block device open by a guest without the dataset: cgroup/dev refuses on every kernel.
  void ExpectDeviceRefused(const fs::path& cg, const fs::path& dev) {
    EXPECT_EQ(RunInCgroup(cg, [&] { return OpenRead(dev); }).exit_code, kEperm) << dev;
  }
  std::uint64_t HealthReadBytes(const std::string& guest) {
    for (const auto& c : sp_->ReadCounters())
      if (c.guest == guest && c.dataset == "health") return c.read_bytes;
    return 0;
  }
  // Protecting `p` for "health" is refused with every one of `words` (and `p`) in the reason,
  // and leaves no protected volume behind.
  void ExpectProtectionRefused(const fs::path& p, const std::vector<std::string>& words) {
    try {
      sp_->ProtectVolume(p, "health", false);
      ADD_FAILURE() << p << " protected";
    } catch (const StorageRefused& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(p.string()));
      for (const auto& w : words) EXPECT_THAT(e.what(), ::testing::HasSubstr(w));
    }
    EXPECT_TRUE(sp_->Volumes().empty()) << "a refused protection left a volume behind";
  }
  // The guest with the dataset opens `p` and reads 64 KiB, counted on "health".
  void ExpectAllowedAndCounted(const fs::path& cg, const std::string& guest, const fs::path& p) {
    constexpr std::size_t kBytes = 64 << 10;
    const auto r = RunInCgroup(cg, [&] { return OpenRead(p, kBytes); });
    ExpectExited(r, kOk);
    EXPECT_EQ(HealthReadBytes(guest), kBytes);
  }
};

TEST_F(VolumeIdTest, ImageInABtrfsSubvolumeIsGuardedAndOnlyThatSubvolumesInode) {
  SOVGUARD_REQUIRE(Sh("command -v mkfs.btrfs && command -v btrfs"), "mkfs.btrfs (btrfs-progs)");
  const fs::path backing = tmp_.path() / "btrfs.img";
  ASSERT_TRUE(Sh("truncate -s 160M " + backing.string()));
  ASSERT_TRUE(Sh("mkfs.btrfs -q -f " + backing.string()));
  Loop loop(backing);
  ASSERT_FALSE(loop.dev().empty());
  const fs::path mnt = tmp_.path() / "btrfs";
  fs::create_directories(mnt);
  ScopedMount m(mnt);
  ASSERT_TRUE(m.Mount({"-t", "btrfs", loop.dev()}));
  ASSERT_TRUE(Sh("btrfs subvolume create " + (mnt / "vols").string()));
  ASSERT_TRUE(Sh("btrfs subvolume create " + (mnt / "scratch").string()));
  const fs::path image = mnt / "vols/health.img", neighbour = mnt / "scratch/other.img";
  WriteFile(image, 1 << 20);
  WriteFile(neighbour, 1 << 20);
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat(image.c_str(), &a), 0);
  ASSERT_EQ(::stat(neighbour.c_str(), &b), 0);
  // The case that matters: same inode number, other subvolume (btrfs numbers each from 257).
  ASSERT_EQ(a.st_ino, b.st_ino);
  ASSERT_NE(a.st_dev, b.st_dev);

  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectFileOpenStopped(bravo, image);
  ExpectAllowedAndCounted(alpha, "alpha", image);
  if (sp_->Status().btrfs_subvolumes) {
    // The neighbour subvolume's file with the same inode number is no protected volume.
    EXPECT_EQ(RunInCgroup(bravo, [&] { return OpenRead(neighbour); }).exit_code, kOk);
  } else {
    // Programs loaded before the btrfs module (a module on the distribution kernel; this test's
    // datapath started before the mount loaded it): they cannot tell subvolumes apart, so the
    // same inode number in the other subvolume is guarded too (never the other way round).
    std::printf("btrfs subvolumes not told apart (btrfs loaded after the programs)\n");
    ExpectFileOpenStopped(bravo, neighbour);
  }
}

TEST_F(VolumeIdTest, ImageInAnOverlayLowerLayerIsGuardedThroughTheOverlayAndTheLayer) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make());
  const fs::path image = overlay.image(), lower = overlay.lower();

  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectFileOpenStopped(bravo, image);
  ExpectFileOpenStopped(bravo, lower / "health.img");  // the same bytes through the layer
  ExpectAllowedAndCounted(alpha, "alpha", image);
}

// The same image written by its holder after its protection: overlayfs copies a file up on its
// first write open (or chmod, touch), giving its bytes a new upper-layer file. An intruder that
// reaches the upper layer opens that file right after the holder's write, before anything could
// look again: it is stopped, as on the lower file and through the overlay, and the holder reads
// on, counted. (Protection copies the file up at once, so the upper file is in the tables from
// the start; a second look finds nothing new.)
TEST_F(VolumeIdTest, OverlayFileCopiedUpAfterProtectionIsGuardedInItsUpperLayerAtOnce) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make());
  const fs::path image = overlay.image(), upper = overlay.upper_image(), lower = overlay.lower();

  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  const auto wrote = RunInCgroup(alpha, [&] {
    const int fd = ::open(image.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
    const std::vector<char> page(4096, 'w');
    const bool ok = ::pwrite(fd, page.data(), page.size(), 0) == 4096;
    ::close(fd);
    return ok ? kOk : kShortRead;
  });
  ASSERT_TRUE(wrote.exited && wrote.exit_code == kOk)
      << "exit code " << wrote.exit_code << ", signal " << wrote.signal;
  ASSERT_TRUE(fs::exists(upper)) << "no copy-up";
  ExpectFileOpenStopped(bravo, upper);
  ExpectFileOpenStopped(bravo, lower / "health.img");
  ExpectFileOpenStopped(bravo, image);
  ExpectAllowedAndCounted(alpha, "alpha", image);
  EXPECT_TRUE(sp_->RefreshAliases(/*overlay_only=*/true).empty()) << "a second look finds more";
  EXPECT_TRUE(sp_->RefreshAliases().empty()) << "a whole one finds more";
}

// A read-only overlay (lower layers only) can never copy the image up: protection makes no copy,
// and the image is guarded through the overlay and in its layer.
TEST_F(VolumeIdTest, ImageOnAReadOnlyOverlayIsGuardedWithoutACopyUp) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make("", /*upper=*/false));
  const fs::path image = overlay.image(), lower = overlay.lower();

  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectFileOpenStopped(bravo, image);
  ExpectFileOpenStopped(bravo, lower / "health.img");
  ExpectAllowedAndCounted(alpha, "alpha", image);
}

// A copy-up that cannot be made (the upper layer's file system has no room for the image) refuses
// the protection, naming the file and the reason, and changes nothing: no table holds the image
// or its layer file.
TEST_F(VolumeIdTest, OverlayFileThatCannotBeCopiedUpIsRefusedProtection) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make("64k"));
  const fs::path image = overlay.image();
  ExpectProtectionRefused(image, {"copy-up", "No space left on device"});
}

// Where the file's bytes may lie where its path does not lead in the layers (metacopy=on: data
// left in a lower layer), protection is refused, naming why, and nothing is copied or kept.
TEST_F(VolumeIdTest, OverlayFileWhoseLayersCannotBeSettledIsRefusedProtection) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make("", true, "metacopy=on"));
  ExpectProtectionRefused(overlay.image(), {"metacopy=on"});
  EXPECT_FALSE(fs::exists(overlay.upper_image())) << "copied up all the same";
}

// A directory renamed through an overlay (redirect_dir=on) leaves its files in the lower layer
// under the old name: the image's path no longer leads to its lower-layer file, so protection is
// refused, naming why, rather than leaving that file out.
TEST_F(VolumeIdTest, OverlayFileUnderARenamedDirectoryIsRefusedProtection) {
  const fs::path lower = tmp_.path() / "lower", upper = tmp_.path() / "upper",
                 work = tmp_.path() / "work", merged = tmp_.path() / "merged";
  for (const auto& d : {lower / "old", upper, work, merged}) fs::create_directories(d);
  WriteFile(lower / "old" / "health.img", 1 << 20);
  ScopedMount overlay(merged);
  std::string error;
  ASSERT_TRUE(overlay.Mount({"-t", "overlay", "sgt-overlay", "-o",
                             "lowerdir=" + lower.string() + ",upperdir=" + upper.string() +
                                 ",workdir=" + work.string() + ",redirect_dir=on"},
                            &error))
      << error;
  fs::rename(merged / "old", merged / "new");
  const fs::path image = merged / "new" / "health.img";
  ASSERT_TRUE(fs::exists(image));
  ExpectProtectionRefused(image, {"renamed"});
}

// Where the daemon cannot write (an overlay mounted read-only over an upper layer here; a hardened
// unit's ProtectSystem= alike) the file is protected without a copy-up, through the overlay and in
// its lower layer, and the status names it: a copy-up made elsewhere later is guarded from the
// next refresh, as before.
TEST_F(VolumeIdTest, OverlayFileTheDaemonCannotCopyUpIsProtectedAndNamed) {
  OverlayWithImage overlay(tmp_.path());
  ASSERT_TRUE(overlay.Make("", true, "ro"));
  const fs::path image = overlay.image();
  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  EXPECT_FALSE(fs::exists(overlay.upper_image()));
  const auto named = sp_->Status().overlay_not_copied_up;
  ASSERT_EQ(named.size(), 1u);
  EXPECT_THAT(named[0], ::testing::HasSubstr(image.string()));
  EXPECT_THAT(named[0], ::testing::HasSubstr("read-only"));
  ExpectFileOpenStopped(bravo, image);
  ExpectFileOpenStopped(bravo, overlay.lower() / "health.img");
  ExpectAllowedAndCounted(alpha, "alpha", image);
}

// One line into a configfs attribute (or a file standing in for one): a single write, as the
// kernel wants it.
void WriteAttribute(const fs::path& p, const std::string& value) {
  std::ofstream f(p);
  f << value << std::flush;
}

// An NVMe over fabrics namespace of this host's target, as configfs lays it out under `root`:
// made with `device` and enabled (the kernel opens it then); on destruction disabled and removed.
// `buffered`: a file served through the page cache (nvmet opens files O_DIRECT otherwise, which
// tmpfs refuses).
class NvmetNamespaceDir {
 public:
  NvmetNamespaceDir(const fs::path& subsystem, int nsid, const std::string& device,
                    bool buffered = false)
      : dir_(subsystem / "namespaces" / std::to_string(nsid)) {
    fs::create_directories(dir_);
    WriteAttribute(dir_ / "device_path", device);
    if (buffered) WriteAttribute(dir_ / "buffered_io", "1");
    WriteAttribute(dir_ / "enable", "1");
  }
  ~NvmetNamespaceDir() {
    WriteAttribute(dir_ / "enable", "0");
    std::error_code ec;
    fs::remove(dir_, ec);
  }
  NvmetNamespaceDir(const NvmetNamespaceDir&) = delete;
  NvmetNamespaceDir& operator=(const NvmetNamespaceDir&) = delete;
  const fs::path& dir() const { return dir_; }
  std::string Enable() const { return base::ReadFirstLine(dir_ / "enable"); }

 private:
  fs::path dir_;
};

// What GuardExports does with the namespaces it finds, on a configfs tree of plain files (the
// development kernel has no nvmet; the real target is the next test's, in the vm tier): a
// protected image of an enforced dataset served is disabled and told once; one of an audited
// dataset is told once and left; an unprotected one is left alone.
TEST_F(VolumeIdTest, ExportOfAProtectedVolumeIsDisabledOrReportedByItsDatasetsMode) {
  const fs::path enforced = tmp_.path() / "enforced.img", audited = tmp_.path() / "audited.img",
                 other = tmp_.path() / "other.img";
  for (const auto& f : {enforced, audited, other}) WriteFile(f, 1 << 20);
  StartGuest(
      "alpha", (1ULL << kHealth) | (1ULL << kAudited),
      {{.source = enforced, .dataset = "health"}, {.source = audited, .dataset = "audited"}});
  const fs::path root = tmp_.path() / "configfs", subsystem = root / "nvmet/subsystems/sgt-nqn";
  const NvmetNamespaceDir a(subsystem, 1, enforced.string()), b(subsystem, 2, audited.string()),
      c(subsystem, 3, other.string());

  const auto found = sp_->GuardExports(root);
  ASSERT_EQ(found.size(), 2u);
  std::map<std::string, StorageDatapath::ExportFinding> by_dataset;
  for (const auto& f : found) by_dataset[f.dataset] = f;
  EXPECT_TRUE(by_dataset["health"].disabled) << by_dataset["health"].error;
  EXPECT_EQ(by_dataset["health"].volume, enforced.string());
  EXPECT_EQ(by_dataset["health"].where, a.dir().string());
  EXPECT_FALSE(by_dataset["audited"].disabled);
  EXPECT_EQ(by_dataset["audited"].error, "");
  EXPECT_EQ(a.Enable(), "0");
  EXPECT_EQ(b.Enable(), "1");
  EXPECT_EQ(c.Enable(), "1");
  EXPECT_TRUE(sp_->GuardExports(root).empty()) << "told twice";
  WriteAttribute(a.dir() / "enable", "1");  // served again: disabled again
  const auto again = sp_->GuardExports(root);
  ASSERT_EQ(again.size(), 1u);
  EXPECT_TRUE(again[0].disabled);
  EXPECT_EQ(a.Enable(), "0");
}

// This host's NVMe over fabrics target (nvmet) serving a protected block device or image file
// sends the dataset's bytes to initiators no program judges: the namespace is disabled (the
// kernel's own `enable` reads 0 again); one serving an unprotected device stays enabled.
TEST_F(VolumeIdTest, NvmetNamespaceServingAProtectedVolumeIsDisabled) {
  Sh("modprobe nvmet");  // a module on the distribution kernel (the vm tier)
  ScopedMount configfs_mount("/sys/kernel/config");
  if (!test::FindMount("configfs") && fs::exists("/sys/kernel/config"))
    configfs_mount.Mount({"-t", "configfs", "configfs"});
  const fs::path root = test::FindMount("configfs").value_or("/sys/kernel/config");
  if (!fs::exists(root / "nvmet/subsystems"))
    SOVGUARD_SKIP_KERNEL_FEATURE("nvme-target", "no nvmet in configfs (CONFIG_NVME_TARGET)");
  const fs::path dev_img = tmp_.path() / "nvmet-dev.img", file_img = tmp_.path() / "nvmet-file.img",
                 other_img = tmp_.path() / "nvmet-other.img";
  for (const auto& f : {dev_img, file_img, other_img}) WriteFile(f, 4 << 20);
  Loop protected_dev(dev_img), other_dev(other_img);
  ASSERT_FALSE(protected_dev.dev().empty());
  ASSERT_FALSE(other_dev.dev().empty());
  StartGuest("alpha", 1ULL << kHealth,
             {{.source = protected_dev.dev(), .dataset = "health"},
              {.source = file_img, .dataset = "health"}});
  const fs::path subsystem = root / "nvmet/subsystems/sgt-nvmet-test";
  Undo remove_subsystem;
  fs::create_directory(subsystem);
  remove_subsystem.Set([subsystem] {
    std::error_code ec;
    fs::remove(subsystem, ec);
  });
  {
    const NvmetNamespaceDir a(subsystem, 1, protected_dev.dev()),
        b(subsystem, 2, file_img.string(), /*buffered=*/true), c(subsystem, 3, other_dev.dev());
    ASSERT_EQ(a.Enable(), "1") << "the kernel did not enable the namespace";
    ASSERT_EQ(b.Enable(), "1") << "the kernel did not enable the file namespace";
    const auto found = sp_->GuardExports(root);
    ASSERT_EQ(found.size(), 2u);
    for (const auto& f : found) {
      EXPECT_TRUE(f.disabled) << f.where << ": " << f.error;
      EXPECT_EQ(f.dataset, "health");
    }
    EXPECT_EQ(a.Enable(), "0");
    EXPECT_EQ(b.Enable(), "0");
    EXPECT_EQ(c.Enable(), "1");
  }
}

TEST_F(VolumeIdTest, PartitionOfAProtectedDeviceIsRefusedAndTheWholeDiskOfAProtectedPartition) {
  const fs::path a = tmp_.path() / "disk-a.img", b = tmp_.path() / "disk-b.img";
  for (const auto& f : {a, b}) WriteFile(f, 8 << 20);
  Loop disk_a(a, /*partitions=*/true), disk_b(b, /*partitions=*/true);
  ASSERT_FALSE(disk_a.dev().empty());
  ASSERT_FALSE(disk_b.dev().empty());
  // BLKPG (addpart): this kernel parses no partition table, the partition is added directly.
  for (const auto& d : {disk_a.dev(), disk_b.dev()})
    ASSERT_TRUE(Sh("addpart " + d + " 1 2048 12288")) << "addpart " << d;
  const fs::path part_a = disk_a.dev() + "p1", part_b = disk_b.dev() + "p1";
  ASSERT_TRUE(fs::exists(part_a)) << part_a;
  ASSERT_TRUE(fs::exists(part_b)) << part_b;
  StartGuest(
      "alpha", 1ULL << kHealth,
      {{.source = disk_a.dev(), .dataset = "health"}, {.source = part_b, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectDeviceRefused(bravo, disk_a.dev());
  ExpectDeviceRefused(bravo, part_a);  // a part of the protected disk's bytes
  ExpectDeviceRefused(bravo, part_b);
  ExpectDeviceRefused(bravo, disk_b.dev());  // holds the protected partition's bytes
}

// dmsetup linear over a device, removed on destruction; node() is a device node made by the test.
class DmLinear {
 public:
  DmLinear(const std::string& name, const std::string& over, const fs::path& node_dir)
      : name_(name) {
    const std::string sectors = Output("blockdev --getsz " + over);
    if (sectors.empty() ||
        !Sh("dmsetup create " + name_ + " --table '0 " + sectors + " linear " + over + " 0'")) {
      name_.clear();
      return;
    }
    remove_.Set([name = name_] { Sh("dmsetup remove " + name); });
    node_ = MakeNode(Output("dmsetup info -c --noheadings -o major,minor " + name_), S_IFBLK,
                     node_dir / name_);
  }
  const fs::path& node() const { return node_; }

 private:
  std::string name_;
  fs::path node_;
  Undo remove_;
};

TEST_F(VolumeIdTest, DeviceMapperAliasesOfAProtectedDeviceAreRefused) {
  SOVGUARD_REQUIRE(Sh("command -v dmsetup"), "dmsetup");
  Sh("modprobe dm_mod");  // a module on the distribution kernel (the vm tier)
  std::ifstream devices("/proc/devices");
  const std::string all((std::istreambuf_iterator<char>(devices)),
                        std::istreambuf_iterator<char>());
  if (all.find("device-mapper") == std::string::npos) {
    SOVGUARD_SKIP_KERNEL_FEATURE("device-mapper", "no device-mapper in /proc/devices");
  }
  const fs::path a = tmp_.path() / "dm-a.img", b = tmp_.path() / "dm-b.img";
  WriteFile(a, 4 << 20);
  WriteFile(b, 4 << 20);
  Loop loop_a(a), loop_b(b);
  ASSERT_FALSE(loop_a.dev().empty());
  ASSERT_FALSE(loop_b.dev().empty());
  const std::string suffix = UniqueSuffix();
  DmLinear over_a("sgt-lin-a-" + suffix, loop_a.dev(), tmp_.path());
  DmLinear over_b("sgt-lin-b-" + suffix, loop_b.dev(), tmp_.path());
  ASSERT_FALSE(over_a.node().empty()) << "dmsetup create linear";
  ASSERT_FALSE(over_b.node().empty());
  // a: the loop device is protected, the dm target on it is its holder. b: the dm target is
  // protected, the loop device under it is its slave.
  StartGuest("alpha", 1ULL << kHealth,
             {{.source = loop_a.dev(), .dataset = "health"},
              {.source = over_b.node(), .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectDeviceRefused(bravo, over_a.node());
  ExpectDeviceRefused(bravo, loop_b.dev());
  ExpectDeviceRefused(bravo, over_b.node());
}

TEST_F(VolumeIdTest, LoopDeviceOverAProtectedImageIsRefused) {
  const fs::path image = tmp_.path() / "health.img";
  WriteFile(image, 4 << 20);
  Loop loop(image);
  ASSERT_FALSE(loop.dev().empty());
  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  ExpectDeviceRefused(bravo, loop.dev());
  EXPECT_EQ(RunInCgroup(alpha, [&] { return OpenRead(loop.dev(), 4096); }).exit_code, kOk);
}

// A disk of the scsi_debug module (a SCSI disk in memory) with its sd block device and its sg and
// bsg character devices as nodes made by the test; the module is removed on destruction when
// this object loaded it. Empty paths when the kernel has no SCSI.
class ScsiDebugDisk {
 public:
  explicit ScsiDebugDisk(const fs::path& node_dir) {
    std::error_code ec;
    if (fs::exists("/sys/bus/pseudo/drivers/scsi_debug", ec)) return;  // someone else's
    Sh("modprobe sd_mod");
    Sh("modprobe sg");
    loaded_ = Sh("modprobe scsi_debug dev_size_mb=4 num_tgts=1 max_luns=1");
    if (!loaded_) return;
    unload_.Set([] { Sh("modprobe -r scsi_debug"); });
    // The SCSI device: /sys/bus/scsi/devices/H:C:T:L whose model is scsi_debug's.
    for (const auto& d : fs::directory_iterator("/sys/bus/scsi/devices", ec)) {
      if (Output("cat " + (d.path() / "model").string() + " 2>/dev/null") != "scsi_debug") continue;
      disk_ = Node(d.path() / "block", S_IFBLK, node_dir);
      sg_ = Node(d.path() / "scsi_generic", S_IFCHR, node_dir);
      bsg_ = Node(d.path() / "bsg", S_IFCHR, node_dir);
      break;
    }
  }
  bool loaded() const { return loaded_; }
  const fs::path& disk() const { return disk_; }
  const fs::path& sg() const { return sg_; }
  const fs::path& bsg() const { return bsg_; }

 private:
  // A node for the one device under `cls_dir` (its dev file), made in `node_dir`.
  static fs::path Node(const fs::path& cls_dir, mode_t type, const fs::path& node_dir) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(cls_dir, ec)) {
      const fs::path node =
          MakeNode(Output("cat " + (e.path() / "dev").string()), type,
                   node_dir / (cls_dir.filename().string() + "-" + e.path().filename().string()));
      if (!node.empty()) return node;
    }
    return {};
  }
  bool loaded_ = false;
  fs::path disk_, sg_, bsg_;
  Undo unload_;
};

// SG_IO READ(10) of the first block through a SCSI generic node, as a QEMU given the node (a
// `<hostdev type='scsi'>`, a `device='lun'` disk) does: sg takes the v3 header, bsg the v4 one.
// kOk when the bytes came back, kEperm when the open was refused.
int ReadFirstBlockBySgIo(const fs::path& node, bool bsg) {
  const int fd = ::open(node.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
  unsigned char cdb[10] = {0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0};  // READ(10), LBA 0, 1 block
  unsigned char data[512] = {}, sense[32] = {};
  bool ok = false;
  if (bsg) {
    sg_io_v4 io{};
    io.guard = 'Q';
    io.protocol = BSG_PROTOCOL_SCSI;
    io.subprotocol = BSG_SUB_PROTOCOL_SCSI_CMD;
    io.request_len = sizeof cdb;
    io.request = reinterpret_cast<std::uintptr_t>(cdb);
    io.din_xfer_len = sizeof data;
    io.din_xferp = reinterpret_cast<std::uintptr_t>(data);
    io.max_response_len = sizeof sense;
    io.response = reinterpret_cast<std::uintptr_t>(sense);
    io.timeout = 10000;
    ok = ::ioctl(fd, SG_IO, &io) == 0 && io.device_status == 0 && io.transport_status == 0 &&
         io.driver_status == 0;
  } else {
    sg_io_hdr_t io{};
    io.interface_id = 'S';
    io.dxfer_direction = SG_DXFER_FROM_DEV;
    io.cmd_len = sizeof cdb;
    io.cmdp = cdb;
    io.dxfer_len = sizeof data;
    io.dxferp = data;
    io.mx_sb_len = sizeof sense;
    io.sbp = sense;
    io.timeout = 10000;
    ok = ::ioctl(fd, SG_IO, &io) == 0 && io.status == 0 && io.host_status == 0 &&
         io.driver_status == 0;
  }
  ::close(fd);
  return ok ? kOk : kShortRead;
}

// SCSI pass-through: a disk's sg and bsg character devices reach its bytes past the block device
// (SG_IO), so they are aliases of a protected disk: cgroup/dev refuses them (character devices
// too) to a guest without the dataset, on every kernel; the guest holding it uses them.
TEST_F(VolumeIdTest, ScsiGenericAndBsgNodesOfAProtectedDiskAreRefused) {
  ScsiDebugDisk scsi(tmp_.path());
  if (!scsi.loaded() && !fs::exists("/sys/bus/scsi")) {
    SOVGUARD_SKIP_KERNEL_FEATURE("scsi",
                                 "no SCSI in this kernel (no /sys/bus/scsi, no scsi_debug)");
  }
  ASSERT_TRUE(scsi.loaded()) << "modprobe scsi_debug (another scsi_debug already loaded?)";
  ASSERT_FALSE(scsi.disk().empty()) << "no sd block device of scsi_debug";
  ASSERT_FALSE(scsi.sg().empty()) << "no sg node of scsi_debug";
  ASSERT_FALSE(scsi.bsg().empty()) << "no bsg node of scsi_debug";
  // The attack works on an unprotected disk: the nodes give its bytes.
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  const std::pair<fs::path, bool> nodes[] = {{scsi.sg(), false}, {scsi.bsg(), true}};
  const auto read_by = [&](const fs::path& cg, const fs::path& node, bool bsg) {
    return RunInCgroup(cg, [&] { return ReadFirstBlockBySgIo(node, bsg); }).exit_code;
  };
  for (const auto& [node, bsg] : nodes) ASSERT_EQ(read_by(bravo, node, bsg), kOk) << node;
  const auto alpha =
      StartGuest("alpha", 1ULL << kHealth, {{.source = scsi.disk(), .dataset = "health"}});
  ExpectDeviceRefused(bravo, scsi.disk());
  for (const auto& [node, bsg] : nodes) EXPECT_EQ(read_by(bravo, node, bsg), kEperm) << node;
  for (const auto& [node, bsg] : nodes) EXPECT_EQ(read_by(alpha, node, bsg), kOk) << node;
}

// The emulated NVMe disk the vm tier attaches (tests/vm/run-in-vm.sh --nvme: QEMU's `-device
// nvme,serial=...`), found by that serial only, so a host's own NVMe disks are never touched:
// its namespace's block device, generic device (ngXnY) and controller device (nvmeX) as nodes
// made by the test, and the namespace id and block size. Empty paths when there is none.
class TestNvmeDisk {
 public:
  static constexpr const char* kSerial = "sovguard-nvme";
  explicit TestNvmeDisk(const fs::path& node_dir) {
    std::error_code ec;
    for (const auto& b : fs::directory_iterator("/sys/block", ec)) {
      const std::string name = b.path().filename().string();
      if (name.rfind("nvme", 0) != 0) continue;
      if (Output("cat " + (b.path() / "device/serial").string() + " 2>/dev/null") != kSerial)
        continue;
      disk_ = Node(b.path(), S_IFBLK, node_dir);
      controller_ = Node(b.path() / "device", S_IFCHR, node_dir);
      for (const auto& e : fs::directory_iterator(b.path() / "device", ec))
        if (e.path().filename().string().rfind("ng", 0) == 0)
          generic_ = Node(e.path(), S_IFCHR, node_dir);
      nsid_ = static_cast<std::uint32_t>(
          std::strtoul(Output("cat " + (b.path() / "nsid").string()).c_str(), nullptr, 10));
      block_size_ = static_cast<std::uint32_t>(std::strtoul(
          Output("cat " + (b.path() / "queue/logical_block_size").string()).c_str(), nullptr, 10));
      break;
    }
  }
  const fs::path& disk() const { return disk_; }
  const fs::path& generic() const { return generic_; }
  const fs::path& controller() const { return controller_; }
  std::uint32_t nsid() const { return nsid_; }
  std::uint32_t block_size() const { return block_size_; }

 private:
  // A node named after `dir` for its dev file, made in `node_dir`.
  static fs::path Node(const fs::path& dir, mode_t type, const fs::path& node_dir) {
    const std::string dev = Output("cat " + (dir / "dev").string());
    if (dev.empty()) return {};
    return MakeNode(dev, type, node_dir / fs::canonical(dir).filename());
  }
  fs::path disk_, generic_, controller_;
  std::uint32_t nsid_ = 0, block_size_ = 0;
};

// An NVMe Read of LBA 0 by pass-through, as a QEMU given the node would issue it: the generic
// device takes NVME_IOCTL_IO64_CMD, the controller device NVME_IOCTL_IO_CMD (namespace `nsid`).
// kOk when the block came back equal to `want`, kEperm when the open was refused.
int ReadFirstBlockByNvmePassthrough(const fs::path& node, bool controller, std::uint32_t nsid,
                                    const std::vector<unsigned char>& want) {
  const int fd = ::open(node.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
  std::vector<unsigned char> data(want.size());
  int rc = -1;
  if (controller) {
    nvme_passthru_cmd cmd{};
    cmd.opcode = 0x02;  // Read
    cmd.nsid = nsid;
    cmd.addr = reinterpret_cast<std::uintptr_t>(data.data());
    cmd.data_len = static_cast<std::uint32_t>(data.size());
    cmd.cdw12 = 0;  // one block (0-based count), LBA 0 in cdw10/11
    rc = ::ioctl(fd, NVME_IOCTL_IO_CMD, &cmd);
  } else {
    nvme_passthru_cmd64 cmd{};
    cmd.opcode = 0x02;
    cmd.nsid = nsid;
    cmd.addr = reinterpret_cast<std::uintptr_t>(data.data());
    cmd.data_len = static_cast<std::uint32_t>(data.size());
    rc = ::ioctl(fd, NVME_IOCTL_IO64_CMD, &cmd);
  }
  ::close(fd);
  return rc == 0 && data == want ? kOk : kShortRead;
}

// NVMe pass-through: a namespace's generic character device and its controller's reach its
// blocks past the block device, so they are aliases of a protected namespace: cgroup/dev refuses
// them to a guest without the dataset, on every kernel; the guest holding it uses them.
TEST_F(VolumeIdTest, NvmeGenericAndControllerNodesOfAProtectedNamespaceAreRefused) {
  Sh("modprobe nvme");
  if (!fs::exists("/sys/class/nvme") && !fs::exists("/sys/module/nvme_core")) {
    SOVGUARD_SKIP_KERNEL_FEATURE("nvme", "no NVMe in this kernel (no /sys/class/nvme, no nvme)");
  }
  TestNvmeDisk nvme(tmp_.path());
  ASSERT_FALSE(nvme.disk().empty()) << "no NVMe namespace with serial " << TestNvmeDisk::kSerial
                                    << " (tests/vm/run-in-vm.sh --nvme attaches one)";
  ASSERT_FALSE(nvme.generic().empty()) << "no NVMe generic device (ngXnY) of " << nvme.disk();
  ASSERT_FALSE(nvme.controller().empty()) << "no NVMe controller device of " << nvme.disk();
  ASSERT_GT(nvme.nsid(), 0u);
  ASSERT_GE(nvme.block_size(), 512u);
  // Block 0 gets a pattern through the block device, so the bytes a read returns are told apart.
  std::vector<unsigned char> block(nvme.block_size());
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<unsigned char>(i * 7 + 1);
  {
    const int fd = ::open(nvme.disk().c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
    ASSERT_GE(fd, 0) << nvme.disk();
    void* aligned = nullptr;
    ASSERT_EQ(::posix_memalign(&aligned, 4096, block.size()), 0);
    std::memcpy(aligned, block.data(), block.size());
    const ssize_t n = ::pwrite(fd, aligned, block.size(), 0);
    std::free(aligned);
    ::close(fd);
    ASSERT_EQ(n, static_cast<ssize_t>(block.size()));
  }
  // The attack works on an unprotected namespace: both nodes give its bytes.
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  const std::pair<fs::path, bool> nodes[] = {{nvme.generic(), false}, {nvme.controller(), true}};
  const auto read_by = [&](const fs::path& cg, const fs::path& node, bool ctrl) {
    return RunInCgroup(
               cg, [&] { return ReadFirstBlockByNvmePassthrough(node, ctrl, nvme.nsid(), block); })
        .exit_code;
  };
  for (const auto& [node, ctrl] : nodes) ASSERT_EQ(read_by(bravo, node, ctrl), kOk) << node;
  const auto alpha =
      StartGuest("alpha", 1ULL << kHealth, {{.source = nvme.disk(), .dataset = "health"}});
  ExpectDeviceRefused(bravo, nvme.disk());
  for (const auto& [node, ctrl] : nodes) EXPECT_EQ(read_by(bravo, node, ctrl), kEperm) << node;
  for (const auto& [node, ctrl] : nodes) EXPECT_EQ(read_by(alpha, node, ctrl), kOk) << node;
}

// A loop device set up over a protected image *after* its protection is no alias yet; the block
// uevent the kernel sends for it is what the daemon reacts to (BlockUevents), and RefreshAliases
// then protects it with the image's dataset.
TEST_F(VolumeIdTest, LoopDeviceMadeAfterProtectionIsRefusedOnceItsUeventIsSeen) {
  const fs::path image = tmp_.path() / "later.img";
  WriteFile(image, 4 << 20);
  const auto alpha = StartGuest("alpha", 1ULL << kHealth, {{.source = image, .dataset = "health"}});
  const auto bravo = StartGuest("bravo", 1ULL << kOther);
  BlockUevents uevents;
  Loop loop(image);
  ASSERT_FALSE(loop.dev().empty());
  // Before anything looked again, the new device is a way to the image's bytes.
  EXPECT_EQ(RunInCgroup(bravo, [&] { return OpenRead(loop.dev(), 4096); }).exit_code, kOk);
  ASSERT_TRUE(test::PollUntil(std::chrono::seconds(10), [&] { return uevents.Changed(); }))
      << "no block uevent for " << loop.dev();
  const auto found = sp_->RefreshAliases();
  ASSERT_EQ(found.size(), 1u) << ::testing::PrintToString(found);
  EXPECT_NE(found[0].find(loop.dev()), std::string::npos) << found[0];
  ExpectDeviceRefused(bravo, loop.dev());
  EXPECT_EQ(RunInCgroup(alpha, [&] { return OpenRead(loop.dev(), 4096); }).exit_code, kOk);
  EXPECT_TRUE(sp_->RefreshAliases().empty()) << "a second look finds nothing new";
}

// A device directory `d` as sysfs has it: `dev` holds "MAJ:MIN" (`mm`), `uevent` names /dev/<name>.
void WriteSysfsDevice(const fs::path& d, const std::string& mm, const std::string& name) {
  fs::create_directories(d);
  std::ofstream(d / "dev") << mm << "\n";
  std::ofstream(d / "uevent") << "MAJOR=x\nDEVNAME=" << name << "\n";
}

TEST(VolumeIdentity, FileIdentityIsTheSuperBlocksDeviceAndTheInode) {
  TempDir tmp;
  const fs::path f = tmp.path() / "f";
  WriteFile(f, 4096);
  struct stat st {};
  ASSERT_EQ(::stat(f.c_str(), &st), 0);
  const VolumeId id = KernelVolumeId(f);
  EXPECT_EQ(id.ino, st.st_ino);
  EXPECT_NE(id.dev, 0u);
  EXPECT_THROW(KernelVolumeId(tmp.path()), std::runtime_error);  // a directory
  EXPECT_THROW(KernelVolumeId(tmp.path() / "missing"), std::system_error);
}

// The sysfs walk on a fake tree (the development kernel has no device-mapper): a dm target over
// a protected device is its holder, a target above that one too; the device under a protected
// target is its slave. Device nodes made by mknod (no such device needs to exist).
TEST(VolumeIdentity, DeviceMapperHoldersAndSlavesFromSysfs) {
  SOVGUARD_REQUIRE(::geteuid() == 0, "root (mknod)");
  TempDir tmp;
  const fs::path sys = tmp.path() / "sys";
  const auto dev_dir = [&](const std::string& mm, const std::string& name) {
    const fs::path d = sys / "dev/block" / mm;
    WriteSysfsDevice(d, mm, name);
    return d;
  };
  // As in sysfs: holders/NAME and slaves/NAME are links to the device's directory.
  const auto link = [&](const fs::path& dir, const std::string& kind, const std::string& name,
                        const std::string& mm) {
    fs::create_directories(dir / kind);
    fs::create_directory_symlink(sys / "dev/block" / mm, dir / kind / name);
  };
  fs::create_directories(sys / "block");
  const fs::path loop = dev_dir("7:200", "loop200"), dm9 = dev_dir("253:9", "dm-9"),
                 dm10 = dev_dir("253:10", "dm-10");
  link(loop, "holders", "dm-9", "253:9");
  link(dm9, "slaves", "loop200", "7:200");
  link(dm9, "holders", "dm-10", "253:10");
  link(dm10, "slaves", "dm-9", "253:9");
  const fs::path loop_node = tmp.path() / "loop200", dm9_node = tmp.path() / "dm-9";
  ASSERT_EQ(::mknod(loop_node.c_str(), S_IFBLK | 0600, makedev(7, 200)), 0);
  ASSERT_EQ(::mknod(dm9_node.c_str(), S_IFBLK | 0600, makedev(253, 9)), 0);
  const auto names = [](const std::vector<VolumeAlias>& v) {
    std::vector<std::string> out;
    for (const auto& a : v) out.push_back(a.name);
    return out;
  };
  EXPECT_EQ(names(VolumeAliases(loop_node, sys)),
            (std::vector<std::string>{"/dev/dm-9", "/dev/dm-10"}));
  const auto of_dm9 = VolumeAliases(dm9_node, sys);
  EXPECT_EQ(names(of_dm9), (std::vector<std::string>{"/dev/loop200", "/dev/dm-10"}));
  ASSERT_EQ(of_dm9.size(), 2u);
  EXPECT_EQ(of_dm9[0].id, (VolumeId{0, (7ULL << 20) | 200}));
  EXPECT_NE(of_dm9[0].why.find("slave"), std::string::npos) << of_dm9[0].why;
}

// A SCSI disk's sg and bsg character devices are aliases of the disk and of its partitions (as
// sysfs shows them: the disk's `device` is the SCSI device, with scsi_generic/ and bsg/).
TEST(VolumeIdentity, ScsiGenericDevicesOfADiskFromSysfs) {
  SOVGUARD_REQUIRE(::geteuid() == 0, "root (mknod)");
  TempDir tmp;
  const fs::path sys = tmp.path() / "sys";
  const fs::path scsi = sys / "devices/host9/target9:0:0/9:0:0:0";
  const fs::path sdz = scsi / "block/sdz";
  WriteSysfsDevice(sdz, "8:240", "sdz");
  WriteSysfsDevice(sdz / "sdz1", "8:241", "sdz1");
  std::ofstream(sdz / "sdz1/partition") << "1\n";
  fs::create_directory_symlink(scsi, sdz / "device");
  WriteSysfsDevice(scsi / "scsi_generic/sg9", "21:9", "sg9");
  WriteSysfsDevice(scsi / "bsg/9:0:0:0", "254:9", "bsg/9:0:0:0");
  fs::create_directories(sys / "dev/block");
  fs::create_directories(sys / "block");
  fs::create_directory_symlink(sdz, sys / "dev/block/8:240");
  fs::create_directory_symlink(sdz / "sdz1", sys / "dev/block/8:241");
  const fs::path disk = tmp.path() / "sdz", part = tmp.path() / "sdz1";
  ASSERT_EQ(::mknod(disk.c_str(), S_IFBLK | 0600, makedev(8, 240)), 0);
  ASSERT_EQ(::mknod(part.c_str(), S_IFBLK | 0600, makedev(8, 241)), 0);
  const VolumeAlias sg{{kCharDevice, (21ULL << 20) | 9}, "/dev/sg9", ""};
  const VolumeAlias bsg{{kCharDevice, (254ULL << 20) | 9}, "/dev/bsg/9:0:0:0", ""};
  for (const auto& [node, count] : {std::pair{disk, 3u}, std::pair{part, 3u}}) {
    const auto aliases = VolumeAliases(node, sys);
    ASSERT_EQ(aliases.size(), count) << node;
    for (const auto& want : {sg, bsg}) {
      const auto it = std::find_if(aliases.begin(), aliases.end(),
                                   [&](const VolumeAlias& a) { return a.id == want.id; });
      ASSERT_NE(it, aliases.end()) << node << " lacks " << want.name;
      EXPECT_EQ(it->name, want.name);
    }
  }
}

// An NVMe namespace's generic device and its controller's are aliases of the namespace and of
// its partitions, and no other namespace's generic device is (as sysfs shows them: the disk's
// `device` is the controller, whose children are the namespaces' ngXnY; a multipath head's
// `device` is the subsystem, which holds the head's ngXnY and links its controllers).
TEST(VolumeIdentity, NvmePassthroughDevicesOfANamespaceFromSysfs) {
  SOVGUARD_REQUIRE(::geteuid() == 0, "root (mknod)");
  TempDir tmp;
  const fs::path sys = tmp.path() / "sys";
  fs::create_directories(sys / "dev/block");
  fs::create_directories(sys / "block");
  const auto blk = [&](const fs::path& d, const std::string& mm) {
    fs::create_directory_symlink(d, sys / "dev/block" / mm);
  };
  // One controller, two namespaces; namespace 1 has a partition.
  const fs::path ctrl = sys / "devices/pci0000:00/0000:00:04.0/nvme/nvme7";
  WriteSysfsDevice(ctrl, "242:7", "nvme7");
  WriteSysfsDevice(ctrl / "nvme7n1", "259:10", "nvme7n1");
  WriteSysfsDevice(ctrl / "nvme7n1/nvme7n1p1", "259:11", "nvme7n1p1");
  std::ofstream(ctrl / "nvme7n1/nvme7n1p1/partition") << "1\n";
  WriteSysfsDevice(ctrl / "nvme7n2", "259:12", "nvme7n2");
  WriteSysfsDevice(ctrl / "ng7n1", "241:10", "ng7n1");
  WriteSysfsDevice(ctrl / "ng7n2", "241:11", "ng7n2");
  fs::create_directory_symlink(ctrl, ctrl / "nvme7n1/device");
  fs::create_directory_symlink(ctrl, ctrl / "nvme7n2/device");
  blk(ctrl / "nvme7n1", "259:10");
  blk(ctrl / "nvme7n1/nvme7n1p1", "259:11");
  blk(ctrl / "nvme7n2", "259:12");
  // A multipath head: its disk and ngXnY under the subsystem, which links its controller.
  const fs::path subsys = sys / "devices/virtual/nvme-subsystem/nvme-subsys3";
  const fs::path ctrl3 = sys / "devices/pci0000:00/0000:00:05.0/nvme/nvme3";
  WriteSysfsDevice(ctrl3, "242:3", "nvme3");
  WriteSysfsDevice(subsys / "nvme3n1", "259:20", "nvme3n1");
  WriteSysfsDevice(subsys / "ng3n1", "241:20", "ng3n1");
  fs::create_directory_symlink(ctrl3, subsys / "nvme3");
  fs::create_directory_symlink(subsys, subsys / "nvme3n1/device");
  blk(subsys / "nvme3n1", "259:20");
  const auto node = [&](const std::string& name, unsigned maj, unsigned min) {
    const fs::path p = tmp.path() / name;
    EXPECT_EQ(::mknod(p.c_str(), S_IFBLK | 0600, makedev(maj, min)), 0) << p;
    return p;
  };
  const auto chr = [](unsigned maj, unsigned min) {
    return VolumeId{kCharDevice, (std::uint64_t{maj} << 20) | min};
  };
  const auto ids = [](const std::vector<VolumeAlias>& v) {
    std::map<VolumeId, std::string> out;
    for (const auto& a : v) out[a.id] = a.name;
    return out;
  };
  for (const auto& p : {node("nvme7n1", 259, 10), node("nvme7n1p1", 259, 11)}) {
    const auto got = ids(VolumeAliases(p, sys));
    EXPECT_EQ(got.size(), 3u) << p;  // the other of disk/partition, ng7n1, nvme7
    EXPECT_EQ(got.count(chr(241, 10)) ? got.at(chr(241, 10)) : "", "/dev/ng7n1") << p;
    EXPECT_EQ(got.count(chr(242, 7)) ? got.at(chr(242, 7)) : "", "/dev/nvme7") << p;
    EXPECT_EQ(got.count(chr(241, 11)), 0u) << p << ": ng7n2 is another namespace's";
  }
  const auto of_n2 = ids(VolumeAliases(node("nvme7n2", 259, 12), sys));
  EXPECT_EQ(of_n2, (std::map<VolumeId, std::string>{{chr(241, 11), "/dev/ng7n2"},
                                                    {chr(242, 7), "/dev/nvme7"}}));
  const auto of_head = ids(VolumeAliases(node("nvme3n1", 259, 20), sys));
  EXPECT_EQ(of_head, (std::map<VolumeId, std::string>{{chr(241, 20), "/dev/ng3n1"},
                                                      {chr(242, 3), "/dev/nvme3"}}));
}

}  // namespace
}  // namespace sovguard::storage
