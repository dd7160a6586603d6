// Internal to the storage datapath (storage_*.cc): StorageDatapath::Impl, the state one
// StorageDatapath holds, and the helpers its parts share. Not part of the public API.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <fmt/format.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/bpf_feature/bpf_feature.h"
#include "enforcer/storage/fanotify_guard.h"
#include "enforcer/storage/storage_datapath.h"

namespace sovguard::storage {

namespace fs = std::filesystem;
using base::UniqueFd;

struct SkelDeleter {
  void operator()(storage_guard* s) const { storage_guard__destroy(s); }
};
using Skel = std::unique_ptr<storage_guard, SkelDeleter>;
struct RingDeleter {
  void operator()(ring_buffer* r) const { ring_buffer__free(r); }
};
using Ring = std::unique_ptr<ring_buffer, RingDeleter>;

// The map reads and writes both features share (they throw StorageError naming the map).
using bpf_feature::CopyName;
using bpf_feature::DeleteMany;
using bpf_feature::ForEach;
using bpf_feature::NameText;
using bpf_feature::UpdateElem;
using bpf_feature::UpdateMany;

// A pool resolved on this host: where it is and which device ids it stands for.
struct ResolvedPool {
  policy::StoragePool pool;
  fs::path canonical;  // kPath: canonical directory
  dev_t st_dev = 0;    // kMount: file system of the mount point
  dev_t rdev = 0;      // kDevice: the block device
  std::string error;   // the pool does not exist here: nothing can live in it
};

ResolvedPool Resolve(const policy::StoragePool& pool);
// Whether a file (canonical path, its stat) lies in the pool.
bool InPool(const ResolvedPool& p, const fs::path& canonical, const struct stat& st);
std::string PoolText(const policy::StoragePool& p);

// Directory levels of `dir` below `root`; throws StorageError when it is not below.
int PathDepth(const fs::path& root, const fs::path& dir);

// Sorted (key, value) pairs: endpoint tables are world-sized (175,000 IPv4 prefixes), where a
// std::map's nodes took four times the memory of the entries (8.4 MiB kept for the tamper check).
template <class K, class V>
class FlatMap {
 public:
  using value_type = std::pair<K, V>;
  void clear() { v_.clear(); }
  void reserve(std::size_t n) { v_.reserve(n); }
  void Add(const K& k, const V& v) { v_.emplace_back(k, v); }
  // Sorts by key after the Adds; of equal keys the last added wins.
  void Finish() {
    std::stable_sort(v_.begin(), v_.end(),
                     [](const value_type& a, const value_type& b) { return a.first < b.first; });
    std::size_t out = 0;
    for (std::size_t i = 0; i < v_.size(); ++i) {
      if (out > 0 && v_[out - 1].first == v_[i].first)
        v_[out - 1] = v_[i];
      else
        v_[out++] = v_[i];
    }
    v_.resize(out);
    v_.shrink_to_fit();
  }
  bool contains(const K& k) const {
    const auto it = std::lower_bound(
        v_.begin(), v_.end(), k, [](const value_type& e, const K& key) { return e.first < key; });
    return it != v_.end() && it->first == k;
  }
  auto begin() const { return v_.begin(); }
  auto end() const { return v_.end(); }
  std::size_t size() const { return v_.size(); }
  bool operator==(const FlatMap&) const = default;

