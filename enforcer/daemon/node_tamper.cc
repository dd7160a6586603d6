// Tamper rounds: each path compares what the kernel runs with what was written and repairs what it
// can; altered tables get the policy written again. Every finding is measured.
#include "enforcer/daemon/node.h"

#include <net/if.h>

#include <chrono>
#include <functional>
#include <optional>

#include "attestation/eventlog/cel.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "enforcer/bpf_feature/finding.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node_internal.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"

namespace sovguard::daemon {
namespace {

namespace cel = attestation::cel;
using bpf_feature::FindingKind;
using bpf_feature::FindingKindName;

// How one feature's findings read where operators and auditors see them. The kind's label is
// `label_prefix` + its name (metric label, log KIND, measured "tamper:<label>").
template <class Finding>
struct TamperText {
  std::string_view path;          // before "tamper check failed" / "tamper repair failed"
  std::string_view label_prefix;  // "" (network) or "storage-"
  std::string_view object_field;  // the log field naming where it was found
  std::function<std::string(const Finding&)> object;
  std::function<std::string(const Finding&)> found;     // the log line after "tamper: "
  std::function<std::string(const Finding&)> repaired;  // after "tamper repaired: "
};

std::string Label(std::string_view prefix, FindingKind kind) {
  return std::string(prefix) + std::string(FindingKindName(kind));
}

// What one feature's tamper round came to.
template <class Finding>
struct TamperRound {
  bpf_feature::RepairResult<Finding> result;
  bool repair_failed = false;  // Repair threw (logged and counted)
};

// One tamper round of a BPF feature: verify; when something is found, log, count and measure
// each finding (`measure`), repair, and count and log what was repaired. nullopt: nothing found,
// or the check itself failed (logged and counted).
template <bpf_feature::Feature F>
std::optional<TamperRound<typename F::Finding>> VerifyAndRepair(
    F& feature, const typename F::VerifyOptions& verify,
    const typename F::VerifyOptions& repair_options, const TamperText<typename F::Finding>& text,
    metrics::Registry& registry,
    const std::function<void(const std::string& label, const std::string& detail)>& measure) {
  std::vector<typename F::Finding> findings;
  try {
    findings = feature.VerifyAttachments(verify);
  } catch (const std::exception& e) {
    registry.Inc(metrics::kErrors, {"tamper_check"});
    log::Error("{}tamper check failed: {}", text.path, e.what());
    return std::nullopt;
  }
  if (findings.empty()) return std::nullopt;
  for (const auto& f : findings) {
    const std::string label = Label(text.label_prefix, f.kind);
    log::Write(log::Level::kError, "tamper: " + text.found(f),
               {{"EVENT", "tamper"}, {"KIND", label}, {text.object_field, text.object(f)}});
    measure(label, f.detail);
  }
  TamperRound<typename F::Finding> round;
  try {
    round.result = feature.Repair(repair_options);
  } catch (const std::exception& e) {
    registry.Inc(metrics::kErrors, {"tamper_repair"});
    log::Error("{}tamper repair failed: {}", text.path, e.what());
    round.repair_failed = true;
    return round;
  }
  for (const auto& f : round.result.repaired) {
    registry.Inc(metrics::kTamperRepairs, {Label(text.label_prefix, f.kind), "ok"});
    log::Notice("tamper repaired: {}", text.repaired(f));
  }
  return round;
}

const TamperText<storage::StorageFinding>& StorageText() {
  using F = storage::StorageFinding;
  static const TamperText<F> text{
      .path = "storage ",
      .label_prefix = "storage-",
      .object_field = "OBJECT",
      .object = [](const F& f) { return f.object; },
      .found =
          [](const F& f) {
            return std::string(FindingKindName(f.kind)) + " " + f.object + ": " + f.detail;
          },
      .repaired = [](const F& f) { return std::string(FindingKindName(f.kind)) + " " + f.object; }};
  return text;
}

const TamperText<net::TamperFinding>& NetText() {
  using F = net::TamperFinding;
  static const TamperText<F> text{.path = "",
                                  .label_prefix = "",
                                  .object_field = "GUEST",
                                  .object = [](const F& f) { return f.guest; },
                                  .found = [](const F& f) { return net::FormatFinding(f); },
                                  .repaired = [](const F& f) { return net::FormatFinding(f); }};
  return text;
}

}  // namespace

void Node::CheckTamper() {
  std::lock_guard lock(mu_);
  CheckTamperLocked();
}

void Node::CheckTamperLocked() {
  // Identities every check; the table contents (tens of MiB to read back, or hundreds of
  // thousands of endpoint entries to compare) every 12th.
  const bool tables = tamper_checks_++ % 12 == 0;
  const bool net_reapply = CheckNetTamper(tables);
  if (CheckStorageTamper(tables) || net_reapply) {
    // Altered tables Repair cannot restore (e.g. changed while no daemon held them): the active
    // policy written again, once for both paths (fresh maps, atomic switch).
    try {
      ApplyPolicy(LoadPolicy());
      metrics_->Inc(metrics::kTamperRepairs, {"policy_tables", "ok"});
    } catch (const std::exception& e) {
      metrics_->Inc(metrics::kTamperRepairs, {"policy_tables", "error"});
      log::Error("re-applying the policy after tampering failed: {}", e.what());
    }
    ReleaseTables();
  }
  metrics_->Inc(metrics::kTamperChecks);
  metrics_->Set(
      metrics::kTamperLastCheck, {},
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
}

void Node::RefreshStorageAliases(std::string_view why, bool overlay_only) {
  std::vector<std::string> found;
  try {
    found = storage_->RefreshAliases(overlay_only);
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"storage_aliases"});
    log::Error("storage path: aliases ({}): {}", why, e.what());
    return;
  }
  for (const auto& f : found)
    log::Write(log::Level::kNotice, fmt::format("storage path: alias ({}): {}", why, f),
               {{"EVENT", "storage-alias"}});
}

