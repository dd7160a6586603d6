// Guests: the libvirt hook decides before QEMU starts; the watcher and the tap watcher reconcile
// running guests onto both paths; what cannot be covered is refused or recorded.
#include "enforcer/daemon/node.h"

#include <net/if.h>

#include <algorithm>
#include <chrono>

#include "attestation/eventlog/cel.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "enforcer/daemon/log.h"
#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/hook_server.h"
#include "enforcer/libvirt/resolve.h"
#include "enforcer/libvirt/tap_watcher.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"

namespace sovguard::daemon {
namespace {

namespace cel = attestation::cel;

// Pool volumes become the file or block disk libvirt resolves them to (QEMU opens that path);
// one libvirt cannot resolve stays type "volume" with the reason (a dataset guest is refused).
libvirt::DomainDescription WithPoolVolumesResolved(libvirt::DomainDescription domain,
                                                   const std::string& uri) {
  for (auto& disk : domain.disks) {
    if (disk.source_type != "volume") continue;
    try {
      const auto v = libvirt::ResolvePoolVolume(uri, disk.pool, disk.volume);
      disk.ResolvedTo(v.type, v.path);
    } catch (const std::exception& e) {
      disk.resolve_error = e.what();
    }
  }
  return domain;
}

}  // namespace

storage::GuestStorage Node::StorageFor(const libvirt::DomainDescription& unresolved,
                                       std::uint64_t datasets) const {
  const auto domain = WithPoolVolumesResolved(unresolved, config_.libvirt_uri);
  // A label that fails closed holds every dataset on the network; on storage that would open
  // every dataset's volumes, so there it holds none.
  storage::GuestStorage gs{.name = domain.name,
                           .datasets = LabelFailsClosed(domain) ? 0 : datasets};
  for (const auto& disk : domain.disks) {
    // Network disks have no local source: cgroup/connect guards their endpoints.
    if (disk.source.empty() || (disk.source_type != "file" && disk.source_type != "block")) {
      continue;
    }
    storage::GuestDisk d{.source = disk.source, .readonly = disk.readonly};
    for (const auto& label : domain.labels.disks) {
      if (label.target == disk.target) d.dataset = label.dataset;
    }
    gs.disks.push_back(std::move(d));
  }
  return gs;
}

std::vector<GuestNic> Node::ClassifyNics(const libvirt::DomainDescription& domain) {
  std::vector<GuestNic> nics;
  for (const auto& i : domain.interfaces) {
    GuestNic n{.type = i.type,
               .device = i.tap,
               .mac = i.mac,
               .alias = i.alias,
               .reason = i.UncoveredReason()};
    // A device that exists but is no TAP (a network in macvtap mode, an unmanaged ethernet
    // device) is not covered either; one that does not exist yet fails when it is attached.
    if (n.reason.empty() && ::if_nametoindex(n.device.c_str()) != 0)
      n.reason = libvirt::NotATapReason(n.device);
    nics.push_back(std::move(n));
  }
  return nics;
}

std::string Node::UncoveredRefusal(const libvirt::DomainDescription& domain,
                                   std::uint64_t datasets) {
  if (datasets == 0) return {};  // a guest holding no dataset may keep any NIC
  std::string nics;
  std::size_t index = 0;
  for (const auto& n : ClassifyNics(domain)) {
    ++index;
    if (n.reason.empty()) continue;
    nics += fmt::format("{}interface {}{} (type {}, mac {}): {}", nics.empty() ? "" : "; ", index,
                        n.alias.empty() ? "" : " " + n.alias, n.type, n.mac, n.reason);
  }
  // Disks and host devices the storage path cannot guard (pool volumes resolved first).
  for (const auto& why : WithPoolVolumesResolved(domain, config_.libvirt_uri).UncoveredDevices())
    nics += (nics.empty() ? "" : "; ") + why;
  if (nics.empty()) return {};
  std::string held;
  for (const auto& d : policy_->compiled.datasets)
    if (datasets & (1ULL << d.index)) held += (held.empty() ? "" : ", ") + d.id;
  return fmt::format(
      "it holds dataset(s) {} and has interfaces or devices sovguard cannot guard: {}", held, nics);
}

void Node::RecordUncovered(const std::string& action, const std::string& detail) {
  metrics_->Inc(metrics::kUncoveredInterfaces, {action});
  log::Write(log::Level::kWarning, "uncovered interface " + action + ": " + detail,
             {{"EVENT", "uncovered_interface"}, {"ACTION", action}});
  // Auditors see it in the quoted log.
  measurements_->MeasureBytes(
      cel::EventKind::kEnforcementState, "interface:" + action,
      std::span(reinterpret_cast<const std::uint8_t*>(detail.data()), detail.size()), detail);
}

void Node::RemoveUncoveredNics(const CoveredGuest& g) {
  if (g.datasets == 0 || !watcher_) return;
  for (const auto& n : g.nics) {
    if (n.reason.empty()) continue;
    const std::string key = g.uuid + "/" + n.mac + "/" + n.alias;
    if (!removing_nics_.insert(key).second) continue;  // under way
    const std::string what =
        fmt::format("guest {} ({}) holds a dataset: interface {} (type {}, mac {}): {}", g.name,
                    g.uuid, n.alias, n.type, n.mac, n.reason);
    RecordUncovered("detach_requested", what);
    // Within about 1 s of the device-added event: detached, or else the guest is paused.
    watcher_->RemoveInterface(
        g.uuid, libvirt::Interface{.type = n.type, .tap = n.device, .mac = n.mac, .alias = n.alias},
        std::chrono::milliseconds(800),
        [this, key, what, uuid = g.uuid](const libvirt::NicRemovalResult& r) {
          std::lock_guard lock(mu_);
          removing_nics_.erase(key);
          if (r.outcome == libvirt::NicRemovalOutcome::kPaused) paused_for_nics_.insert(uuid);
          RecordUncovered(std::string(libvirt::ToString(r.outcome)),
                          fmt::format("{}: {} ({} ms)", what, r.detail, r.took.count()));
        });
  }
}

void Node::OnGuestUp(const libvirt::GuestInfo& guest, bool from_hook) {
  std::lock_guard lock(mu_);
  CoveredGuest& g = guests_[guest.domain.uuid];
  const std::vector<std::uint32_t> previous = g.ifindexes;
  g = CoveredGuest{.name = guest.domain.name,
                   .uuid = guest.domain.uuid,
                   .taps = guest.domain.Taps(),
                   .cgroup = guest.cgroup ? guest.cgroup->scope_path : "",
                   .datasets = DatasetsFor(guest),
                   .label_state = guest.domain.labels.state == libvirt::LabelState::kValid ? "valid"
                                  : guest.domain.labels.state == libvirt::LabelState::kInvalid
                                      ? "invalid"
                                      : "absent",
                   .error = guest.domain.labels.error,
                   .nics = ClassifyNics(guest.domain),
                   .info = std::make_shared<const libvirt::GuestInfo>(guest)};
  g.taps.clear();  // only TAP devices: a macvtap's ingress is not what the guest sends
  for (const auto& n : g.nics)
    if (n.reason.empty()) g.taps.push_back(n.device);
  const std::vector<std::uint16_t> ethertypes = EthertypesFor(g.datasets);
  for (const auto& tap : g.taps) {
    const unsigned ifindex = ::if_nametoindex(tap.c_str());
    if (ifindex == 0) {
      g.error = "tap " + tap + " not found";
      continue;
    }
    try {
      if (std::find(previous.begin(), previous.end(), ifindex) != previous.end()) {
        net_->SetGuestDatasets(ifindex, g.datasets, ethertypes);
      } else if (adopted_.erase(ifindex) != 0) {
        // Covered since the predecessor's time: keep its counters and quota windows.
        net_->SetGuestDatasets(ifindex, g.datasets, ethertypes);
        log::Info("guest {}: tap {} adopted with its counters", g.name, tap);
      } else {
        net_->AddGuest({.name = g.name,
                        .ifindex = ifindex,
                        .datasets = g.datasets,
                        .allowed_ethertypes = ethertypes});
        metrics_->Inc(metrics::kAttachOps, {"tap", "attach", "ok"});
        attestation::measure::MeasureProgramAttached(*measurements_, "sg_net", program_tag_,
                                                     "tc/ingress", tap);
      }
      g.ifindexes.push_back(ifindex);
      log::Info("guest {}: tap {} covered, datasets mask {:#x}", g.name, tap, g.datasets);
    } catch (const std::exception& e) {
      g.error = e.what();
      metrics_->Inc(metrics::kAttachOps, {"tap", "attach", "error"});
      metrics_->Inc(metrics::kErrors, {"attach"});
      log::Error("guest {}: tap {}: {}", g.name, tap, e.what());
    }
  }
  if (storage_ && guest.cgroup) {
    try {
      storage_->RegisterGuestCgroup(guest.cgroup->scope_id, StorageFor(guest.domain, g.datasets));
    } catch (const std::exception& e) {
      g.error = std::string("storage: ") + e.what();
      log::Error("guest {}: storage: {}", g.name, e.what());
    }
  }
  // Taps that went away (hot-unplug) are detached.
  for (auto ifindex : previous) {
    if (std::find(g.ifindexes.begin(), g.ifindexes.end(), ifindex) == g.ifindexes.end()) {
      net_->RemoveGuest(ifindex);
    }
  }
  for (auto& n : g.nics) {
    const unsigned ifindex = n.reason.empty() ? ::if_nametoindex(n.device.c_str()) : 0;
    n.covered = ifindex != 0 &&
                std::find(g.ifindexes.begin(), g.ifindexes.end(), ifindex) != g.ifindexes.end();
  }
  // A paused guest sends nothing and cannot complete an unplug: handled when it resumes. One we
  // paused over an interface runs again once the interface is gone.
  if (!from_hook && !guest.paused) RemoveUncoveredNics(g);
  if (!from_hook && guest.paused && watcher_ && paused_for_nics_.count(g.uuid) != 0 &&
      std::all_of(g.nics.begin(), g.nics.end(),
                  [](const GuestNic& n) { return n.reason.empty(); })) {
    paused_for_nics_.erase(g.uuid);
    const std::string what = "guest " + g.name + " (" + g.uuid + ") no longer has it";
    watcher_->ResumeGuest(g.uuid, [this, what](const std::string& error) {
      std::lock_guard relock(mu_);
      RecordUncovered(error.empty() ? "resumed" : "failed",
                      what + (error.empty() ? ": resumed" : ": resuming failed: " + error));
    });
  }
  // Once per guest run: the quoted log then tells a verifier which guests the snapshot must cover.
  if (measured_guests_.insert(g.uuid).second)
    attestation::measure::MeasureGuest(*measurements_, g.uuid, true);
}

void Node::OnTap(const libvirt::TapEvent& event) {
  std::lock_guard lock(mu_);
  if (!net_) return;
  if (!event.added) {
    net_->ForgetDefaultDeny(event.ifindex, /*detach=*/false);  // its filters went with it
    return;
  }
  if (!event.ethernet) return;  // layer-3 TUN devices carry no guest's frames
  for (const auto& [uuid, g] : guests_) {
    if (std::find(g.ifindexes.begin(), g.ifindexes.end(), event.ifindex) != g.ifindexes.end()) {
      return;  // covered already (libvirt's hook ran first)
    }
  }
  if (adopted_.count(event.ifindex) != 0) return;
  try {
    net_->AttachDefaultDeny(event.ifindex);
    metrics_->Inc(metrics::kAttachOps, {"tap", "default_deny", "ok"});
    log::Write(log::Level::kNotice,
               fmt::format("tap {} (ifindex {}) appeared: dropping its frames until a guest "
                           "claims it",
                           event.name, event.ifindex),
               {{"EVENT", "default_deny"}, {"TAP", event.name}});
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kAttachOps, {"tap", "default_deny", "error"});
    log::Error("tap {}: default-deny filter: {}", event.name, e.what());
  }
}

