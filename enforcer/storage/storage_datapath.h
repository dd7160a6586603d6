// sovguard::storage::StorageDatapath: owns the storage-path BPF programs (bpf/storage/) and every
// kernel object they need: the skeleton (programs + maps), the tracepoint/LSM links, the cgroup
// attachments (cgroup/dev, cgroup/connect4/6, attached ONCE at the libvirt "machine" cgroup with
// BPF_F_ALLOW_MULTI, so libvirt's own per-guest device program still runs: all must allow) and the
// ring buffer. Without a pin_dir destruction detaches everything; with one (restart hand-over)
// enforcement stays in the kernel until Detach() and a successor adopts it.
//
// How a guest is recognised in the kernel: every QEMU thread of a libvirt guest lives below one
// per-guest directory right under the machine cgroup (CgroupLayout): without systemd-machined
// <cgroup2>/machine/qemu-N-NAME.libvirt-qemu/{emulator,vcpu0,...}, with it (systemd hosts, Debian
// 12) <cgroup2>/machine.slice/machine-qemu\x2dN\x2dNAME.scope/libvirt/{emulator,...}. The programs
// take bpf_get_current_ancestor_cgroup_id(level of that guest directory) and look it up in the
// guest map. The guest directory does not exist yet at libvirt's `start begin` hook, so the daemon
// announces it by name (ExpectGuest); a tp_btf/cgroup_mkdir program turns the name into the new
// cgroup's id inside the kernel the moment libvirt creates it, before any QEMU process joins.
// Guests already running (daemon restart) are registered by id (RegisterGuestCgroup).
// A process below machine/ whose guest cgroup is unknown holds no dataset: it may not open any
// protected volume (fail closed).
//
// Typical daemon use (enforcer/daemon/node.cc and node_*.cc):
//   at start:        StorageDatapath sp(StorageOptions{.pin_dir = <bpf_pin_dir>/storage});
//                    (probes + attaches; adopts a predecessor's pinned state without a gap)
//                    sp.ApplyPolicy(policy::CompileStorage(validated, compiled));
//   hook start begin sp.ExpectGuest(sp.GuestCgroupName(id, name),
//                                   GuestStorage{...from DomainDescription + DatasetsForGuest...});
//                    (throws StorageRefused: make the hook exit non-zero so libvirt refuses)
//   reconcile        sp.RegisterGuestCgroup(CgroupIdOf(dir), GuestStorage{...}) for running guests
//   hook release     sp.RemoveGuest(name)
//   periodically     sp.PollEvents(cb, 0); sp.ReadCounters(); sp.Status() for status/metrics;
//                    sp.SuppressedEvents(); sp.VerifyAttachments() / sp.Repair() (tamper check)
//   stop             destructor: pinned enforcement stays; sp.Detach() to stop enforcing.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "bpf/sovguard_abi.h"
#include "enforcer/bpf_feature/bpf_feature.h"
#include "enforcer/bpf_feature/finding.h"
#include "enforcer/storage/storage_ladder.h"
#include "policy/compiled.h"

struct storage_guard;  // bpftool skeleton
struct ring_buffer;    // libbpf