void Node::GuardStorageExports() {
  std::vector<storage::StorageDatapath::ExportFinding> found;
  try {
    found = storage_->GuardExports();
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"storage_exports"});
    log::Error("storage path: nvmet exports: {}", e.what());
    return;
  }
  for (const auto& f : found) {
    const std::string verdict = f.disabled ? "disabled" : f.error.empty() ? "audited" : "failed";
    log::Write(
        log::Level::kNotice,
        fmt::format("storage violation: nvmet-export {} guest - dataset {} path {} at {}{}",
                    verdict, f.dataset, f.volume, f.where, f.error.empty() ? "" : ": " + f.error),
        {{"EVENT", "violation"},
         {"PATH", "storage"},
         {"KIND", "nvmet-export"},
         {"DATASET", f.dataset},
         {"VERDICT", verdict}});
  }
}

void Node::CountAndMeasureTamper(const std::string& kind, const std::string& detail) {
  metrics_->Inc(metrics::kTamperFindings, {kind});
  // Auditors see it in the quoted log, whatever happens next.
  measurements_->MeasureBytes(
      cel::EventKind::kEnforcementState, "tamper:" + kind,
      std::span(reinterpret_cast<const std::uint8_t*>(detail.data()), detail.size()), detail);
}

bool Node::RestartStorage(const std::string& why) {
  log::Warning("storage path: {}: starting it over", why);
  // Protected volumes outlive the guests that declared them: carried over to the new datapath.
  std::vector<storage::StorageDatapath::ProtectedVolume> volumes;
  if (storage_) volumes = storage_->Volumes();
  if (storage_) {
    try {
      storage_->Detach();  // its links, maps and pins: the new one must not adopt them
    } catch (const std::exception& e) {
      log::Error("storage path: detaching the old programs: {}", e.what());
    }
    storage_.reset();
  }
  storage_error_.clear();
  StartStorage();
  if (!storage_) return false;
  try {
    ApplyPolicy(LoadPolicy());  // both paths, atomically, as any reload
    ReleaseTables();
  } catch (const std::exception& e) {
    storage_error_ = std::string("applying the storage policy: ") + e.what();
    log::Error("storage path: {}", storage_error_);
    return false;
  }
  ProtectAgain(*storage_, volumes);
  for (const auto& p : storage_->Programs())
    attestation::measure::MeasureProgramAttached(*measurements_, p.name, p.tag, p.hook,
                                                 storage_->Status().machine_cgroup.string());
  metrics_->Inc(metrics::kTamperRepairs, {"storage-machine-cgroup-replaced", "ok"});
  log::Notice("storage path running again on {} ({} protected volumes carried over)",
              storage_->Status().machine_cgroup.string(), volumes.size());
  if (watcher_) watcher_->RequestReconcile();  // running guests registered again
  return true;
}

