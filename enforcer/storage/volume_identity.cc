#include "enforcer/storage/volume_identity.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>

#include <cerrno>
#include <deque>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <system_error>

#include "base/errno_text.h"
#include "base/file.h"
#include "base/unique_fd.h"
#include "enforcer/system/mounts.h"

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

namespace sovguard::storage {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxAliases = 256;

std::uint64_t KernelDev(std::uint64_t major_no, std::uint64_t minor_no) {
  return (major_no << 20) | minor_no;
}

struct MountEntry {
  std::uint64_t sb_dev = 0;  // kernel encoding
  std::string root;          // path inside the file system that is mounted
  std::string mount_point;
  std::string fstype;
  std::string super_options;
};

std::optional<MountEntry> FindMount(std::uint64_t mnt_id) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    std::istringstream in(line);
    std::uint64_t id = 0, parent = 0;
    std::string devno, root, mount_point, field;
    if (!(in >> id >> parent >> devno >> root >> mount_point) || id != mnt_id) continue;
    while (in >> field && field != "-") {
    }
    MountEntry e;
    std::string source;
    in >> e.fstype >> source >> e.super_options;
    const auto colon = devno.find(':');
    if (colon == std::string::npos) return std::nullopt;
    e.sb_dev = KernelDev(std::stoull(devno.substr(0, colon)), std::stoull(devno.substr(colon + 1)));
    e.root = enforcer::UnescapeMountPath(root);
    e.mount_point = enforcer::UnescapeMountPath(mount_point);
    return e;
  }
  return std::nullopt;
}

struct Statx {
  struct statx stx {};
};

Statx StatxOf(const fs::path& path) {
  Statx s;
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_BASIC_STATS | STATX_MNT_ID, &s.stx) != 0) {
    throw std::system_error(errno, std::generic_category(), "statx " + path.string());
  }
  return s;
}

// "M:m" of a sysfs block directory's dev file, in kernel encoding; nullopt if unreadable.
std::optional<std::uint64_t> SysDev(const fs::path& dir) {
  const std::string s = base::ReadFirstLine(dir / "dev");
  const auto colon = s.find(':');
  if (colon == std::string::npos) return std::nullopt;
  try {
    return KernelDev(std::stoull(s.substr(0, colon)), std::stoull(s.substr(colon + 1)));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

fs::path SysBlockDir(const fs::path& sys, std::uint64_t kdev) {
  return sys / "dev/block" / (std::to_string(kdev >> 20) + ":" + std::to_string(kdev & 0xfffff));
}

// The device node's name from a sysfs device directory's uevent, else "<kind> M:m".
std::string DevName(const fs::path& dir, std::uint64_t kdev, std::string_view kind = "blk") {
  std::ifstream f(dir / "uevent");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("DEVNAME=", 0) == 0) return "/dev/" + line.substr(8);
  }
  return std::string(kind) + " " + std::to_string(kdev >> 20) + ":" +
         std::to_string(kdev & 0xfffff);
}

// An overlayfs mount's layers as its super options in mountinfo give them: the kernel escapes
// a layer path's ',', '=', '\\', space and the like as \ooo (octal); overlayfs's own ':' in a
// layer path as \:. `unsupported`: an option under which a file's bytes may lie in a layer its
// path does not lead to (metadata-only copies, data-only layers), naming it.
struct OverlayLayers {
  std::string upper;                // empty: none (a read-only overlay)
  std::vector<std::string> lowers;  // top first
  std::string unsupported;
  // Every layer, the upper one first.
  std::vector<std::string> TopFirst() const {
    std::vector<std::string> all = lowers;
    if (!upper.empty()) all.insert(all.begin(), upper);
    return all;
  }
};

