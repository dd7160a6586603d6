// sovguard::storage::StorageDatapath: owns the storage-path BPF programs (bpf/storage/) and every
// kernel object they need: the skeleton (programs + maps), the tracepoint/LSM links, the cgroup
// attachments (cgroup/dev, cgroup/connect4/6, attached ONCE at the libvirt "machine" cgroup with
// BPF_F_ALLOW_MULTI, so libvirt's own per-guest device program still runs: all must allow) and the
// ring buffer. Destruction detaches everything.
//
// How a guest is recognised in the kernel: every QEMU thread of a libvirt guest lives below
// <cgroup2>/machine/qemu-N-NAME.libvirt-qemu/ (emulator, vcpu0, ...). The programs take
// bpf_get_current_ancestor_cgroup_id(level of that guest directory) and look it up in the guest
// map. The guest directory does not exist yet at libvirt's `start begin` hook, so the daemon
// announces it by name (ExpectGuest); a tp_btf/cgroup_mkdir program turns the name into the new
// cgroup's id inside the kernel the moment libvirt creates it, before any QEMU process joins.
// Guests already running (daemon restart) are registered by id (RegisterGuestCgroup).
// A process below machine/ whose guest cgroup is unknown holds no dataset: it may not open any
// protected volume (fail closed).
//
// Typical daemon use (enforcer/daemon/node.cc):
//   at start:        StorageDatapath sp(StorageOptions{});          // probes + attaches
//                    sp.ApplyPolicy(policy::CompileStorage(validated, compiled));
//   hook start begin sp.ExpectGuest(GuestStorage{...from DomainDescription + DatasetsForGuest...});
//                    (throws StorageRefused: make the hook exit non-zero so libvirt refuses)
//   reconcile        sp.RegisterGuestCgroup(CgroupIdOf(dir), GuestStorage{...}) for running guests
//   hook release     sp.RemoveGuest(name)
//   periodically     sp.PollEvents(cb, 0); sp.ReadCounters(); sp.Status() for status/metrics.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/sovguard_abi.h"
#include "policy/compiled.h"

struct storage_guard;  // bpftool skeleton
struct ring_buffer;    // libbpf
struct bpf_link;

namespace sovguard::storage {

// A failed kernel or file-system operation: what failed, on which object, with errno.
class StorageError : public std::runtime_error {
 public:
  StorageError(const std::string& what, int err);
  int error() const noexcept { return err_; }