namespace sovguard::storage {

// A failed kernel or file-system operation: what failed, on which object, with errno (the
// BPF-feature toolkit's error type).
using StorageError = bpf_feature::Error;

// The policy forbids what was asked (volume outside the dataset's pools, unknown dataset, ...).
// The daemon's hook should fail so libvirt does not start the guest; what() says why.
class StorageRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Which mechanism guards one path, and why a stronger one is not used.
struct PathStatus {
  std::string path;       // storage-open, storage-block-devices, storage-network, storage-io
  std::string mechanism;  // e.g. "bpf-lsm:file_open", "tracepoint:sys_exit_openat+SIGKILL"
  Guarantee guarantee = Guarantee::kNone;
  std::vector<std::string> unavailable;  // "bpf-lsm:file_open: attach: Operation not permitted"
};

// Where libvirt (9) puts a guest's cgroup (libvirt docs/cgroups.rst, src/util/vircgroup.c):
enum class CgroupLayout {
  // No systemd-machined (virCgroupNewMachineManual): <cgroup2>/machine/qemu-1-vm1.libvirt-qemu/
  // {emulator,vcpu0,...}; libvirt creates every directory itself.
  kCgroupfs,
  // systemd host with systemd-machined (virCgroupNewMachineSystemd): machined starts the scope
  // <cgroup2>/machine.slice/machine-qemu\x2d1\x2dvm1.scope, libvirt (>= 7.1) then makes
  // <scope>/libvirt/{emulator,vcpu0,...} below it.
  kSystemd,
};
std::string ToString(CgroupLayout layout);  // "cgroupfs", "systemd"

struct LayoutDetection {
  CgroupLayout layout = CgroupLayout::kCgroupfs;
  std::string reason;  // one line for logs and status
};
// The layout libvirtd uses on this host, decided as libvirt decides it (virSystemdHasMachined):
// systemd when systemd is PID 1 (`<sysroot>/run/systemd/system` is a directory, sd_booted()'s
// test) and systemd-machined can be reached (running: `<sysroot>/run/systemd/machines` exists, or
// D-Bus-activatable: org.freedesktop.machine1.service in a D-Bus system-services directory;
// Debian ships it in systemd-container); otherwise cgroupfs. sysroot: "/" on the host, a fake tree
// in tests.
LayoutDetection DetectCgroupLayout(const std::filesystem::path& sysroot = "/");
// The default machine cgroup of a layout: <cgroup2>/machine or <cgroup2>/machine.slice.
std::filesystem::path DefaultMachineCgroup(CgroupLayout layout,
                                           const std::filesystem::path& cgroup2_root);

struct StorageStatus {
  std::vector<PathStatus> paths;
  CgroupLayout layout = CgroupLayout::kCgroupfs;  // whose guest directory names are announced
  std::string layout_reason;                      // why (detection, or given by the options)
  std::filesystem::path machine_cgroup;           // where the cgroup programs are attached
  std::uint64_t machine_cgroup_id = 0;
  std::uint32_t guest_level = 0;  // cgroup level of the per-guest directories
  // How a guest's cgroup is learnt before QEMU runs: "tp_btf:cgroup_mkdir" or, when that failed,
  // "registration-by-id-only" (ExpectGuest then registers the cgroup only if it already exists).
  std::string guest_discovery;
  // Protected overlayfs files the daemon could not copy up (read-only where it looks: its unit's
  // ProtectSystem=, or an overlay mounted ro over an upper layer), each "path: why": a later
  // copy-up's new upper-layer file is protected from the next tick's refresh, not at once.
  std::vector<std::string> overlay_not_copied_up;
  std::size_t guests = 0, pending = 0, volumes = 0;
  std::uint64_t events_suppressed = 0;  // all guests, ever (rate limit or full ring buffer)
  bool adopted = false;                 // the kernel state was taken over from a predecessor
  // Whether files in different btrfs subvolumes are told apart (the programs were loaded with the
  // kernel's description of btrfs inodes). Without it a btrfs file is keyed by its file system
  // and inode number, so a file with the same number in another subvolume is guarded alike.
  bool btrfs_subvolumes = true;
  // Answers of the fanotify rung (zero when another rung guards storage-open): allowed, denied by
  // the policy, and denied because the decision could not be made (fail closed).
  std::uint64_t fanotify_allowed = 0, fanotify_denied = 0, fanotify_failed = 0;
  const PathStatus* Find(std::string_view path) const;
};

struct StorageOptions {
  // The cgroup under which libvirt creates one directory per guest. Empty: the default of the
  // detected layout (DetectCgroupLayout): <cgroup2>/machine (created when missing, as libvirt
  // would) or <cgroup2>/machine.slice (started with `systemctl start machine.slice` when missing,
  // see storage_datapath.cc for why).
  std::filesystem::path machine_cgroup;
  // The layout of the guest directories below machine_cgroup. Empty: detected when
  // machine_cgroup is empty, else kSystemd when machine_cgroup's name ends in ".slice" (systemd
  // slices always do) and kCgroupfs otherwise.
  std::optional<CgroupLayout> layout;
  // Use the tracepoint + SIGKILL fallback even where BPF LSM works (tests of the fallback).
  bool force_tracepoint_fallback = false;
  // Attach cgroup/connect4/6 (network storage residency). Off: storage-network reports "none".
  bool network = true;
  // Restart hand-over. When set (the daemon passes <bpf_pin_dir>/storage; created when
  // missing, on a mounted bpffs), every map and every program's link is pinned there, and a new
  // StorageDatapath with the same pin_dir adopts them: guests, pending names, protected volumes,
  // counters, quota windows and queued events are kept, and the new programs replace the old ones
  // without a gap (bpf_link_update for cgroup links; attach-new-then-release-old otherwise).
  // The destructor then leaves enforcement in the kernel; Detach() stops it explicitly.
  // Empty: nothing is pinned and the destructor detaches everything.
  std::filesystem::path pin_dir;
  // Violation events per guest: a token bucket (rate per second, burst). Enforcement and the
  // `denied` counters never depend on it; events over the rate are counted as suppressed.
  // events_per_sec = 0 disables events (all suppressed).
  std::uint32_t events_per_sec = 100;
  std::uint32_t event_burst = 200;
  // Pinned state left for a machine cgroup that no longer exists (removed and made again while no
  // daemon ran: no process can be in it any more, so that state guards nothing). Unset: refused
  // (StorageError EPROTO), as any state of another machine cgroup. Set: called with a one-line
  // description (measure it) BEFORE the stale pins are removed; the datapath then starts over on
  // the current machine cgroup and ReleasedStaleVolumes() lists the volumes the stale state
  // protected. State of a machine cgroup that still exists (or may: lookup failed) is refused.
  std::function<void(const std::string& detail)> on_stale_state;
  // The BPF object to load instead of the built-in one (ELF bytes, alive until the constructor
  // returns), built from bpf/storage/storage_guard.bpf.c of the same storage ABI: tests use a
  // variant to stand in for an upgraded program.
  std::span<const std::uint8_t> program_object;
};

// A program of the storage path as attached in the kernel (status, attestation, tamper checks).
struct AttachedProgram {
  std::string name;  // BPF program name, e.g. "sg_connect4"
  std::string hook;  // "cgroup/connect4 <machine cgroup>", "tp_btf/sys_exit"
  std::uint32_t prog_id = 0;
  std::string tag;  // 16 hex digits (bpf_prog_info.tag)
  std::uint32_t link_id = 0;
  std::filesystem::path pin;  // where the link is pinned; empty without pin_dir
};

// What VerifyAttachments found (enforcer/bpf_feature/finding.h); `object` is a program or map
// name. The kinds:
//   kProgramDetached   a cgroup link of ours no longer attaches our program to the machine cgroup
//   kProgramReplaced   one of our links runs another program than ours
//   kLinkBroken        a link of ours cannot be queried any more
//   kPinMissing        the pinned link is gone or is another link (a crash would drop it)
//   kPolicyMapAltered  a policy table (sg_storage_cfg, sg_storage_classes, sg_endpoints4,
//                      sg_endpoints6, sg_volumes) or sg_storage_active differs from what was
//                      written
//   kGuestEntryAltered sg_storage_guests / sg_storage_pending holds an entry we did not write
//   kMachineCgroupReplaced the machine cgroup directory is gone or is another cgroup than the
//                      one the programs are attached to (e.g. machine.slice stopped and started
//                      again): Repair cannot fix it, a new StorageDatapath (daemon restart) can
//   kAdoptedStateAltered pinned tables changed while no daemon held them (digest mismatch at
//                      adoption; Repair cannot know the right contents: ApplyPolicy again)
using StorageFinding = bpf_feature::Finding;
using bpf_feature::FindingKind;

struct StorageVerifyOptions {
  // Compare the endpoint tables entry by entry too (a world-sized table takes about 1.8 s in a
  // Debug+ASan build here; without it a check takes well under 1 ms). Links, configuration,
  // classes, volumes and guest entries are always checked.
  bool compare_endpoints = true;
};

// `remaining`: what Repair could not fix (see kinds above).
using StorageRepairResult = bpf_feature::RepairResult<StorageFinding>;

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

// libvirt's machine name for running id `id` and domain `name` ("qemu-1-vm1"), as libvirt 9
// builds it (virDomainDriverGenerateMachineName).
std::string LibvirtMachineName(int id, std::string_view name);
// libvirt's per-guest cgroup directory name without systemd ("qemu-1-vm1.libvirt-qemu"),
// CgroupLayout::kCgroupfs.
std::string LibvirtCgroupName(int id, std::string_view name);
// systemd's unit-name escaping (unit_name_escape; libvirt's virSystemdEscapeName is the same):
// '/' becomes '-', a leading '.', '-', '\' and every byte outside [0-9A-Za-z:_.] become "\xNN".
std::string SystemdEscape(std::string_view name);
// The scope systemd-machined creates for the guest, its cgroup directory under machine.slice
// ("machine-qemu\x2d1\x2dvm1.scope"; machined: "machine-" + escaped machine name + ".scope"),
// CgroupLayout::kSystemd.
std::string LibvirtScopeName(int id, std::string_view name);
// The per-guest directory name of `layout` (one of the two above).
std::string GuestCgroupName(CgroupLayout layout, int id, std::string_view name);

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
                     // read-quota, write-quota, compat-syscall (a 32-bit syscall),
                     // uncounted-io (mmap of a budgeted volume, io_uring splice/tee)
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
  // The verbs of a BPF feature (bpf_feature::Feature).
  using Policy = policy::CompiledStorage;
  using VerifyOptions = StorageVerifyOptions;
  using Finding = StorageFinding;