OverlayLayers ParseOverlayOptions(const std::string& super_options) {
  std::vector<std::string> options{""};
  const std::string& in = super_options;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '\\' && i + 3 < in.size() && in.find_first_not_of("01234567", i + 1) >= i + 4) {
      options.back() += static_cast<char>(std::stoi(in.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else if (c == '\\' && i + 1 < in.size()) {
      options.back() += in[++i];  // \: and the like: the character itself, never a separator
    } else if (c == ',') {
      options.emplace_back();
    } else {
      options.back() += c == ':' ? '\0' : c;  // ':' separates lower layers
    }
  }
  OverlayLayers out;
  const auto unsupported = [&](const std::string& what) {
    out.unsupported += (out.unsupported.empty() ? "" : ", ") + what;
  };
  for (const auto& o : options) {
    if (o.rfind("upperdir=", 0) == 0) out.upper = o.substr(9);
    if (o.rfind("lowerdir=", 0) == 0 || o.rfind("lowerdir+=", 0) == 0) {
      const std::string list = o.substr(o.find('=') + 1);
      if (list.find(std::string(2, '\0')) != std::string::npos)
        unsupported("data-only lower layers (lowerdir with '::')");
      std::size_t start = 0;
      while (start <= list.size()) {
        const std::size_t end = list.find('\0', start);
        const std::string layer = list.substr(start, end - start);
        if (!layer.empty()) out.lowers.push_back(layer);
        if (end == std::string::npos) break;
        start = end + 1;
      }
    }
    if (o.rfind("datadir+=", 0) == 0) unsupported("data-only lower layers (datadir+=)");
    if (o == "metacopy=on") unsupported(o);
  }
  return out;
}

// Whether a directory on the way from `layer` to `rel` in it is a renamed one (an overlayfs
// redirect xattr: the lower layers hold its files under another path).
bool RedirectOnTheWay(const fs::path& layer, const fs::path& rel) {
  fs::path dir = layer;
  for (const auto& part : rel.parent_path()) {
    dir /= part;
    for (const char* name : {"trusted.overlay.redirect", "user.overlay.redirect"})
      if (::lgetxattr(dir.c_str(), name, nullptr, 0) >= 0) return true;
  }
  return false;
}

// The path of `path` inside the overlay's layers, or empty when it is not under the mount.
fs::path RelativeInOverlay(const fs::path& path, const MountEntry& m) {
  std::error_code ec;
  const fs::path canonical = fs::canonical(path, ec);
  if (ec) return {};
  const fs::path rel_in_mount = canonical.lexically_relative(m.mount_point);
  if (rel_in_mount.empty() || *rel_in_mount.begin() == "..") return {};
  return (fs::path(m.root) / rel_in_mount).relative_path();
}

// The layer files holding an overlayfs file's bytes: the upper layer's (once copied up) and the
// first lower layer's that has it (the bytes as they were before the copy-up), top first.
std::vector<fs::path> OverlayLayerFiles(const fs::path& path, const MountEntry& m) {
  const fs::path rel = RelativeInOverlay(path, m);
  if (rel.empty()) return {};
  const OverlayLayers layers = ParseOverlayOptions(m.super_options);
  std::vector<fs::path> found;
  for (const auto& layer : layers.TopFirst()) {
    struct stat st {};
    const fs::path candidate = fs::path(layer) / rel;
    if (::lstat(candidate.c_str(), &st) != 0) continue;
    if (S_ISCHR(st.st_mode) && st.st_rdev == 0) break;  // a whiteout: nothing below shows
    found.push_back(candidate);
    if (layer != layers.upper) break;  // the first lower layer's is what shows
  }
  return found;
}

// The NVMe pass-through character devices that reach the namespace whose block device's sysfs
// directory is `disk` (nothing for other disks): its generic device ngXnY (NVME_IOCTL_IO64_CMD,
// io_uring commands) and its controller's nvmeX (NVME_IOCTL_IO_CMD, admin commands). sysfs: the
// disk's `device` is the controller (or, for a multipath head, its subsystem, which links its
// controllers); the generic device is a child of the same device, named ng<ctrl>n<Y> where the
// disk is nvme<..>n<Y> (Y: the namespace head's instance, unique within the subsystem).
struct PassthroughDevice {
  std::uint64_t kdev;
  std::string name;
  std::string why;
};
std::vector<PassthroughDevice> NvmePassthroughDevices(const fs::path& disk) {
  std::vector<PassthroughDevice> out;
  std::error_code ec;
  const std::string disk_name = fs::canonical(disk, ec).filename().string();
  if (ec || disk_name.rfind("nvme", 0) != 0) return out;
  const auto n = disk_name.rfind('n');
  if (n == std::string::npos || n + 1 >= disk_name.size() || n < 4) return out;
  const std::string head = disk_name.substr(n + 1);  // "1" of nvme0n1
  if (head.find_first_not_of("0123456789") != std::string::npos) return out;
  const auto digits_after = [](const std::string& s, std::size_t at) {
    return at < s.size() && s.find_first_not_of("0123456789", at) == std::string::npos;
  };
  const fs::path parent = disk / "device";
  std::vector<fs::path> controllers;
  if (fs::exists(parent / "dev", ec)) {
    controllers.push_back(parent);
  } else {  // a multipath head: the subsystem links its controllers
    for (const auto& e : fs::directory_iterator(parent, ec)) {
      const std::string c = e.path().filename().string();
      if (c.rfind("nvme", 0) == 0 && digits_after(c, 4)) controllers.push_back(e.path());
    }
  }
  for (const auto& c : controllers) {
    if (const auto k = SysDev(c))
      out.push_back({*k, DevName(c, *k, "chr"), "NVMe controller device (pass-through)"});
  }
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string g = e.path().filename().string();
    const auto gn = g.rfind('n');
    if (g.rfind("ng", 0) != 0 || gn == std::string::npos || gn < 3 || g.substr(gn + 1) != head ||
        g.substr(2, gn - 2).find_first_not_of("0123456789") != std::string::npos)
      continue;
    if (const auto k = SysDev(e.path()))
      out.push_back({*k, DevName(e.path(), *k, "chr"), "NVMe generic device (pass-through)"});
  }
  return out;
}

}  // namespace