 private:
  std::vector<value_type> v_;
};

// The policy tables as written (or read back): what VerifyAttachments compares.
struct Tables {
  sg_storage_config cfg{};
  std::vector<sg_class> classes;
  FlatMap<std::pair<std::uint32_t, std::uint32_t>, std::uint16_t> ep4;
  FlatMap<std::pair<std::uint32_t, std::array<std::uint8_t, 16>>, std::uint16_t> ep6;
  std::map<std::pair<std::uint64_t, std::uint64_t>, sg_volume> volumes;
};
enum : int { kTableCfg, kTableClasses, kTableEndpoints4, kTableEndpoints6, kTableVolumes };
inline constexpr int kTablesDigested = SG_STORAGE_TABLES;
inline constexpr const char* kTableNames[kTablesDigested] = {
    "sg_storage_cfg", "sg_storage_classes", "sg_endpoints4", "sg_endpoints6", "sg_volumes"};
using Digest = std::array<std::uint8_t, 32>;

inline bool SameBytes(const void* a, const void* b, std::size_t n) {
  return std::memcmp(a, b, n) == 0;
}

// Whether table `which` holds the same entries in `a` and `b`.
bool TableEqual(const Tables& a, const Tables& b, int which);
// SHA-256 of table `which`, in a canonical order (what the hand-over state records).
Digest TableDigest(const Tables& t, int which);

// Adopt() found pinned state of another machine cgroup (old_id); what() says which.
class ForeignMachineCgroup : public StorageError {
 public:
  ForeignMachineCgroup(const std::string& what, std::uint64_t id, std::uint32_t level)
      : StorageError(what, EPROTO), old_id(id), old_guest_level(level) {}
  std::uint64_t old_id;
  std::uint32_t old_guest_level;
};

// Makes the systemd slice `slice` exist, started by systemd; throws StorageError when it cannot.
void EnsureSystemdSlice(const fs::path& slice);
// Whether a cgroup with `id` exists `depth` levels below the cgroup2 mount `root` (the machine
// cgroup's depth: guest level - 1). Ids are never reused, so none there means it was removed.
// Compares directory handles (name_to_handle_at needs no capability, unlike open_by_handle_at);
// throws when a directory cannot be read (unknown is never "gone").
bool CgroupExists(const fs::path& root, std::uint64_t id, std::uint32_t depth);

struct StorageDatapath::Impl {
  struct Guest {
    std::uint32_t id = 0;
    std::string cgroup_name;      // empty when registered by id
    std::uint64_t cgroup_id = 0;  // registered by id
    GuestStorage storage;
  };
  struct Volume {
    std::string path;
    std::uint32_t dataset = 0;
    bool overlay = false;  // a file on overlayfs (OnOverlay when it was protected or adopted)
  };
  // One program's attachment. The link is ours (and pinned at `pin` with a pin_dir).
  struct Attached {
    bpf_program* prog = nullptr;
    std::string hook;
    bool cgroup = false;
    bpf_attach_type type{};
    UniqueFd link;
    fs::path pin;
    std::uint32_t link_id = 0;
  };

  StorageOptions options;
  Skel skel;
  std::vector<Attached> attached;
  bool detached = false;
  Ring ring;
  std::unique_ptr<FanotifyGuard> fanotify;  // the fanotify rung of storage-open, when selected
  UniqueFd machine_fd;
  StorageStatus status;
  sg_storage_config cfg{};
  std::optional<policy::CompiledStorage> policy;
  std::set<std::string> exports_reported;        // GuardExports: namespaces left enabled, told once
  std::vector<std::string> adopted_dataset_ids;  // names from the pinned state until ApplyPolicy
  std::vector<std::vector<ResolvedPool>> pools;  // per dataset index
  std::map<std::string, Guest> guests;           // by domain name
  std::map<std::uint32_t, std::string> guest_names;
  std::uint32_t next_guest_id = 1;
  std::map<std::pair<std::uint64_t, std::uint64_t>, Volume> volumes;
  Tables expected;           // what this object wrote (or adopted) in the policy tables
  std::uint32_t active = 0;  // generation of cfg/classes/endpoints in force
  bpf_feature::RcuBarrier barrier{"sg_st_barrier"};  // waits through sg_storage_barrier
  std::array<Digest, SG_STORAGE_TABLES> digests{};
  std::vector<StorageFinding> adoption_findings;
  std::vector<ProtectedVolume> released_volumes;  // of a released stale state
  std::uint64_t removed_suppressed = 0;           // suppressed events of guests already removed
  const std::function<void(const StorageEvent&)>* callback = nullptr;
  int delivered = 0;
  std::vector<UniqueFd> retired;  // predecessor links to release once ours run
  // Threads releasing retired links (each close waits for a grace period; in parallel they
  // overlap). Last member: joined first on destruction.
  std::vector<std::jthread> releasers;

  void ReleaseRetired() {
    for (auto& fd : retired) releasers.emplace_back([f = std::move(fd)]() mutable { f.Reset(); });
    retired.clear();
  }

  int Fd(bpf_map* m) const { return bpf_map__fd(m); }
  bool pinning() const { return !options.pin_dir.empty(); }

  // ---- tables (storage_tables.cc) ----