  // Each storage path's mechanisms, strongest first, each tried on a scratch attachment (a
  // cgroup of its own for the cgroup programs) without a StorageDatapath: the kernel probe's
  // ladder for storage-open, storage-io-accounting, storage-network, storage-block-devices.
  static std::vector<bpf_feature::ProbePath> ProbeLadder();

  // Probes (LSM first, unless forced off), loads, attaches. Throws StorageError when a path that
  // has no fallback cannot be attached (cgroup programs) or the object does not load.
  explicit StorageDatapath(StorageOptions options = {});
  ~StorageDatapath();
  StorageDatapath(const StorageDatapath&) = delete;
  StorageDatapath& operator=(const StorageDatapath&) = delete;

  const StorageStatus& Status();

  // Replaces modes, quotas, pools and network endpoints atomically (the inactive generation is
  // filled, then switched in; returns after a grace period, about 10-15 ms). Volumes already
  // protected keep their dataset; guests keep their masks. Throws StorageError on a map update
  // failure (the policy in force is then unchanged).
  void ApplyPolicy(const policy::CompiledStorage& storage);

  // The directory name libvirt will give guest (`id`, `name`) below the machine cgroup, in the
  // layout in use (Status().layout): pass it to ExpectGuest, or join it to
  // Status().machine_cgroup for RegisterGuestCgroup.
  std::string GuestCgroupName(int id, std::string_view name) const;