VolumeId KernelVolumeId(const fs::path& path, bool btrfs_subvolumes) {
  const Statx s = StatxOf(path);
  const auto mode = s.stx.stx_mode;
  if (S_ISBLK(mode)) {
    return VolumeId{.dev = 0, .ino = KernelDev(s.stx.stx_rdev_major, s.stx.stx_rdev_minor)};
  }
  if (!S_ISREG(mode)) {
    throw std::runtime_error("volume " + path.string() + " is neither a file nor a block device");
  }
  if (!(s.stx.stx_mask & STATX_MNT_ID)) {
    throw std::runtime_error("volume " + path.string() + ": the kernel gave no mount id (statx)");
  }
  const auto m = FindMount(s.stx.stx_mnt_id);
  if (!m) {
    throw std::runtime_error("volume " + path.string() + ": mount " +
                             std::to_string(s.stx.stx_mnt_id) + " not in /proc/self/mountinfo");
  }
  // btrfs: the subvolume's anonymous device, which stat() reports and the program reads.
  const std::uint64_t dev = m->fstype == "btrfs" && btrfs_subvolumes
                                ? KernelDev(s.stx.stx_dev_major, s.stx.stx_dev_minor)
                                : m->sb_dev;
  return VolumeId{.dev = dev, .ino = s.stx.stx_ino};
}

std::vector<LoopDevice> LoopDevices(const fs::path& sys, bool btrfs_subvolumes) {
  std::vector<LoopDevice> loops;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(sys / "block", ec)) {
    const fs::path backing = e.path() / "loop/backing_file";
    if (!fs::exists(backing, ec)) continue;
    const auto kdev = SysDev(e.path());
    if (!kdev) continue;
    try {
      loops.push_back({*kdev, KernelVolumeId(base::ReadFirstLine(backing), btrfs_subvolumes)});
    } catch (const std::exception&) {
      // Backing file deleted or unreachable from here: its bytes are no protected file's path.
    }
  }
  return loops;
}