void Node::EnsureStorageAttachPoint() {
  if (!storage_) return;
  for (const auto& f : storage_->VerifyAttachments({.compare_endpoints = false})) {
    if (f.kind != FindingKind::kMachineCgroupReplaced) continue;
    CountAndMeasureTamper(Label(StorageText().label_prefix, f.kind), f.detail);
    RestartStorage("the machine cgroup was replaced (seen by the hook)");
    return;
  }
}

bool Node::CheckStorageTamper(bool tables) {
  if (!storage_) return false;
  const storage::StorageVerifyOptions options{.compare_endpoints = tables};
  const auto round = VerifyAndRepair(*storage_, options, options, StorageText(), *metrics_,
                                     [&](const std::string& label, const std::string& detail) {
                                       CountAndMeasureTamper(label, detail);
                                     });
  if (!round) return false;
  if (round->repair_failed) return true;
  const auto& result = round->result;
  bool reapply = false;
  try {
    bool replaced = false;
    for (const auto& f : result.remaining) {
      metrics_->Inc(metrics::kTamperRepairs, {Label(StorageText().label_prefix, f.kind), "error"});
      replaced |= f.kind == FindingKind::kMachineCgroupReplaced;
      reapply = true;
    }
    if (replaced) return !RestartStorage("the machine cgroup was replaced") && reapply;
    if (!result.repaired.empty()) {
      // Auditors see the new attachments in the quoted log.
      for (const auto& p : storage_->Programs())
        attestation::measure::MeasureProgramAttached(*measurements_, p.name, p.tag, p.hook,
                                                     storage_->Status().machine_cgroup.string());
    }
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"tamper_repair"});
    log::Error("storage tamper repair failed: {}", e.what());
    reapply = true;
  }
  return reapply;
}

bool Node::CheckNetTamper(bool tables) {
  if (!net_) return false;
  // Repair hashes the tables every time: a repair round is rare and must see everything.
  const auto round = VerifyAndRepair(*net_, {.hash_tables = tables}, {}, NetText(), *metrics_,
                                     [&](const std::string& label, const std::string& detail) {
                                       CountAndMeasureTamper(label, detail);
                                     });
  if (!round || round->repair_failed) return false;
  bool reapply = false;
  try {
    for (const auto& f : round->result.repaired) {
      char name[IF_NAMESIZE] = {};
      const std::string tap = ::if_indextoname(f.ifindex, name) ? name : f.guest;
      attestation::measure::MeasureProgramAttached(*measurements_, "sg_net", program_tag_,
                                                   "tc/ingress", tap);
    }
    for (const auto& f : round->result.remaining) {
      if (f.kind == FindingKind::kTapMissing) {
        if (watcher_) watcher_->RequestReconcile();
      } else {
        reapply = true;
      }
    }
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"tamper_repair"});
    log::Error("tamper repair failed: {}", e.what());
  }
  return reapply;
}

}  // namespace sovguard::daemon
