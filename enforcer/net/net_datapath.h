// sovguard::net::NetDatapath: owns the network residency BPF program (bpf/net/sg_net.bpf.c)
// and every kernel object it creates: the skeleton (program + maps), per-generation policy maps,
// the tc filters (and clsact qdiscs it created) on guest taps. Destruction or Detach() removes all
// of them; nothing is left behind unless the caller asked to keep it (pinned restart hand-over).
#pragma once

#include <array>
#include <cstdint>
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
#include "enforcer/bpf_feature/finding.h"
#include "enforcer/net/datapath_types.h"
#include "policy/compiled.h"

struct sg_net;       // bpftool skeleton
struct ring_buffer;  // libbpf

namespace sovguard::net {

struct NetDatapathOptions {
  // When set, maps are pinned under this bpffs directory and adopted from it if they already exist
  // (the directory must exist on a mounted bpffs).
  std::string pin_dir;
  // Tear down tc filters and guest entries on destruction; false leaves them for a successor.
  bool detach_on_destroy = true;
  std::uint32_t events_per_sec = 100;  // per guest; 0 disables events (all counted as suppressed)
  std::uint32_t event_burst = 200;
  // The BPF object to load instead of the built-in one (ELF bytes, alive until the constructor
  // returns). It must be built from bpf/net/sg_net.bpf.c of the same ABI (same maps, same .bss):
  // tests use a variant to stand in for an upgraded program.
  std::span<const std::uint8_t> program_object;
  // IPv6 nodes below /32 a policy may use (at most SG_V6_MAX_NODES, the fixed size of the node
  // array; the world table needs about 8,700). /32s beyond it are resolved by the LPM trie, which
  // is several times slower (bench/datapath); 0 turns nodes off (benchmark comparison).
  std::uint32_t max_v6_nodes = SG_V6_MAX_NODES;
};

struct GuestConfig {
  std::string name;
  std::uint32_t ifindex = 0;  // the tap, in netns (or the caller's netns when netns is empty)
  std::uint64_t datasets = 0;
  std::vector<std::uint16_t> allowed_ethertypes;  // non-IP ethertypes this guest may send
  std::string netns;   // path such as /run/netns/NAME; tc operations run inside it
  bool attach = true;  // false: only the map entry (BPF_PROG_TEST_RUN, tests)
};

struct DatasetCounters {
  std::uint64_t packets = 0, bytes = 0;
  std::uint64_t dropped_packets = 0, dropped_bytes = 0;
  std::uint64_t would_drop_packets = 0, would_drop_bytes = 0;
  std::uint64_t quota_used_bytes = 0;  // in the current window
  std::uint64_t quota_exceeded = 0;    // frames over budget, ever
};

struct DatasetStatus {
  std::uint8_t index = 0;
  std::string id;  // empty when the active policy has no such dataset
  policy::Mode mode = policy::Mode::kEnforce;
  std::optional<policy::Quota> egress;
  DatasetCounters counters;
};

struct GuestStatus {
  std::string name;
  std::uint32_t ifindex = 0;
  std::uint32_t slot = 0;
  std::uint64_t dataset_mask = 0;
  bool attached = false;
  std::uint64_t events_suppressed = 0;
  std::vector<DatasetStatus> datasets;
};

// Plain status for `sovguardctl status`.
struct NetStatus {
  // Where enforcement happens, for status output and attestation ("never a silent downgrade").
  std::string mechanism = "tc clsact ingress of each guest tap (BPF sg_net_egress)";
  bool policy_loaded = false;
  std::uint32_t active_generation = 0;
  std::uint64_t swaps = 0;
  std::array<std::uint8_t, 32> policy_digest{};
  std::vector<GuestStatus> guests;
};

// A guest found in the pinned state by Adopt().
struct AdoptedGuest {
  GuestConfig config;  // name, ifindex, datasets, ethertypes, netns, attach as the predecessor had
  std::uint32_t slot = 0;
  bool tap_present = false;  // an interface with that ifindex and name exists in its namespace
  // Our filter (handle/priority) as it was found before adoption; nullopt when it was missing.
  std::optional<TcFilterInfo> previous_filter;
  bool attached = false;  // this object's program is now attached there
  std::string error;      // why attaching failed (the old filter, if any, still runs)
};

// The network feature's findings: kTapMissing, kFilterMissing, kProgramReplaced, kFilterBypass,
// kGuestEntryAltered (guest findings) and kGenerationAltered, kPolicyTableAltered (table
// findings) of the shared vocabulary (enforcer/bpf_feature/finding.h).
using TamperKind = bpf_feature::FindingKind;

// A finding with where it was found. `object` (the base's) is the guest's name or the table's.
struct TamperFinding : bpf_feature::Finding {
  std::string guest;  // guest findings
  std::uint32_t ifindex = 0;
  std::string table;         // table findings: "v4_dir", "classes", ...
  ProgramIdentity expected;  // kProgramReplaced: ours
  ProgramIdentity found;     // kProgramReplaced / kFilterBypass: what is there
  TcFilterInfo filter;       // kFilterBypass: the foreign filter
};

// What Repair cannot fix itself (`remaining`): kTapMissing (the daemon reconciles) and table
// findings (the daemon calls ApplyPolicy with its policy again).
using RepairResult = bpf_feature::RepairResult<TamperFinding>;

struct VerifyOptions {
  // Recompute the SHA-256 of every table of the active generation (about 50 MiB with the world
  // table). Without it only identities (generation, inner map ids, filters, entries) are checked.
  bool hash_tables = true;
};

struct TestRunResult {
  int retval = 0;                 // SG_TC_ACT_OK / SG_TC_ACT_SHOT
  std::uint32_t duration_ns = 0;  // mean per run, as the kernel reports it
};

// Not thread-safe: one owner (the daemon's datapath thread) calls it. Frames are never blocked by
// these calls; every update is built aside and switched in atomically.
class NetDatapath {
 public:
  // The verbs of a BPF feature (bpf_feature::Feature).
  using Policy = policy::CompiledPolicy;
  using VerifyOptions = net::VerifyOptions;
  using Finding = TamperFinding;

