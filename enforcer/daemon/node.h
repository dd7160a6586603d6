// The node: everything sovguardd enforces and attests, wired together. Policy (shipped default or a
// signed bundle) + jurisdiction table -> compiled tables -> network datapath; libvirt guests ->
// tap attachments and dataset masks; every step that changes what is enforced is measured into the
// TPM-backed event log; the attestation API serves quotes with an enforcement snapshot.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "attestation/evidence/evidence.pb.h"
#include "enforcer/daemon/config.h"
#include "enforcer/daemon/host_services.h"
#include "enforcer/probe/probe.h"
#include "policy/compiled.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"

namespace grpc {
class Server;
}
namespace sovguard::net {
class NetDatapath;
}
namespace sovguard::metrics {
class Registry;
class MetricsServer;
}  // namespace sovguard::metrics
namespace sovguard::storage {
class BlockUevents;
class StorageDatapath;
struct GuestStorage;
}  // namespace sovguard::storage
namespace sovguard::libvirt {
class Watcher;
class HookServer;
class TapWatcher;
struct TapEvent;
struct GuestInfo;
struct DomainDescription;
struct HookEvent;
struct HookResponse;
}  // namespace sovguard::libvirt
namespace sovguard::attestation {
namespace tpm {
class Tpm;
}
namespace measure {
class MeasurementLog;
}
namespace evidence {
class EvidenceBuilder;
}
namespace service {
class AttestationServiceImpl;
}
}  // namespace sovguard::attestation

namespace sovguard::daemon {

// One interface of a guest, whatever its type: a tap whose clsact ingress carries the residency
// program is covered; anything else (macvtap, SR-IOV, user, socket, vhost-user...) is not, and
// must not stay on a guest holding a dataset.
struct GuestNic {
  std::string type, device, mac, alias;
  std::string reason;  // why it cannot be covered; empty for a tap
  bool covered = false;
};

// What the node knows about one guest it covers.
struct CoveredGuest {
  std::string name;
  std::string uuid;
  std::vector<std::string> taps;
  std::vector<std::uint32_t> ifindexes;  // attached taps
  std::string cgroup;
  std::uint64_t datasets = 0;
  std::string label_state;  // absent | valid | invalid
  std::string error;        // why a tap could not be covered, if any
  std::vector<GuestNic> nics;
  // As libvirt last reported it (never null): a policy reload recomputes `datasets` from it.
  std::shared_ptr<const libvirt::GuestInfo> info;
};

class Node {
 public:
  Node(Config config, TpmChoice tpm, enforcer::ProbeReport probe);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Loads policy and table, applies them, measures the stack, starts the API and the libvirt
  // watcher. Throws on anything that would leave the node unable to enforce.
  void Start();
  // SIGHUP: reloads the policy source. A bad policy is rejected with the reason logged and the
  // last good one stays enforced.
  void Reload();
  // Flushes violation events to the log; called from the main loop.
  void PumpEvents();

  nlohmann::json Status() const;
  // The daemon's metrics (also served on metrics_listen); the main loop and callbacks bump it.
  metrics::Registry& Metrics() { return *metrics_; }
  attestation::v1::EnforcementSnapshot Snapshot() const;

 private:
  struct LoadedPolicy {
    policy::ValidatedPolicy validated;
    policy::CompiledPolicy compiled;
    std::string source;                            // file or bundle path
    std::vector<std::uint8_t> source_bytes;        // the bundle / policy file as applied
    std::array<std::uint8_t, 32> source_sha256{};  // of source_bytes
    std::uint64_t bundle_version = 0;              // 0 for the shipped default
    policy::CompiledStorage storage;               // until applied
    // Why the configured bundle was refused; the policy above is then the last good bundle.
    std::string rejected;
  };
  // Reads, verifies and compiles the policy source (both paths' tables), touching no kernel
  // object. A bundle becomes the store's active one only once it compiled; a refused one falls
  // back to the last good bundle with `rejected` set, or throws when there is none.
  LoadedPolicy LoadPolicy();
  void CompilePolicy(LoadedPolicy& loaded);  // throws naming the path whose compile failed
  // Puts a compiled policy in force on both paths or, on a failed kernel write, leaves both on
  // the policy in force (and throws). Needs mu_.
  void ApplyPolicy(LoadedPolicy loaded);
  void MeasureStack();
  // Every enforcement path's mechanism (snapshot order); MeasureDowngrades puts the downgraded
  // ones into the TPM log once the storage path has started.
  std::vector<attestation::v1::MechanismState> Mechanisms() const;  // needs mu_
  void MeasureDowngrades();                                         // needs mu_
  // "path (reason); ..." of every path Mechanisms() says is not enforced; empty: all are.
  std::string NotEnforced() const;  // needs mu_
  void StartApi();
  // from_hook: libvirt's start hook (the guest is not running; never call libvirt back).
  void OnGuestUp(const libvirt::GuestInfo& guest, bool from_hook = false);
  // After a policy switch: the guest's datasets under the policy now in force, put on every tap
  // and on its storage registration; a dataset now held with an uncovered interface has that
  // interface removed as on a hot-plug. Failures are logged and kept in g.error. Needs mu_.
  void RemaskGuest(CoveredGuest& g);
  // Every interface of a domain, with why it cannot be covered (needs no lock).
  static std::vector<GuestNic> ClassifyNics(const libvirt::DomainDescription& domain);
  // Non-empty: why a guest holding `datasets` must not start with these interfaces. Needs mu_.
  std::string UncoveredRefusal(const libvirt::DomainDescription& domain, std::uint64_t datasets);
  // Detaches (or pauses the guest over) every uncovered interface of a running guest holding a
  // dataset, through the watcher's libvirt connection; logged, counted, measured. Needs mu_.
  void RemoveUncoveredNics(const CoveredGuest& g);
  // An uncovered-interface action: warning log, metric and TPM log record. Needs mu_.
  void RecordUncovered(const std::string& action, const std::string& detail);
  void OnGuestDown(const libvirt::GuestInfo& guest);
  libvirt::HookResponse OnHook(const libvirt::HookEvent& event);
  libvirt::HookResponse HandleHook(const libvirt::HookEvent& event);
  void OnTap(const libvirt::TapEvent& event);
  std::uint64_t DatasetsFor(const libvirt::GuestInfo& guest) const;  // needs mu_
  // A label that cannot be parsed, or that names a dataset the policy does not define: the guest
  // holds every dataset on the network (only what all allow) and none on storage.
  bool LabelFailsClosed(const libvirt::DomainDescription& domain) const;   // needs mu_
  std::vector<std::uint16_t> EthertypesFor(std::uint64_t datasets) const;  // needs mu_
  storage::GuestStorage StorageFor(const libvirt::DomainDescription& domain,
                                   std::uint64_t datasets) const;  // needs mu_
  void StartStorage();                                             // needs mu_
  // The machine cgroup the storage programs sit on was replaced (e.g. machine.slice stopped and
  // started): the storage path starts over on the new one with the policy, and running guests
  // are registered again by a reconcile. True when it runs again. Needs mu_.
  bool RestartStorage(const std::string& why);
  // In the hook path, before a guest's cgroup exists: its storage must land on programs that
  // are attached (restarts the storage path if its machine cgroup was replaced). Needs mu_.
  void EnsureStorageAttachPoint();
  // The labelled disks of a domain libvirt has defined, running or not, become protected
  // volumes (the watcher reports every definition at each reconcile and on every define): a
  // guest without the dataset cannot open one before its own guest first runs. Takes mu_.
  void ProtectDefinedVolumes(const libvirt::DomainDescription& definition);
  void StartMetrics();
  void ReleaseTables();  // needs mu_; drops the world table and compiled prefixes once applied