  // At libvirt's `start begin`: the guest's cgroup will be <machine cgroup>/<cgroup_name>. The
  // kernel compares the first SG_STORAGE_NAME_LEN - 1 (63) bytes of a new directory's name (that
  // is what it reads of longer names): a longer name is announced by that prefix, which still
  // holds "qemu-<id>-" / "machine-qemu\x2d<id>\x2d" in its first 30 bytes and so names one
  // running guest (ids are unique among them). Checks every
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

  // Protects the aliases of protected volumes that appeared after the volume was protected (a
  // loop or device-mapper device created over it, a partition table read again): each gets its
  // volume's dataset and flags. Returns one line per new alias, and per alias that another
  // dataset already holds (left as it is, and named: two datasets' bytes overlap).
  // `overlay_only`: only files on overlayfs are asked again (a layer file replaced behind the
  // overlay): cheap enough for every daemon round (a statx and /proc/self/mountinfo per such file,
  // no sysfs scan). Otherwise every volume, with one scan of /sys/block for all of them.
  std::vector<std::string> RefreshAliases(bool overlay_only = false);

  // A protected volume (or an alias of one) that this host's NVMe over fabrics target serves
  // (nvmet_exports.h): the dataset's bytes leave the host by a way no program judges.
  struct ExportFinding {
    std::string where;      // the namespace's configfs directory
    std::string volume;     // the device or file it serves
    std::string dataset;    // the volume's dataset
    bool disabled = false;  // an enforced dataset's: the namespace was disabled
    std::string error;      // why it could not be disabled
  };
  // Looks at the exports (cheap enough for every daemon round: a configfs directory walk and a
  // stat per enabled namespace). An enforced dataset's namespace is disabled; an audited one's,
  // or one the kernel would not disable, is reported once for as long as it stays.
  std::vector<ExportFinding> GuardExports(
      const std::filesystem::path& configfs = "/sys/kernel/config");

