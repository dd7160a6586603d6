// Host-side facts about a running guest that the domain XML does not hold: the QEMU process and
// its cgroup v2 directory. Pure file reads (no libvirt calls), so the qemu hook may use them too.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sovguard::libvirt {

// The "0::/path" line of /proc/<pid>/cgroup (the v2 hierarchy); nullopt when the process is gone.
std::optional<std::string> ProcessCgroup2Path(pid_t pid, const std::string& proc_root = "/proc");

// libvirt puts QEMU's main thread in <scope>/emulator and vCPUs in <scope>/vcpuN: BPF cgroup
// programs go on the scope so every thread of the guest is covered. The scope is the per-guest
// directory, the ancestor of every QEMU thread:
//   no systemd-machined  /machine/qemu-1-vm1.libvirt-qemu/{emulator,vcpuN,iothreadN}
//   systemd-machined     /machine.slice/machine-qemu\x2d1\x2dvm1.scope/libvirt/{emulator,...}
//                        (also .../scope/libvirt itself, and libvirt < 7.1's .../scope/emulator)
// Anything else is returned unchanged.
std::string DomainScope(const std::string& process_cgroup);

// The QEMU pid libvirt recorded (run_dir/NAME.pid), checked against /proc/<pid>/cmdline containing
// "guest=NAME" so a stale or recycled pid is never returned.
std::optional<pid_t> QemuPid(const std::string& name,
                             const std::string& run_dir = "/run/libvirt/qemu",
                             const std::string& proc_root = "/proc");

// True if /proc/<pid>/cmdline is a QEMU started by libvirt for `name` (its -name guest=NAME,...).
bool IsQemuFor(pid_t pid, const std::string& name, const std::string& proc_root = "/proc");

struct CgroupInfo {
  std::string process_path;  // absolute directory of QEMU's own cgroup (.../emulator)
  std::string scope_path;    // absolute directory of the domain scope (attach point)
  // cgroup id (= inode number) of the scope. QEMU's threads sit in threaded children of it
  // (emulator, vcpuN), so BPF matches it with bpf_get_current_ancestor_cgroup_id(scope_level) /
  // bpf_skb_ancestor_cgroup_id(skb, scope_level), not bpf_get_current_cgroup_id().
  uint64_t scope_id = 0;
  // depth below the cgroup2 root: "/machine/qemu-1-x.libvirt-qemu" -> 2,
  // "/machine.slice/machine-qemu\x2d1\x2dx.scope" -> 2
  int scope_level = 0;
  bool operator==(const CgroupInfo&) const = default;
};

// Resolves QEMU's cgroup v2 directories; nullopt if cgroup2 is not mounted or pid is gone.
std::optional<CgroupInfo> ResolveCgroup(pid_t pid);

// What a storage pool volume is on this host (virStorageVolGetPath, virStorageVolGetInfo).
struct PoolVolume {
  std::string type;  // "file" or "block": what QEMU opens; anything else: type of the volume
  std::string path;
};
// Asks libvirt at `uri` (its own read-only connection: storage driver calls only, never the
// domain's, so the qemu hook may wait on it) for the volume `volume` of pool `pool`. Throws
// LibvirtError (connection.h) with libvirt's message when the pool or volume is unknown.
PoolVolume ResolvePoolVolume(const std::string& uri, const std::string& pool,
                             const std::string& volume);

}  // namespace sovguard::libvirt
