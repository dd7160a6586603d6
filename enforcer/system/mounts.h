// Kernel file systems the enforcer needs. On a fresh machine they may not be mounted; the daemon
// mounts them as systemd would, and says so.
#pragma once

#include <filesystem>
#include <optional>
#include <string>

namespace sovguard::enforcer {

// A path field of /proc/*/mountinfo as text: the kernel escapes space, tab, newline and backslash
// in it as \ooo (three octal digits).
std::string UnescapeMountPath(const std::string& in);

// Mount point of the cgroup v2 hierarchy, read from /proc/self/mountinfo (never hard-coded: it is
// /sys/fs/cgroup on unified hosts and /sys/fs/cgroup/unified on hybrid ones).
std::optional<std::filesystem::path> FindCgroup2Mount(
    const std::filesystem::path& mountinfo = "/proc/self/mountinfo");

// Each returns true when it had to mount; throws std::system_error when mounting failed.
bool EnsureBpffs(const std::filesystem::path& where = "/sys/fs/bpf");
bool EnsureSecurityfs(const std::filesystem::path& where = "/sys/kernel/security");

// True when `where` is a mount point of file system type `fstype` (per /proc/self/mountinfo).
bool IsMounted(const std::filesystem::path& where, const std::string& fstype);

}  // namespace sovguard::enforcer
