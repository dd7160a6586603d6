// What the node reports: status for sovguardctl, Prometheus metrics, violation events to the log.
#include "enforcer/daemon/node.h"

#include <net/if.h>

#include <algorithm>
#include <chrono>

#include "attestation/common/bytes.h"
#include "attestation/measure/measurement_log.h"
#include "base/hex.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node_internal.h"
#include "enforcer/metrics/export.h"
#include "enforcer/metrics/http_server.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/process_metrics.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/block_uevents.h"
#include "enforcer/storage/storage_datapath.h"
#include "enforcer/version.h"

namespace sovguard::daemon {
namespace {

// Which mechanism guards each storage path and the per (guest, dataset) byte counters.
nlohmann::json StorageJson(storage::StorageDatapath* sp, const std::string& error) {
  nlohmann::json j = {{"enforced", sp != nullptr}, {"error", error}};
  if (sp == nullptr) return j;
  const auto& st = sp->Status();
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& p : st.paths) {
    paths.push_back({{"path", p.path},
                     {"mechanism", p.mechanism},
                     {"guarantee", storage::ToString(p.guarantee)},
                     {"unavailable", p.unavailable}});
  }
  nlohmann::json counters = nlohmann::json::array();
  for (const auto& c : sp->ReadCounters()) {
    counters.push_back({{"guest", c.guest},
                        {"dataset", c.dataset},
                        {"read_bytes", c.read_bytes},
                        {"write_bytes", c.write_bytes},
                        {"denied", c.denied},
                        {"read_window_bytes", c.read_window_bytes},
                        {"write_window_bytes", c.write_window_bytes}});
  }
  j["paths"] = paths;
  j["machine_cgroup"] = st.machine_cgroup.string();
  j["layout"] = storage::ToString(st.layout);
  j["guest_discovery"] = st.guest_discovery;
  j["overlay_not_copied_up"] = st.overlay_not_copied_up;
  j["btrfs_subvolumes"] = st.btrfs_subvolumes;
  j["guests"] = st.guests;
  j["pending"] = st.pending;
  j["volumes"] = st.volumes;
  j["fanotify"] = {{"allowed", st.fanotify_allowed},
                   {"denied", st.fanotify_denied},
                   {"failed", st.fanotify_failed}};
  j["counters"] = counters;
  return j;
}

}  // namespace

void Node::CollectMetrics(metrics::Registry& registry) {
  metrics::CollectProcessMetrics(registry);
  std::lock_guard lock(mu_);
  if (net_) metrics::ExportNetStatus(registry, net_->Status());
  std::map<std::string, double> covered{{"absent", 0}, {"valid", 0}, {"invalid", 0}};
  for (const auto& [uuid, g] : guests_) covered[g.label_state] += 1;
  std::vector<metrics::Registry::Sample> by_state;
  for (const auto& [state, n] : covered) by_state.push_back({{state}, n});
  registry.Replace(metrics::kGuestsCovered, by_state);
  std::vector<metrics::Registry::Sample> enforced;
  for (const auto& m : Mechanisms()) enforced.push_back({{m.path()}, m.not_enforced() ? 0.0 : 1.0});
  registry.Replace(metrics::kPathEnforced, enforced);
  if (storage_) {
    std::vector<metrics::Registry::Sample> reads, writes, denied, suppressed;
    for (const auto& c : storage_->ReadCounters()) {
      reads.push_back({{c.guest, c.dataset}, static_cast<double>(c.read_bytes)});
      writes.push_back({{c.guest, c.dataset}, static_cast<double>(c.write_bytes)});
      denied.push_back({{c.guest, c.dataset}, static_cast<double>(c.denied)});
    }
    for (const auto& [guest, n] : storage_->SuppressedEvents())
      suppressed.push_back({{guest}, static_cast<double>(n)});
    registry.Replace(metrics::kStorageReadBytes, reads);
    registry.Replace(metrics::kStorageWriteBytes, writes);
    registry.Replace(metrics::kStorageDenied, denied);
    registry.Replace(metrics::kStorageEventsSuppressed, suppressed);
  }
}