bool OnOverlay(const fs::path& path) {
  struct statx stx {};
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_TYPE | STATX_MNT_ID, &stx) != 0 ||
      !S_ISREG(stx.stx_mode) || !(stx.stx_mask & STATX_MNT_ID))
    return false;
  const auto m = FindMount(stx.stx_mnt_id);
  return m && m->fstype == "overlay";
}

std::string CopyUpOverlayFile(const fs::path& path) {
  const Statx s = StatxOf(path);
  const auto m = FindMount(s.stx.stx_mnt_id);
  if (!S_ISREG(s.stx.stx_mode) || !m || m->fstype != "overlay") return {};
  const auto fail = [&](const std::string& why) {
    throw std::runtime_error("overlayfs file " + path.string() + ": " + why);
  };
  const OverlayLayers layers = ParseOverlayOptions(m->super_options);
  if (!layers.unsupported.empty())
    fail("its mount has " + layers.unsupported +
         ": the layer holding its bytes is not found by path");
  const fs::path rel = RelativeInOverlay(path, *m);
  if (rel.empty()) fail("not found under its overlay mount " + m->mount_point);
  for (const auto& layer : layers.TopFirst())
    if (RedirectOnTheWay(layer, rel))
      fail("a directory on its way in layer " + layer +
           " was renamed (overlayfs redirect): the layer holding its bytes is not found by path");
  if (!layers.upper.empty()) {
    // A write open copies the file up (overlayfs does it before the open returns); nothing is
    // written. O_NOFOLLOW and the check after it: the file opened is the one asked for.
    const base::UniqueFd fd(
        ::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK | O_NOFOLLOW));
    if (fd.Get() < 0 && errno == EROFS) return "read-only here, not copied up";
    if (fd.Get() < 0) fail("copy-up: " + base::ErrnoText(errno));
    struct stat st {};
    if (::fstat(fd.Get(), &st) != 0 || !S_ISREG(st.st_mode)) fail("copy-up: not a regular file");
  }
  const auto files = OverlayLayerFiles(path, *m);
  if (files.empty() ||
      (!layers.upper.empty() && !files.front().string().starts_with(layers.upper + "/")))
    fail(layers.upper.empty() ? "no layer file holds it"
                              : "no file in the upper layer " + layers.upper + " holds it");
  return {};
}