 private:
  int err_;
};

// The policy forbids what was asked (volume outside the dataset's pools, unknown dataset, ...).
// The daemon's hook should fail so libvirt does not start the guest; what() says why.
class StorageRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Guarantee { kPrevents, kDetectsAndKills, kCounts, kNone };
std::string ToString(Guarantee g);  // "prevents", "detects-and-kills", "counts", "none"

// Which mechanism guards one path, and why a stronger one is not used.
struct PathStatus {
  std::string path;       // storage-open, storage-block-devices, storage-network, storage-io
  std::string mechanism;  // e.g. "bpf-lsm:file_open", "tracepoint:sys_exit_openat+SIGKILL"
  Guarantee guarantee = Guarantee::kNone;
  std::vector<std::string> unavailable;  // "bpf-lsm:file_open: attach: Operation not permitted"
};

struct StorageStatus {
  std::vector<PathStatus> paths;
  std::filesystem::path machine_cgroup;  // where the cgroup programs are attached
  std::uint64_t machine_cgroup_id = 0;
  std::uint32_t guest_level = 0;  // cgroup level of the per-guest directories
  // How a guest's cgroup is learnt before QEMU runs: "tp_btf:cgroup_mkdir" or, when that failed,
  // "registration-by-id-only" (ExpectGuest then registers the cgroup only if it already exists).
  std::string guest_discovery;
  std::size_t guests = 0, pending = 0, volumes = 0;
  const PathStatus* Find(std::string_view path) const;
};

struct StorageOptions {
  // The cgroup under which libvirt creates one directory per guest. Empty: <cgroup2>/machine
  // (created when missing, as libvirt would).
  std::filesystem::path machine_cgroup;
  // Use the tracepoint + SIGKILL fallback even where BPF LSM works (tests of the fallback).
  bool force_tracepoint_fallback = false;
  // Attach cgroup/connect4/6 (network storage residency). Off: storage-network reports "none".
  bool network = true;
};

// One disk of a guest as the daemon sees it in the domain XML and the labels.
struct GuestDisk {
  std::filesystem::path source;  // image file or block device node; empty for network disks
  std::string dataset;           // dataset id from the disk label; empty: guest-wide datasets
  bool readonly = false;         // <readonly/> in the XML
};

struct GuestStorage {
  std::string name;              // libvirt domain name (events name it)
  std::uint64_t datasets = 0;    // mask of dataset indexes the guest holds (DatasetsForGuest)
  std::vector<GuestDisk> disks;  // labelled disks become protected volumes of their dataset
};

// libvirt's per-guest cgroup directory name for running id `id` and domain `name`
// ("qemu-1-vm1.libvirt-qemu"), as libvirt 9 builds it (machine name, then cgroup escaping).
std::string LibvirtCgroupName(int id, std::string_view name);

// Per (guest, dataset) byte counters and quota state, summed over the kernel's entries.
struct IoCounters {
  std::string guest;
  std::string dataset;  // dataset id; "#N" when the policy has no such index
  std::uint8_t index = 0;
  std::uint64_t read_bytes = 0, write_bytes = 0;
  std::uint64_t denied = 0;                                     // opens/IOs refused or killed
  std::uint64_t read_window_bytes = 0, write_window_bytes = 0;  // used in the current window
};

enum class Verdict { kPrevented, kKilled, kAudited };
std::string ToString(Verdict v);  // "prevented", "killed", "audited"

struct StorageEvent {
  std::string kind;  // open-denied, open-killed, device-denied, connect-denied, read-only,
                     // read-quota, write-quota
  Verdict verdict = Verdict::kAudited;
  std::string guest;    // domain name; "cgroup:<id>" when no guest is registered for it
  std::string dataset;  // dataset id ("" for connect)
  std::string path;     // volume path when known, else "dev=<maj:min> ino=<n>" or "blk <maj:min>"
  std::uint64_t dev = 0, ino = 0;
  std::uint64_t cgroup_id = 0;
  std::uint32_t pid = 0;
  std::string address;             // connect: "203.0.113.5:10809"
  std::uint64_t timestamp_ns = 0;  // boot time
};

// Not thread-safe: call from one thread (the daemon's hook handler and poller share a mutex).
class StorageDatapath {
 public:
  // Probes (LSM first, unless forced off), loads, attaches. Throws StorageError when a path that
  // has no fallback cannot be attached (cgroup programs) or the object does not load.
  explicit StorageDatapath(StorageOptions options = {});
  ~StorageDatapath();
  StorageDatapath(const StorageDatapath&) = delete;
  StorageDatapath& operator=(const StorageDatapath&) = delete;

  const StorageStatus& Status();

  // Replaces modes, quotas, pools and network endpoints. Volumes already protected keep their
  // dataset; guests keep their masks. Throws StorageError on a map update failure.
  void ApplyPolicy(const policy::CompiledStorage& storage);

  // At libvirt's `start begin`: the guest's cgroup will be machine/<cgroup_name>. Checks every
  // labelled disk against its dataset's pools (StorageRefused when outside, or the dataset is
  // unknown), protects the labelled volumes (files by (st_dev, st_ino), block devices by
  // major:minor; read-only when the dataset or the disk says so) and arms the in-kernel
  // registration. Idempotent per name.
  void ExpectGuest(const std::string& cgroup_name, const GuestStorage& guest);
  // A guest whose cgroup already exists (reconcile after a daemon restart).
  void RegisterGuestCgroup(std::uint64_t cgroup_id, const GuestStorage& guest);
  // The guest went away: forgets its cgroup, pending name and counters. Volumes stay protected.
  void RemoveGuest(const std::string& name);

  // Protect a volume that no running guest declares (e.g. every labelled disk of every defined
  // domain at daemon start), so that a guest without the dataset cannot open it first.
  void ProtectVolume(const std::filesystem::path& source, const std::string& dataset,
                     bool readonly);

  std::vector<IoCounters> ReadCounters() const;

  // Drains the ring buffer, calling `cb` per event; waits up to timeout_ms for the first one.
  // Returns the number of events delivered.
  int PollEvents(const std::function<void(const StorageEvent&)>& cb, int timeout_ms);

  // cgroup v2 id of a directory (name_to_handle_at); throws StorageError.
  static std::uint64_t CgroupId(const std::filesystem::path& dir);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sovguard::storage