void Node::StartMetrics() {
  metrics::ExportProbe(*metrics_, probe_);
  metrics_->Set(metrics::kBuildInfo, {SOVGUARD_VERSION}, 1);
  metrics_->Set(metrics::kTpmSoftware, {}, tpm_choice_.software ? 1 : 0);
  metrics_->Set(
      metrics::kStartTime, {},
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count());
  metrics_->AddCollector([this](metrics::Registry& r) { CollectMetrics(r); });
  if (config_.metrics_listen.empty()) return;
  try {
    metrics_server_ = std::make_unique<metrics::MetricsServer>(
        *metrics_,
        metrics::ServerOptions{.listen = config_.metrics_listen, .log = [](const std::string& m) {
                                 log::Warning("metrics: {}", m);
                               }});
    metrics_address_ = metrics_server_->address();
    log::Info("metrics on http://{}/metrics", metrics_address_);
  } catch (const std::exception& e) {
    // Observability must not take enforcement down: say so loudly and go on.
    metrics_->Inc(metrics::kErrors, {"metrics"});
    log::Error("metrics endpoint {} unavailable: {}", config_.metrics_listen, e.what());
  }
}

void Node::PumpEvents() {
  // The datapaths have one owner at a time (hook, watcher, tamper check, here); the callbacks run
  // inside PollEvents, under this lock.
  std::lock_guard lock(mu_);
  if (net_) {
    net_->PollEvents(0, [this](const sg_net_event& ev) {
      std::string guest;
      for (const auto& [uuid, g] : guests_) {
        if (std::find(g.ifindexes.begin(), g.ifindexes.end(), ev.ifindex) != g.ifindexes.end())
          guest = g.name;
      }
      const std::string dataset = policy_ && ev.dataset < policy_->compiled.datasets.size()
                                      ? policy_->compiled.datasets[ev.dataset].id
                                      : "#" + std::to_string(ev.dataset);
      metrics_->Inc(metrics::kViolations,
                    {guest, dataset, metrics::NetReasonLabel(ev.reason),
                     std::string(ev.verdict == SG_VERDICT_DROP ? metrics::kVerdictDrop
                                                               : metrics::kVerdictWouldDrop)});
      log::Write(log::Level::kNotice, "violation: " + net::FormatEvent(ev),
                 {{"EVENT", "violation"},
                  {"PATH", "network"},
                  {"GUEST", guest},
                  {"DATASET", dataset},
                  {"COUNTRY", net::CountryText(ev.country)},
                  {"VERDICT", ev.verdict == SG_VERDICT_DROP ? "dropped" : "audited"}});
    });
  }
  if (storage_ && block_uevents_ && block_uevents_->Changed())
    RefreshStorageAliases("block device uevent");
  // Protection copies an overlayfs file up at once, so its upper-layer file is protected from
  // the start. Should its layer files change all the same (replaced in a layer behind the
  // overlay's back), the new one is an alias from this round on.
  if (storage_) {
    RefreshStorageAliases("overlayfs copy-up", /*overlay_only=*/true);
    GuardStorageExports();
    const auto& not_copied = storage_->OverlayNotCopiedUp();
    if (overlay_not_copied_told_ > not_copied.size()) overlay_not_copied_told_ = 0;  // new path
    for (; overlay_not_copied_told_ < not_copied.size(); ++overlay_not_copied_told_)
      log::Warning(
          "storage path: overlayfs file {} (a later copy-up is guarded from the next "
          "round, not at once)",
          not_copied[overlay_not_copied_told_]);
    storage_->PollEvents(
        [](const storage::StorageEvent& ev) {
          log::Write(
              log::Level::kNotice,
              fmt::format("storage violation: {} {} guest {} dataset {} path {} pid {}{}", ev.kind,
                          storage::ToString(ev.verdict), ev.guest,
                          ev.dataset.empty() ? "-" : ev.dataset, ev.path.empty() ? "-" : ev.path,
                          ev.pid, ev.address.empty() ? "" : " to " + ev.address),
              {{"EVENT", "violation"},
               {"PATH", "storage"},
               {"KIND", ev.kind},
               {"GUEST", ev.guest},
               {"DATASET", ev.dataset},
               {"VERDICT", storage::ToString(ev.verdict)}});
        },
        0);
  }
}