  // The protected volumes this object holds (adopted or protected since), e.g. to protect them
  // again on a new datapath. Volumes of a dataset index the applied policy does not name are
  // left out (there is no id to give them).
  struct ProtectedVolume {
    std::filesystem::path path;
    std::string dataset;
    bool readonly = false;
  };
  std::vector<ProtectedVolume> Volumes() const;
  // The volumes a released stale state protected (see StorageOptions::on_stale_state), with the
  // dataset ids it recorded: protect them again once the policy is applied. Empty otherwise.
  const std::vector<ProtectedVolume>& ReleasedStaleVolumes() const;
  // StorageStatus::overlay_not_copied_up, without the rest of the status.
  const std::vector<std::string>& OverlayNotCopiedUp() const;

  std::vector<IoCounters> ReadCounters() const;

  // Drains the ring buffer, calling `cb` per event; waits up to timeout_ms for the first one.
  // Returns the number of events delivered.
  int PollEvents(const std::function<void(const StorageEvent&)>& cb, int timeout_ms);

  // Names of the guests this object knows: registered here or adopted from a predecessor (the
  // daemon reconciles them with libvirt after a restart: RemoveGuest for those gone).
  std::vector<std::string> GuestNames() const;

  // Violation events not emitted, per guest name ("unregistered" for unknown cgroups), ever.
  std::map<std::string, std::uint64_t> SuppressedEvents() const;

  // The programs attached now, with kernel ids (the ids change when a successor adopts).
  std::vector<AttachedProgram> Programs() const;

  // Tamper check: each of our links is alive, attached where it should be (cgroup links: our
  // program in bpf_prog_query of the machine cgroup) and runs our program (id and tag); pinned
  // links are still pinned; the policy tables, volumes and guest entries hold what we wrote.
  // Empty: nothing found.
  std::vector<StorageFinding> VerifyAttachments(StorageVerifyOptions options = {}) const;
  // Verifies, then re-attaches detached or replaced programs (new link, pinned in place of the
  // old one), re-pins, and rewrites altered tables and entries from what this object applied.
  StorageRepairResult Repair(StorageVerifyOptions options = {});

  // Stops enforcing: detaches every program, and with pin_dir removes every pin (maps and links)
  // and the directory. The object only answers Status/ReadCounters/PollEvents afterwards.
  void Detach();

  // cgroup v2 id of a directory (name_to_handle_at); throws StorageError.
  static std::uint64_t CgroupId(const std::filesystem::path& dir);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace sovguard::storage