  // Writes the configuration into the active generation in place: only for fields no verdict
  // reads together with others (construction, events, mechanism flags). Policy: Publish().
  void WriteConfig();
  // Returns once no program still runs with what it read before (an update of a map-in-map
  // waits for an RCU grace period; every storage program runs under RCU).
  void Barrier();
  // Makes `expected` (cfg, classes, endpoints) the policy in force atomically: fills the inactive
  // generation completely, flips sg_storage_active (one word), then waits until no program uses
  // the old generation any more, so the next Publish may rewrite it.
  void Publish();
  void WriteGeneration(std::uint32_t gen);
  void WriteState();
  std::string DatasetId(std::uint32_t index) const;
  // The tables of generation `gen` as the kernel holds them.
  Tables ReadTables(std::uint32_t gen, std::size_t n_classes, bool endpoints = true) const;
  // Writes table `which` of `expected` into generation `gen`, deleting entries it does not hold
  // (volumes have no generation).
  void WriteTable(int which, std::uint32_t gen);

  // ---- links (storage_attach.cc) ----

  // A new link of our program at its hook, as a plain link fd: libbpf's perf-event links would
  // disable the tracepoint event when destroyed, which would stop a pinned link from enforcing.
  UniqueFd NewLink(const Attached& a) const;
  // Attaches `prog`. With a pinned link of the predecessor for the same program: cgroup links are
  // switched to the new program in place (bpf_link_update: no moment without a program);
  // otherwise the new link is attached and pinned first and the old one released after, so both
  // run for a moment (both enforce). Returns false (and why) when the program cannot be attached;
  // a predecessor's pinned link then stays.
  bool Attach(bpf_program* prog, bool cgroup, std::string& error);
  // Attaches the strongest rung of the storage-open ladder that works here and records it (and
  // why each stronger one is not used) in `open`. Throws StorageError when none works.
  OpenRung AttachOpenRung(PathStatus& open, bool lsm_loaded, const fs::path& cgroup2_root);
  // Drops the attachments made after `size` (a mechanism that could not be completed).
  void DropAttached(std::size_t size);
  // Pins this object does not hold (links of programs it does not attach: another mechanism was
  // chosen before, or a predecessor of another version; that version's own maps): released once
  // ours run.
  void ReleaseStaleLinks();
  // Takes over what a predecessor left in the pinned maps (called before anything is attached).
  void Adopt(const sg_storage_state& st);
  // The volumes recorded in the loaded (pinned, stale) maps, named by the state's dataset ids.
  std::vector<ProtectedVolume> PinnedVolumes(const sg_storage_state& st) const;
  // Removes every pin in pin_dir (maps, links): with no holder left the kernel frees them.
  void ReleasePins();

  // ---- guests and volumes (storage_volumes.cc) ----

  // (dev, ino) key of a volume and the stat of its source.
  std::pair<sg_volume_key, struct stat> KeyOf(const fs::path& source) const;
  const policy::CompiledStorageDataset& Dataset(const std::string& id) const;
  // Checks residency, then protects the volume and its aliases; refused (StorageRefused): nothing
  // changed.
  void Protect(const fs::path& source, const std::string& dataset_id, bool readonly,
               std::string_view who);
  // `mark`: also a fanotify mark (the volume itself, never an alias: marking an overlayfs layer
  // file deadlocks the answering thread, whose event fd for the overlay file opens the layer
  // file; aliases are left to the tracepoint programs underneath).
  void InsertVolume(const sg_volume_key& key, const std::string& path, const sg_volume& v,
                    bool mark);
  // Adds the fanotify rung's denials to the guests' `denied` counters (sg_io_state).
  void AddDenied(const std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t>& denied);
  // The fanotify mark of a protected volume; a volume that cannot be marked is refused.
  void MarkVolume(const fs::path& path, const sg_volume_key& key);
  sg_storage_guest Admit(const GuestStorage& g);
  // The hand-over record of a guest (after its entries are written).
  void WriteGuestMeta(const Guest& g);
  void DeleteGuestEntries(std::uint32_t guest_id);

  // ---- events (storage_datapath.cc) ----

  std::string DatasetName(std::uint32_t index) const;
  static int OnEvent(void* ctx, void* data, size_t size);
};

}  // namespace sovguard::storage