nlohmann::json Node::Status() const {
  std::lock_guard lock(mu_);
  // What the kernel really has, per tap: the datapath's view, not what we meant to do.
  std::map<std::uint32_t, bool> attached;
  net::NetStatus net_status;
  if (net_) {
    net_status = net_->Status();
    for (const auto& gs : net_status.guests) attached[gs.ifindex] = gs.attached;
  }
  nlohmann::json guests = nlohmann::json::array();
  for (const auto& [uuid, g] : guests_) {
    nlohmann::json datasets = nlohmann::json::array();
    if (policy_) {
      for (const auto& d : policy_->compiled.datasets) {
        if (g.datasets & (1ULL << d.index)) {
          datasets.push_back({{"id", d.id}, {"mode", ModeText(d.mode)}});
        }
      }
    }
    nlohmann::json attachments = nlohmann::json::array();
    for (const auto& tap : g.taps) {
      const unsigned ifindex = ::if_nametoindex(tap.c_str());
      const bool covered =
          std::find(g.ifindexes.begin(), g.ifindexes.end(), ifindex) != g.ifindexes.end();
      const auto it = attached.find(ifindex);
      attachments.push_back({{"tap", tap},
                             {"ifindex", ifindex},
                             {"hook", "tc clsact ingress"},
                             {"program", "sg_net_egress"},
                             {"prog_id", program_id_},
                             {"tag", program_tag_},
                             {"attached", covered && it != attached.end() && it->second}});
    }
    nlohmann::json nics = nlohmann::json::array();
    for (const auto& n : g.nics) {
      nics.push_back({{"type", n.type},
                      {"device", n.device},
                      {"mac", n.mac},
                      {"alias", n.alias},
                      {"covered", n.covered},
                      {"reason", n.reason}});
    }
    guests.push_back({{"name", g.name},
                      {"uuid", g.uuid},
                      {"taps", g.taps},
                      {"interfaces", nics},
                      {"cgroup", g.cgroup},
                      {"datasets_mask", g.datasets},
                      {"datasets", datasets},
                      {"attachments", attachments},
                      {"label", g.label_state},
                      {"error", g.error}});
  }
  nlohmann::json pol;
  if (policy_) {
    nlohmann::json datasets = nlohmann::json::array();
    for (const auto& d : policy_->compiled.datasets) {
      datasets.push_back({{"id", d.id}, {"index", d.index}, {"mode", ModeText(d.mode)}});
    }
    pol = {{"source", policy_->source},
           {"sha256", attestation::ToHex(policy_->source_sha256)},
           {"compiled_digest", base::ToHex(policy_->compiled.digest)},
           {"bundle_version", policy_->bundle_version},
           {"datasets", datasets},
           {"last_reload", {{"result", last_reload_.result}, {"error", last_reload_.error}}}};
  }
  nlohmann::json paths = nlohmann::json::array();
  for (const auto& m : Mechanisms()) {
    paths.push_back({{"path", m.path()},
                     {"mechanism", m.active()},
                     {"enforced", !m.not_enforced()},
                     {"reason", m.reason()}});
  }
  return {
      {"guests", guests},
      {"enforcement", paths},
      {"not_enforced", NotEnforced()},
      {"policy", pol},
      {"api_socket", api_socket_},
      {"api_tls", api_tls_},
      {"metrics", metrics_address_.empty() ? "" : "http://" + metrics_address_ + "/metrics"},
      {"measurements", measurements_ ? nlohmann::json{{"pcr", measurements_->pcr()},
                                                      {"log", measurements_->log_path().string()},
                                                      {"state", measurements_->open_state()}}
                                     : nlohmann::json()},
      {"storage", StorageJson(storage_.get(), storage_error_)},
      {"datapath",
       {{"guests", net_status.guests.size()},
        {"default_deny_taps", net_ ? net_->default_deny_taps() : 0},
        {"program_id", program_id_},
        {"program_tag", program_tag_}}},
      {"network", net_ ? net::FormatStatus(net_status) : ""}};
}

}  // namespace sovguard::daemon
