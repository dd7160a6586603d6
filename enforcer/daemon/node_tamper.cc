// Tamper rounds: each path compares what the kernel runs with what was written and repairs what it
// can; altered tables get the policy written again. Every finding is measured.
#include "enforcer/daemon/node.h"

#include <net/if.h>

#include <chrono>

#include "attestation/eventlog/cel.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
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
    if (f.kind != "machine-cgroup-replaced") continue;
    CountAndMeasureTamper("storage-" + f.kind, f.detail);
    RestartStorage("the machine cgroup was replaced (seen by the hook)");
    return;
  }
}

bool Node::CheckStorageTamper(bool tables) {
  if (!storage_) return false;
  const storage::StorageVerifyOptions options{.compare_endpoints = tables};
  std::vector<storage::StorageFinding> findings;
  try {
    findings = storage_->VerifyAttachments(options);
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"tamper_check"});
    log::Error("storage tamper check failed: {}", e.what());
    return false;
  }
  if (findings.empty()) return false;
  for (const auto& f : findings) {
    const std::string kind = "storage-" + f.kind;
    log::Write(log::Level::kError, "tamper: " + f.kind + " " + f.object + ": " + f.detail,
               {{"EVENT", "tamper"}, {"KIND", kind}, {"OBJECT", f.object}});
    CountAndMeasureTamper(kind, f.detail);
  }
  bool reapply = false;
  try {
    const auto result = storage_->Repair(options);
    for (const auto& f : result.repaired) {
      metrics_->Inc(metrics::kTamperRepairs, {"storage-" + f.kind, "ok"});
      log::Notice("tamper repaired: {} {}", f.kind, f.object);
    }
    bool replaced = false;
    for (const auto& f : result.remaining) {
      metrics_->Inc(metrics::kTamperRepairs, {"storage-" + f.kind, "error"});
      replaced |= f.kind == "machine-cgroup-replaced";
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
  std::vector<datapath::TamperFinding> findings;
  try {
    findings = net_->VerifyAttachments({.hash_tables = tables});
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kErrors, {"tamper_check"});
    log::Error("tamper check failed: {}", e.what());
    return false;
  }
  if (findings.empty()) return false;
  for (const auto& f : findings) {
    const std::string kind(datapath::TamperKindName(f.kind));
    log::Write(log::Level::kError, "tamper: " + datapath::FormatFinding(f),
               {{"EVENT", "tamper"}, {"KIND", kind}, {"GUEST", f.guest}});
    CountAndMeasureTamper(kind, f.detail);
  }
  bool reapply = false;
  try {
    const auto result = net_->Repair();
    for (const auto& f : result.repaired) {
      const std::string kind(datapath::TamperKindName(f.kind));
      metrics_->Inc(metrics::kTamperRepairs, {kind, "ok"});
      char name[IF_NAMESIZE] = {};
      const std::string tap = ::if_indextoname(f.ifindex, name) ? name : f.guest;
      attestation::measure::MeasureProgramAttached(*measurements_, "sg_net", program_tag_,
                                                   "tc/ingress", tap);
      log::Notice("tamper repaired: {}", datapath::FormatFinding(f));
    }
    for (const auto& f : result.remaining) {
      if (f.kind == datapath::TamperKind::kTapMissing) {
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