  // guest-network-egress and guest-network-ingress: the real program, loaded and run on an
  // allowed and a forbidden frame (ProbeNetDatapath); one program type serves both tap hooks.
  static std::vector<bpf_feature::ProbePath> ProbeLadder();

  explicit NetDatapath(NetDatapathOptions options = {});
  ~NetDatapath();
  NetDatapath(const NetDatapath&) = delete;
  NetDatapath& operator=(const NetDatapath&) = delete;

  // Builds every table of the policy into fresh maps of the inactive generation, then switches
  // generations with one atomic store: no packet sees a partial table. Tables are produced,
  // written and hashed 1 MiB at a time (user-space memory: ~4 MiB for the world table).
  void ApplyPolicy(const policy::CompiledPolicy& policy);

  // Registers the guest (map entry first, so its first frame is already classified), then attaches
  // the program to clsact ingress of its tap. Returns the guest's slot.
  std::uint32_t AddGuest(const GuestConfig& guest);
  // Changes what the guest holds (counters of datasets it keeps stay); with `ethertypes`, also the
  // non-IP ethertypes it may send (at most SG_MAX_GUEST_ETHERTYPES). One atomic entry switch.
  // A tap that appeared before any guest claimed it (NIC hot-plug: libvirt runs no hook): our
  // program without a guest entry, which drops every frame. AddGuest on it takes over in one
  // BPF_TC_F_REPLACE. No-op for a registered ifindex.
  void AttachDefaultDeny(std::uint32_t ifindex);
  // The tap went away (detach = false) or should be released (detach = true).
  void ForgetDefaultDeny(std::uint32_t ifindex, bool detach);
  std::size_t default_deny_taps() const { return deny_only_.size(); }
  void SetGuestDatasets(std::uint32_t ifindex, std::uint64_t datasets,
                        const std::optional<std::vector<std::uint16_t>>& ethertypes = std::nullopt);
  void RemoveGuest(std::uint32_t ifindex);
  // Removes every tc filter/qdisc this object created and every guest entry.
  void Detach();
  // Removes the pinned maps from pin_dir (no-op without one); the kernel objects live on while
  // used.
  void Unpin();
  // Whether a policy generation is active (also true after adopting pinned maps that hold one).
  bool policy_loaded() const { return policy_loaded_; }

  DatasetCounters ReadCounters(std::uint32_t ifindex, std::uint8_t dataset) const;
  NetStatus Status() const;

  // Delivers queued violation events to handler; waits up to timeout_ms for the first. Returns the
  // number delivered.
  int PollEvents(int timeout_ms, const std::function<void(const sg_net_event&)>& handler);

  // BPF_PROG_TEST_RUN on a frame (starting at the Ethernet header) as if received on ifindex (0:
  // lo) of the calling thread's network namespace.
  TestRunResult TestRun(std::span<const std::uint8_t> frame, std::uint32_t repeat = 1,
                        std::uint32_t ifindex = 0) const;