libvirt::HookResponse Node::OnHook(const libvirt::HookEvent& event) {
  libvirt::HookResponse response = HandleHook(event);
  metrics_->Inc(metrics::kHookRequests,
                {event.request.op + "/" + event.request.sub, response.ok ? "ok" : "error"});
  return response;
}

libvirt::HookResponse Node::HandleHook(const libvirt::HookEvent& event) {
  // Only "start begin" blocks libvirt: the taps exist and QEMU has not run yet, so covering them
  // now means the guest's first frame meets the filter. Everything else is a notice.
  if (!libvirt::IsBlockingOperation(event.request.op, event.request.sub)) return {.ok = true};
  if (!event.domain) {
    return {.ok = false,
            .error = "domain XML unusable, refusing to start it: " + event.parse_error};
  }
  libvirt::GuestInfo guest;
  guest.domain = *event.domain;
  {
    // Fail closed, before anything is attached or measured for it: a path that guards nothing
    // (storage path refused to start or adopt, no mechanism) keeps every guest that holds a
    // dataset from starting, with the reason; so does an interface sovguard cannot filter.
    std::lock_guard lock(mu_);
    const std::string unguarded = NotEnforced();
    if (!unguarded.empty() && (!policy_ || DatasetsFor(guest) != 0)) {
      log::Error("hook: refusing to start guest {}: not enforced: {}", event.request.name,
                 unguarded);
      return {.ok = false,
              .error =
                  "sovguard refuses to start a guest holding a dataset while an enforcement "
                  "path is not enforced on this node: " +
                  unguarded};
    }
    // Every guest, holding a dataset or not: below no cgroup the storage path watches, its QEMU
    // would count as a host process and could open every dataset's volumes.
    const std::string partition = guest.domain.partition.empty()
                                      ? std::string(kDefaultLibvirtPartition)
                                      : guest.domain.partition;
    if (partition != config_.libvirt_partition) {
      const std::string why = fmt::format(
          "its cgroup partition {} is outside libvirt's machine partition {}, below "
          "which sovguard's storage path tells guests from host processes",
          partition, config_.libvirt_partition);
      log::Error("hook: refusing to start guest {}: {}", event.request.name, why);
      return {.ok = false, .error = "sovguard refuses to start it: " + why};
    }
    if (const auto why = UncoveredRefusal(guest.domain, DatasetsFor(guest)); !why.empty()) {
      RecordUncovered("refused", "guest " + guest.domain.name + " (" + guest.domain.uuid +
                                     "): start refused: " + why);
      return {.ok = false, .error = "sovguard refuses to start it: " + why};
    }
  }
  OnGuestUp(guest, /*from_hook=*/true);
  std::lock_guard lock(mu_);
  const auto it = guests_.find(guest.domain.uuid);
  if (it == guests_.end() || it->second.ifindexes.size() != it->second.taps.size()) {
    const std::string why = it == guests_.end() ? "not covered" : it->second.error;
    log::Error("hook: refusing to start guest {}: {}", event.request.name, why);
    return {.ok = false, .error = "sovguard could not cover every tap: " + why};
  }
  if (storage_) {
    // The guest's cgroup does not exist yet: announce its name so the kernel registers it the
    // moment libvirt creates it, before QEMU opens a disk.
    try {
      EnsureStorageAttachPoint();
      if (!storage_) throw std::runtime_error("the storage path is not running: " + storage_error_);
      // A device made over a protected volume since (and named in this guest's XML) is one
      // of its aliases before QEMU can open it.
      RefreshStorageAliases("guest " + event.request.name + " starting");
      storage_->ExpectGuest(storage_->GuestCgroupName(guest.domain.id, guest.domain.name),
                            StorageFor(guest.domain, it->second.datasets));
    } catch (const storage::StorageRefused& e) {
      log::Error("hook: refusing to start guest {}: {}", event.request.name, e.what());
      return {.ok = false, .error = std::string("sovguard storage policy: ") + e.what()};
    } catch (const std::exception& e) {
      log::Error("hook: refusing to start guest {}: storage: {}", event.request.name, e.what());
      return {.ok = false, .error = std::string("sovguard could not guard its disks: ") + e.what()};
    }
  }
  log::Info("hook: guest {} covered before QEMU starts", event.request.name);
  return {.ok = true};
}

