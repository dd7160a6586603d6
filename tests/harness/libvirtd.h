// Starts and stops a private virtlogd + libvirtd for integration tests (no systemd here).
//
// Isolation: both daemons run in private mount namespaces (slave propagation) in which the harness
// bind-mounts its own directories from kStateDir over
//   /etc/libvirt      qemu.conf (QEMU as root), persistent test domains, the hook dispatcher
//   /run/libvirt      sockets, QEMU pid files and status XML  -> visible at kStateDir/run
//   /var/log/libvirt  daemon and per-guest QEMU logs          -> visible at kStateDir/log
//   /var/lib/libvirt, /var/cache/libvirt   domain state (master keys, channels), capabilities:
//                     libvirt re-owns them for its QEMU user (root here), which on the host would
//                     lock Debian's own libvirtd (QEMU as libvirt-qemu) out of them
//   /etc/passwd,group only when the host lacks the `libvirt-qemu` account Debian's libvirt resolves
// and they write their pid files under kStateDir. /run/sovguard-test is a shared bind mount of
// itself while they run, so a test's mount beneath it (an overlay holding a guest's image) reaches
// their namespaces too. Mount points the host lacks are created and removed again by Stop(), which
// also unmounts and removes /run/sovguard-test (kStateDir, guest consoles). So
// the test daemons never collide with a libvirtd that already runs on the machine (a developer's,
// another test's, a packaging test's), nothing on the host is edited, and everything else (taps,
// cgroups, /sys, /dev, /proc) is shared exactly as in production. Clients reach it through Uri()
// (qemu:///system?socket=...).
//
// Hook: the overlay holds /etc/libvirt/hooks/qemu.d/sovguard-test, which execs whatever the
// running test pointed kHookTarget at (exit 0 when nothing). libvirt only looks for hooks when it
// starts, so a dispatcher that is always there lets tests switch hooks without a restart.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace sovguard::test {

// Mount points of every cgroup hierarchy (v1 and v2), from /proc/mounts.
std::vector<std::filesystem::path> CgroupHierarchies();
// `machine` in every cgroup hierarchy (CgroupHierarchies) that has none now. libvirt creates them
// at a guest's first start, sovguardd when it guards the machine cgroup, and neither removes them:
// whatever starts those notes this list first.
std::vector<std::filesystem::path> AbsentMachineCgroups();
// Removes a cgroup directory tree bottom-up (rmdir); throws when one still holds a process.
void RemoveCgroupTree(const std::filesystem::path& dir);

// A libvirt cgroup partition of a test's own (a guest's <resource><partition>/NAME</partition>,
// sovguardd's libvirt_partition=/NAME): NAME.partition created in every mounted cgroup hierarchy,
// as libvirt requires without systemd, and removed again with what is below it.
class LibvirtPartition {
 public:
  explicit LibvirtPartition(const std::string& name);
  ~LibvirtPartition();
  LibvirtPartition(const LibvirtPartition&) = delete;
  LibvirtPartition& operator=(const LibvirtPartition&) = delete;

 private:
  std::vector<std::filesystem::path> made_;
};

class LibvirtDaemons {
 public:
  static constexpr const char* kStateDir = "/run/sovguard-test/libvirt";
  static constexpr const char* kHookTarget = "/run/sovguard-test/libvirt/hook-target";
  // URI of the harness's libvirtd (the socket lives in kStateDir/run).
  static constexpr const char* kUri =
      "qemu:///system?socket=/run/sovguard-test/libvirt/run/libvirt-sock";
  // Where that libvirtd's QEMU pid files are (WatcherOptions::qemu_run_dir in tests).
  static constexpr const char* kQemuRunDir = "/run/sovguard-test/libvirt/run/qemu";
  static constexpr const char* kLogDir = "/run/sovguard-test/libvirt/log";
  // Prefix of every domain a test defines; cleanup destroys leftovers with this prefix.
  static constexpr const char* kTestDomainPrefix = "sgt-";

  // Starts the harness's virtlogd and libvirtd unless they already run (a libvirtd the harness
  // did not start is left alone and not used). Returns true if it started libvirtd.
  static bool Start();
  // Destroys and undefines leftover test domains, stops what Start() started and removes
  // /run/sovguard-test and the mount points it created. Idempotent.
  static void Stop();

  static void StartLibvirtd();
  static void StopLibvirtd();
  // Stops libvirtd with SIGTERM (running guests survive, as in a real daemon restart) and starts
  // it again with the same overlay; returns when the new one answers.
  static void RestartLibvirtd();

  // True when `virsh -c kUri version` succeeds.
  static bool Answering();
  static pid_t LibvirtdPid();  // 0 when not running
  static pid_t VirtlogdPid();  // 0 when not running

  // Waits (bounded) until libvirtd answers; throws with the tail of libvirtd.log on timeout.
  static void WaitAnswering(std::chrono::milliseconds timeout = std::chrono::seconds(30));
};

// RAII: points the hook dispatcher at `executable` for the lifetime of the object.
class ScopedHookTarget {
 public:
  explicit ScopedHookTarget(const std::string& executable);
  ~ScopedHookTarget();
  ScopedHookTarget(const ScopedHookTarget&) = delete;
  ScopedHookTarget& operator=(const ScopedHookTarget&) = delete;
};

// The hook binary `hook` installed as libvirt's hook for this object's lifetime, talking to
// /run/sovguard-test/<name>.sock: its config (<name>.conf) and a wrapper script (<name>.sh,
// libvirt runs hooks with an empty environment, so the wrapper passes the config explicitly).
// Removes all three on destruction.
class ScopedLibvirtHook {
 public:
  ScopedLibvirtHook(const std::string& name, const std::string& hook);
  ~ScopedLibvirtHook();
  ScopedLibvirtHook(const ScopedLibvirtHook&) = delete;
  ScopedLibvirtHook& operator=(const ScopedLibvirtHook&) = delete;
  const std::string& Socket() const { return socket_; }

 private:
  std::string socket_, config_, wrapper_;
  std::unique_ptr<ScopedHookTarget> target_;
};

}  // namespace sovguard::test