std::vector<VolumeAlias> VolumeAliases(const fs::path& path, const fs::path& sys,
                                       bool btrfs_subvolumes,
                                       const std::vector<LoopDevice>* loops_read) {
  const auto KernelVolumeId = [btrfs_subvolumes](const fs::path& p) {
    return storage::KernelVolumeId(p, btrfs_subvolumes);
  };
  std::vector<VolumeAlias> out;
  std::set<VolumeId> seen{KernelVolumeId(path)};
  const auto add = [&](const VolumeId& id, std::string name, std::string why) {
    if (out.size() >= kMaxAliases || !seen.insert(id).second) return false;
    out.push_back(VolumeAlias{id, std::move(name), std::move(why)});
    return true;
  };
  // Nodes to expand: downward (parts of the bytes) and upward (what contains them).
  struct Node {
    VolumeId id;
    std::string name;
    fs::path file;  // regular files only
  };
  std::deque<Node> down{Node{*seen.begin(), path.string(), {}}};
  if (down.front().id.dev != 0) down.front().file = path;
  std::vector<Node> all;

  // Overlayfs: the layer's real file is the same bytes.
  if (down.front().id.dev != 0) {
    const Statx s = StatxOf(path);
    if (const auto m = FindMount(s.stx.stx_mnt_id); m && m->fstype == "overlay") {
      // A layer file that cannot be identified throws: its bytes would stay unprotected.
      for (const auto& real : OverlayLayerFiles(path, *m)) {
        const VolumeId id = KernelVolumeId(real);
        if (add(id, real.string(), "overlayfs layer file of " + path.string()))
          down.push_back(Node{id, real.string(), real});
      }
    }
  }

  // Loop devices and the (kernel id of the) file each is backed by.
  std::vector<LoopDevice> loops_here;
  if (!loops_read) loops_here = LoopDevices(sys, btrfs_subvolumes);
  const std::vector<LoopDevice>& loops = loops_read ? *loops_read : loops_here;
  std::error_code ec;

  // Downward: partitions, slaves, a loop device's backing file.
  while (!down.empty() && out.size() < kMaxAliases) {
    Node n = std::move(down.front());
    down.pop_front();
    all.push_back(n);
    if (n.id.dev != 0) continue;
    const fs::path dir = SysBlockDir(sys, n.id.ino);
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (!fs::exists(e.path() / "partition", ec)) continue;
      if (const auto k = SysDev(e.path())) {
        const VolumeId id{0, *k};
        if (add(id, DevName(e.path(), *k), "partition of " + n.name))
          down.push_back(Node{id, out.back().name, {}});
      }
    }
    for (const auto& e : fs::directory_iterator(dir / "slaves", ec)) {
      if (const auto k = SysDev(e.path())) {
        const VolumeId id{0, *k};
        if (add(id, DevName(e.path(), *k), "slave (underlying device) of " + n.name))
          down.push_back(Node{id, out.back().name, {}});
      }
    }
    if (fs::exists(dir / "loop/backing_file", ec)) {
      const fs::path file = base::ReadFirstLine(dir / "loop/backing_file");
      try {
        const VolumeId id = KernelVolumeId(file);
        if (add(id, file.string(), "backing file of " + n.name))
          down.push_back(Node{id, file.string(), file});
      } catch (const std::exception&) {
      }
    }
  }

  // Upward from everything found: holders, the whole disk of a partition, loop devices over a
  // file.
  for (std::size_t i = 0; i < all.size() && out.size() < kMaxAliases; ++i) {
    const Node n = all[i];
    std::vector<std::pair<std::uint64_t, std::string>> up;  // (kdev, why)
    if (n.id.dev != 0) {
      for (const auto& l : loops)
        if (l.backing == n.id) up.emplace_back(l.kdev, "loop device over " + n.name);
    } else {
      const fs::path dir = SysBlockDir(sys, n.id.ino);
      for (const auto& e : fs::directory_iterator(dir / "holders", ec))
        if (const auto k = SysDev(e.path())) up.emplace_back(*k, "holder (dm/md) of " + n.name);
      if (fs::exists(dir / "partition", ec)) {
        if (const auto k = SysDev(fs::canonical(dir, ec).parent_path()))
          up.emplace_back(*k, "whole disk of partition " + n.name);
      }
    }
    for (const auto& [kdev, why] : up) {
      const VolumeId id{0, kdev};
      if (add(id, DevName(SysBlockDir(sys, kdev), kdev), why))
        all.push_back(Node{id, out.back().name, {}});
    }
    // A SCSI disk's pass-through character devices (its partitions have no `device`).
    if (n.id.dev == 0) {
      const fs::path scsi = SysBlockDir(sys, n.id.ino) / "device";
      for (const char* cls : {"scsi_generic", "bsg"}) {
        for (const auto& e : fs::directory_iterator(scsi / cls, ec)) {
          if (const auto k = SysDev(e.path()))
            add(VolumeId{kCharDevice, *k}, DevName(e.path(), *k, "chr"),
                std::string("SCSI ") + (cls[0] == 's' ? "generic" : "bsg") + " device of " +
                    n.name);
        }
      }
      for (const auto& [kdev, name, why] : NvmePassthroughDevices(SysBlockDir(sys, n.id.ino)))
        add(VolumeId{kCharDevice, kdev}, name, why + " of " + n.name);
    }
  }
  return out;
}

}  // namespace sovguard::storage