void Node::OnGuestDown(const libvirt::GuestInfo& guest) {
  std::lock_guard lock(mu_);
  auto it = guests_.find(guest.domain.uuid);
  if (it == guests_.end()) return;
  for (auto ifindex : it->second.ifindexes) {
    try {
      net_->RemoveGuest(ifindex);
      metrics_->Inc(metrics::kAttachOps, {"tap", "detach", "ok"});
    } catch (const std::exception& e) {
      metrics_->Inc(metrics::kAttachOps, {"tap", "detach", "error"});
      log::Warning("guest {}: detaching ifindex {}: {}", it->second.name, ifindex, e.what());
    }
  }
  if (storage_) {
    try {
      storage_->RemoveGuest(it->second.name);
    } catch (const std::exception& e) {
      log::Warning("guest {}: storage: {}", it->second.name, e.what());
    }
  }
  paused_for_nics_.erase(it->second.uuid);
  if (measured_guests_.erase(it->second.uuid) != 0)
    attestation::measure::MeasureGuest(*measurements_, it->second.uuid, false);
  log::Info("guest {} down: detached", it->second.name);
  guests_.erase(it);
}

void Node::ProtectDefinedVolumes(const libvirt::DomainDescription& definition) {
  if (definition.labels.state != libvirt::LabelState::kValid) return;
  std::lock_guard lock(mu_);
  if (!storage_) return;
  std::size_t protected_volumes = 0;
  for (const auto& disk : StorageFor(definition, 0).disks) {
    if (disk.dataset.empty()) continue;
    try {
      storage_->ProtectVolume(disk.source, disk.dataset, disk.readonly);
      ++protected_volumes;
    } catch (const std::exception& e) {
      log::Warning("storage path: {} disk {} (dataset {}) not protected: {}", definition.name,
                   disk.source.string(), disk.dataset, e.what());
    }
  }
  if (protected_volumes != 0)
    log::Info("storage path: {} labelled disks of defined domain {} protected", protected_volumes,
              definition.name);
}

}  // namespace sovguard::daemon