  int program_fd() const;
  ProgramIdentity program() const;

  // Restart hand-over (needs pin_dir). Finds every guest the pinned state holds (the predecessor's
  // AddGuest calls), takes over its slot, counters and quota state unchanged, and attaches this
  // object's program in place of the predecessor's with one BPF_TC_F_REPLACE per tap (no gap:
  // the old program runs until the new one is in). Must be called before any AddGuest. Returns
  // what was found so the caller can reconcile with libvirt (RemoveGuest for guests that are gone,
  // SetGuestDatasets for changed ones, AddGuest for new ones).
  std::vector<AdoptedGuest> Adopt();
  const std::vector<AdoptedGuest>& AdoptedGuests() const { return adopted_; }

  // Checks that each guest's tap still runs our program first, with our id and tag, that the
  // guests' kernel entries are what we wrote, and that the active generation's tables match the
  // digests taken when they were built. Empty = nothing found.
  std::vector<TamperFinding> VerifyAttachments(VerifyOptions options = {}) const;
  // Verifies, then re-attaches our program, removes filters that run before ours and rewrites
  // altered guest entries.
  RepairResult Repair(VerifyOptions options = {});

 private:
  struct Guest {
    GuestConfig config;
    std::string ifname;  // the tap's name when registered (a reused ifindex is not our tap)
    std::uint32_t slot = 0;
    std::array<std::uint8_t, SG_MAX_GUEST_DATASETS> positions{};  // dataset index per position
    std::uint32_t entry = 0;  // configuration entry in use (2*slot or 2*slot+1); valid if published
    bool published = false;
    bool attached = false;
    bool created_qdisc = false;
  };
  struct RingBufferDeleter {
    void operator()(::ring_buffer* rb) const;
  };

  void WriteGuest(Guest& g);
  void PublishIndex(std::uint32_t ifindex, std::uint32_t value);
  void SynchronizeRcu();
  void ResetSlotState(std::uint32_t slot, std::uint32_t position);
  void AttachTc(Guest& g);
  void DetachTc(Guest& g);
  void Barrier(std::uint32_t old_gen);
  void WriteMeta(const Guest& g);
  void WriteState();
  std::array<int, SG_NET_TABLES> Outers() const;  // the *_outer maps, in table order
  sg_net_guest GuestEntry(const Guest& g) const;
  bool TapPresent(const Guest& g) const;

  NetDatapathOptions options_;
  struct sg_net* skel_ = nullptr;
  std::unique_ptr<::ring_buffer, RingBufferDeleter> events_;
  bpf_feature::RcuBarrier barrier_{"sg_barrier"};
  std::function<void(const sg_net_event&)>* handler_ = nullptr;
  std::map<std::uint32_t, Guest> guests_;     // by ifindex
  std::map<std::uint32_t, Guest> deny_only_;  // default-deny taps no guest claimed yet
  std::vector<bool> slot_used_;
  bool policy_loaded_ = false;
  std::uint64_t swaps_ = 0;
  std::vector<policy::CompiledDataset> datasets_;
  std::array<std::uint8_t, 32> digest_{};
  std::array<std::array<std::uint8_t, 32>, SG_NET_TABLES> table_digests_{};
  std::array<std::uint32_t, SG_NET_TABLES> table_ids_{};  // inner map ids of the active generation
  std::vector<AdoptedGuest> adopted_;
};

// Every filter on clsact ingress of ifindex (in the network namespace at netns, "" = ours), in the
// order the kernel runs them (a netlink dump). Empty when there is no clsact qdisc.
std::vector<TcFilterInfo> ListIngressFilters(std::uint32_t ifindex, const std::string& netns = "");

std::string FormatFinding(const TamperFinding& finding);

// Loads the real program on this kernel and runs it once on an allowed and a forbidden frame.
// Returns std::nullopt when it works, otherwise why not (for `sovguardctl probe`).
std::optional<std::string> ProbeNetDatapath();

// "DE" from SG_COUNTRY('D','E'); "--" for unknown.
std::string CountryText(std::uint16_t country);
// One line describing an event, for logs and the CLI.
std::string FormatEvent(const sg_net_event& ev);
// Human-readable status (per guest, per dataset: mode in force, counters, quota), for the CLI.
std::string FormatStatus(const NetStatus& status);

}  // namespace sovguard::net
