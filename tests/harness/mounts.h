// Kernel pseudo-filesystems that BPF and kernel tests need. systemd mounts them on a normal host;
// these machines have no systemd, so the harness (like the daemon) mounts what is missing.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace sovguard::test {

struct MountEntry {
  std::string mount_point;
  std::string fs_type;
};

// Parses /proc/self/mountinfo (fields after " - " hold the fs type).
std::vector<MountEntry> ReadMounts(const std::string& mountinfo = "/proc/self/mountinfo");

// The first mount point of `fs_type`, if any.
std::optional<std::string> FindMount(const std::string& fs_type);

// Mounts bpffs on /sys/fs/bpf, tracefs on /sys/kernel/tracing and securityfs on
// /sys/kernel/security where no filesystem of that type is mounted yet. Throws naming the mount
// that failed. Returns the mount points it mounted (it never unmounts: others share them).
std::vector<std::string> EnsureKernelFilesystems();

// Replaces the cgroup directory `cgroup` by a new, empty one of the same name (mode 0755): its
// child cgroups, which must hold no process, are removed deepest first. Throws std::system_error
// naming the directory that could not be removed or created.
void ReplaceCgroup(const std::string& cgroup);

// A mount a test makes with mount(8) on `where`, unmounted lazily (MNT_DETACH) on destruction: a
// process still holding a file under it does not keep it from going.
class ScopedMount {
 public:
  explicit ScopedMount(std::filesystem::path where) : where_(std::move(where)) {}
  ~ScopedMount();
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;
  // Runs `mount ARGS... WHERE` (ARGS such as {"-t", "tmpfs", "name"}); false when it failed or
  // this object holds a mount already, with mount's words in *error.
  bool Mount(const std::vector<std::string>& args, std::string* error = nullptr);

 private:
  std::filesystem::path where_;
  bool mounted_ = false;
};

}  // namespace sovguard::test