 public:
  // Checks that every program is attached where it should be with the expected tag and that the
  // policy maps match their digests; repairs, raises events and metrics, and measures what it
  // found into the TPM log. Called from the main loop every tamper_check_seconds.
  void CheckTamper();
  // Protects aliases of protected volumes that appeared since (see StorageDatapath::
  // RefreshAliases), logging each; `why` names the occasion. Caller holds mu_.
  void RefreshStorageAliases(std::string_view why, bool overlay_only = false);
  // Protected volumes this host's NVMe over fabrics target serves: disabled (enforced datasets)
  // or reported, each a storage violation in the log.
  void GuardStorageExports();

 private:
  void CheckTamperLocked();  // CheckTamper with mu_ held
  // Parts of CheckTamper, called with mu_ held; true when the policy must be applied again.
  bool CheckNetTamper(bool tables);
  bool CheckStorageTamper(bool tables);
  // A finding of either path: counted and measured into the TPM log as tamper:<kind>.
  void CountAndMeasureTamper(const std::string& kind, const std::string& detail);
  void CollectMetrics(metrics::Registry& registry);  // at scrape time

  Config config_;
  TpmChoice tpm_choice_;
  enforcer::ProbeReport probe_;

  mutable std::mutex mu_;  // guards everything below that callbacks and the API read
  std::optional<policy::JurisdictionTable> table_;
  std::optional<LoadedPolicy> policy_;
  std::map<std::string, CoveredGuest> guests_;  // by uuid
  // Taps a predecessor covered (adopted from bpffs with counters and quotas), not yet claimed by a
  // guest libvirt reports; unclaimed ones are removed after the first reconcile.
  std::map<std::uint32_t, std::string> adopted_;  // ifindex -> guest name
  // Guests the measurement log says this node runs (guest:<uuid> covered, not yet released).
  std::set<std::string> measured_guests_;
  std::set<std::string> removing_nics_;    // "uuid/mac/alias" with a removal under way
  std::set<std::string> paused_for_nics_;  // uuids paused over an interface, resumed without it
  std::uint64_t tamper_checks_ = 0;
  std::unique_ptr<net::NetDatapath> net_;
  std::unique_ptr<storage::StorageDatapath> storage_;  // null when it could not load (reported)
  // Block devices appearing (loop, dm, partitions): aliases of protected volumes made later.
  std::unique_ptr<storage::BlockUevents> block_uevents_;
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<metrics::MetricsServer> metrics_server_;  // null when metrics_listen is empty
  std::string metrics_address_;
  std::string storage_error_;
  struct {
    std::string result;  // "", ok, rejected
    std::string error;
  } last_reload_;
  std::unique_ptr<attestation::tpm::Tpm> tpm_;
  std::unique_ptr<attestation::measure::MeasurementLog> measurements_;
  std::unique_ptr<attestation::evidence::EvidenceBuilder> evidence_;
  std::unique_ptr<attestation::service::AttestationServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<libvirt::Watcher> watcher_;
  std::unique_ptr<libvirt::HookServer> hook_server_;
  std::unique_ptr<libvirt::TapWatcher> tap_watcher_;
  std::string api_socket_;
  std::string api_tls_;  // HOST:PORT of the mutual-TLS listener, empty when off
  std::size_t api_auditors_ = 0;
  std::size_t overlay_not_copied_told_ = 0;  // StorageDatapath::OverlayNotCopiedUp() logged
  std::string program_tag_;                  // kernel tag of the residency program (hex)
  std::uint32_t program_id_ = 0;
};

}  // namespace sovguard::daemon
