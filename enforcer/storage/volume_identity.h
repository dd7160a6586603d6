// The identity of a storage volume as the storage programs compute it in the kernel, and every
// other identity under which the same bytes can be opened (aliases).
//
// Identity rule (bpf/storage/storage_guard.bpf.c, volume_of(), reads file->f_inode):
//   block device   (0, i_rdev)                     kernel dev_t encoding (major << 20 | minor)
//   char device    (kCharDevice, i_rdev)           only as an alias: SCSI generic, NVMe nodes
//   regular file   (i_sb->s_dev, i_ino)            the super block's device, not stat()'s st_dev
//                  btrfs: (root->anon_dev, i_ino)  the subvolume's anonymous device (inode numbers
//                                                  repeat in every subvolume)
// User space reads the super block's device from /proc/self/mountinfo (its major:minor is
// sb->s_dev) for the file's mount (statx STATX_MNT_ID); st_dev differs from it on overlayfs
// across file systems (a per-layer pseudo device). On btrfs st_dev is the subvolume's anonymous
// device, which is what the program reads. st_ino equals i_ino on every file system here
// (overlayfs maps both the same way).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace sovguard::storage {

// VolumeId::dev of a character device (SG_VOLUME_CHAR_DEV: no 32-bit s_dev equals it).
inline constexpr std::uint64_t kCharDevice = std::uint64_t{1} << 32;

struct VolumeId {
  std::uint64_t dev = 0;  // 0 for a block device, kCharDevice for a character device
  std::uint64_t ino = 0;  // i_ino, or the block device's kernel dev_t
  bool operator==(const VolumeId&) const = default;
  auto operator<=>(const VolumeId&) const = default;
};

// The kernel's identity of the file or block device at `path` (symlinks followed).
// `btrfs_subvolumes`: whether the programs read a btrfs file's subvolume device; when they were
// loaded without the kernel's description of btrfs inodes (btrfs a module not yet loaded), they
// key btrfs files by the super block's device like any file system, and so must user space.
// Throws std::system_error when it cannot be stat'ed, std::runtime_error when it is neither a
// regular file nor a block device or its mount is not in /proc/self/mountinfo.
VolumeId KernelVolumeId(const std::filesystem::path& path, bool btrfs_subvolumes = true);

// One other way to the same bytes.
struct VolumeAlias {
  VolumeId id;
  std::string name;  // "/dev/dm-0", "/dev/loop3p1", a file path
  std::string why;   // "partition of /dev/loop3", "device-mapper holder of ...", ...
};

// Every alias of the volume at `path` that exists now (the volume itself not included):
//   overlayfs file   the files holding it in the upper layer and in the first lower layer that
//                    has it (and their aliases); one that cannot be identified throws
//   block device     its partitions and device-mapper/md slaves (parts of its bytes), and of all
//                    those: holders (dm, md), the whole disk of a partition, and the file behind a
//                    loop device; a loop device over a file alias is one too; the SCSI generic
//                    character devices of every SCSI disk among them (/dev/sg*, /dev/bsg/*: SG_IO
//                    reads and writes the disk's bytes past the block device), and of every NVMe
//                    namespace its generic device and its controller's (/dev/ngXnY, /dev/nvmeX:
//                    NVMe pass-through commands read and write the namespace past it)
//   regular file     loop devices backed by it, and their partitions and holders
// From sysfs (`sys`, "/sys" on the host). Bounded: at most 256 aliases. `loops`: the loop
// devices as LoopDevices(sys, btrfs_subvolumes) read them (one scan for many volumes); null: read
// here.
struct LoopDevice {
  std::uint64_t kdev = 0;  // kernel encoding
  VolumeId backing;        // the file it is backed by
};
std::vector<LoopDevice> LoopDevices(const std::filesystem::path& sys = "/sys",
                                    bool btrfs_subvolumes = true);
std::vector<VolumeAlias> VolumeAliases(const std::filesystem::path& path,
                                       const std::filesystem::path& sys = "/sys",
                                       bool btrfs_subvolumes = true,
                                       const std::vector<LoopDevice>* loops = nullptr);

// Whether `path` is a regular file on overlayfs: its layer file changes when it is copied up (a
// write open, chmod, touch), so its aliases must be asked again. False when it cannot be stat'ed.
bool OnOverlay(const std::filesystem::path& path);

// Copies a regular file on overlayfs up to the upper layer now, so that one upper-layer file holds
// its bytes for as long as it is protected (a later write, chmod or touch would otherwise move
// them to a file nothing protects yet). Nothing to do off overlayfs; nothing to copy on an
// overlay without an upper layer. Returns why it could not copy up where the file system is
// read-only where the caller looks (EROFS: a service's ProtectSystem=, an overlay mounted ro over
// an upper layer; a copy-up elsewhere stays possible), else empty. Throws, naming the file and
// the reason, when the copy-up fails otherwise (errno), when no layer file holds it afterwards,
// and where its bytes may lie where its path does not lead in the layers (a renamed directory on
// its way, metacopy=on, data-only lower layers).
std::string CopyUpOverlayFile(const std::filesystem::path& path);

}  // namespace sovguard::storage
