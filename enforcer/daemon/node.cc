#include "enforcer/daemon/node.h"

#include <bpf/bpf.h>
#include <grpcpp/grpcpp.h>

#include <chrono>

#include "attestation/common/bytes.h"
#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "attestation/service/attestation_service.h"
#include "attestation/tpm/tpm.h"
#include "bpf/net/sg_net.skel.h"
#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node_internal.h"
#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/hook_server.h"
#include "enforcer/libvirt/tap_watcher.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/metrics/http_server.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/block_uevents.h"
#include "enforcer/storage/storage_datapath.h"
#include "enforcer/system/mounts.h"

namespace sovguard::daemon {
namespace {

namespace cel = attestation::cel;

// The machine cgroup of libvirt partition `partition` (Config::libvirt_partition): empty for the
// default (the storage path detects the layout); <cgroup2>/<name>.partition otherwise, libvirt's
// name for a top-level partition in its cgroupfs layout (refused where libvirt uses systemd's).
std::filesystem::path PartitionCgroup(const std::string& partition) {
  if (partition == kDefaultLibvirtPartition) return {};
  if (const auto layout = storage::DetectCgroupLayout();
      layout.layout == storage::CgroupLayout::kSystemd)
    throw std::runtime_error("libvirt_partition " + partition +
                             ": only libvirt's default /machine is supported in the systemd "
                             "layout (" +
                             layout.reason + ")");
  const auto root = enforcer::FindCgroup2Mount();
  if (!root) throw std::runtime_error("no cgroup2 mount for libvirt partition " + partition);
  const std::string name = partition.substr(1);
  return *root / (name.find('.') == std::string::npos ? name + ".partition" : name);
}

}  // namespace

void ProtectAgain(storage::StorageDatapath& sp,
                  const std::vector<storage::StorageDatapath::ProtectedVolume>& volumes) {
  for (const auto& v : volumes) {
    try {
      sp.ProtectVolume(v.path, v.dataset, v.readonly);
    } catch (const std::exception& e) {
      log::Error("storage path: volume {} of dataset {} not protected again: {}", v.path.string(),
                 v.dataset, e.what());
    }
  }
}

Node::Node(Config config, TpmChoice tpm, enforcer::ProbeReport probe)
    : config_(std::move(config)),
      tpm_choice_(std::move(tpm)),
      probe_(std::move(probe)),
      metrics_(std::make_unique<metrics::Registry>()) {
  metrics_->DeclareAll(metrics::kAllMetrics);
}

Node::~Node() {
  tap_watcher_.reset();
  metrics_server_.reset();
  hook_server_.reset();
  if (watcher_) watcher_->Stop();
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

void Node::MeasureStack() {
  attestation::measure::MeasurePlatform(*measurements_);
  std::size_t size = 0;
  const void* net_obj = sg_net__elf_bytes(&size);
  attestation::measure::MeasureBpfObject(*measurements_, "bpf/net/sg_net.bpf.o",
                                         {static_cast<const std::uint8_t*>(net_obj), size});
  const void* storage_obj = storage_guard__elf_bytes(&size);
  attestation::measure::MeasureBpfObject(*measurements_, "bpf/storage/storage_guard.bpf.o",
                                         {static_cast<const std::uint8_t*>(storage_obj), size});
}

void Node::StartStorage() {
  try {
    // Pinned like the network datapath: a restarted or upgraded daemon adopts the storage
    // programs, guests, volumes, counters and quota windows with no gap in between.
    storage_ = std::make_unique<storage::StorageDatapath>(storage::StorageOptions{
        .machine_cgroup = PartitionCgroup(config_.libvirt_partition),
        .pin_dir = config_.bpf_pin_dir / "storage",
        // A machine cgroup replaced while no daemon ran: measured like the tamper round's
        // finding, then the stale state is released and the path starts over.
        .on_stale_state = [this](const std::string& detail) {
          const std::string kind(
              bpf_feature::FindingKindName(bpf_feature::FindingKind::kMachineCgroupReplaced));
          log::Write(log::Level::kError, "tamper: " + kind + ": " + detail,
                     {{"EVENT", "tamper"}, {"KIND", "storage-" + kind}});
          CountAndMeasureTamper("storage-" + kind, detail);
        }});
    if (storage_->Status().adopted)
      log::Info("storage path adopted from {} (guests, volumes, counters and quotas kept)",
                (config_.bpf_pin_dir / "storage").string());
    log::Info("storage path: libvirt cgroup layout {}, machine cgroup {} ({})",
              storage::ToString(storage_->Status().layout),
              storage_->Status().machine_cgroup.string(), storage_->Status().layout_reason);
    for (const auto& p : storage_->Status().paths) {
      log::Info("storage path {}: {} ({})", p.path, p.mechanism, storage::ToString(p.guarantee));
      for (const auto& u : p.unavailable) log::Warning("storage path {}: not used: {}", p.path, u);
    }
    if (!storage_->Status().btrfs_subvolumes)
      log::Warning(
          "storage path: btrfs subvolumes are not told apart (the kernel describes no btrfs inode: "
          "a module not loaded yet): a file of another subvolume with a protected file's inode "
          "number is guarded alike until the daemon restarts");
    if (!block_uevents_) {
      try {
        block_uevents_ = std::make_unique<storage::BlockUevents>();
      } catch (const std::exception& e) {
        log::Warning(
            "storage path: no block device uevents ({}): aliases made after a volume's "
            "protection are protected at the next guest start only",
            e.what());
      }
    }
  } catch (const std::exception& e) {
    // Loud, visible in status and the attestation snapshot (probe), never silent: the network
    // path keeps enforcing.
    storage_error_ = e.what();
    log::Error("storage path NOT enforced: {}", storage_error_);
  }
}

void Node::Start() {
  std::lock_guard lock(mu_);
  std::string error;
  const auto table_path = config_.data_dir / "world.sgjt";
  table_ = policy::JurisdictionTable::Load(table_path, &error);
  if (!table_) throw std::runtime_error("jurisdiction table: " + error);
  log::Info("jurisdiction table {}: {} IPv4 + {} IPv6 prefixes, {} countries", table_path.string(),
            table_->v4().size(), table_->v6().size(), table_->Countries().size());

  tpm_ = std::make_unique<attestation::tpm::Tpm>(tpm_choice_.tcti);
  measurements_ = std::make_unique<attestation::measure::MeasurementLog>(
      *tpm_, attestation::measure::MeasureConfig{.state_dir = config_.state_dir / "measurements",
                                                 .pcr = config_.sovguard_pcr});
  log::Info("measurement log {} on PCR {} ({})", measurements_->log_path().string(),
            measurements_->pcr(), measurements_->open_state());
  MeasureStack();
  // Guests a predecessor measured as running; the first reconcile settles which still are.
  measurements_->WithLog(
      [this](std::span<const cel::Record> records, std::span<const std::uint8_t>) {
        measured_guests_ = cel::MeasuredGuests(records);
      });

  // Filters stay on the taps when the daemon exits: the loaded program and its maps keep
  // enforcing the last policy until a successor adopts them (pinned maps, BPF_TC_F_REPLACE per
  // tap, no gap) with guests, counters and quota windows as they were.
  std::filesystem::create_directories(config_.bpf_pin_dir);
  net_ = std::make_unique<net::NetDatapath>(net::NetDatapathOptions{
      .pin_dir = config_.bpf_pin_dir.string(), .detach_on_destroy = false});
  {
    const auto t0 = std::chrono::steady_clock::now();
    const auto adopted = net_->Adopt();
    for (const auto& a : adopted) {
      if (a.attached) {
        adopted_[a.config.ifindex] = a.config.name;
      } else if (!a.error.empty()) {
        log::Error("adopting guest {} on ifindex {}: {}", a.config.name, a.config.ifindex, a.error);
      }
    }
    if (!adopted.empty()) {
      log::Info(
          "adopted {} taps of {} guests from {} in {:.1f} ms (counters and quotas kept)",
          adopted_.size(), adopted.size(), config_.bpf_pin_dir.string(),
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  const auto program = net_->program();
  program_tag_ = program.tag;
  program_id_ = program.id;
  StartStorage();
  MeasureDowngrades();
  {
    auto loaded = LoadPolicy();
    if (!loaded.rejected.empty()) last_reload_ = {.result = "rejected", .error = loaded.rejected};
    ApplyPolicy(std::move(loaded));
  }
  ReleaseTables();
  if (storage_)
    ProtectAgain(*storage_, storage_->ReleasedStaleVolumes());  // of a released stale state
  if (config_.default_deny_new_taps) {
    // Subscribed before the hook server and the watcher start: no tap created from now on is
    // missed.
    tap_watcher_ =
        std::make_unique<libvirt::TapWatcher>([this](const libvirt::TapEvent& e) { OnTap(e); });
  }
  StartApi();
  StartMetrics();
  hook_server_ = std::make_unique<libvirt::HookServer>(
      (config_.runtime_dir / "libvirt-hook.sock").string(),
      [this](const libvirt::HookEvent& e) { return OnHook(e); });
  log::Info("libvirt hook socket {}", hook_server_->Path());

  libvirt::WatcherOptions options;
  options.connection.uri = config_.libvirt_uri;
  options.qemu_run_dir = config_.libvirt_qemu_run_dir.string();
  watcher_ = std::make_unique<libvirt::Watcher>(
      options,
      libvirt::WatcherCallbacks{
          .on_up = [this](const libvirt::GuestInfo& g) { OnGuestUp(g); },
          .on_changed = [this](const libvirt::GuestInfo& g,
                               libvirt::ChangeReason) { OnGuestUp(g); },
          .on_down = [this](const libvirt::GuestInfo& g) { OnGuestDown(g); },
          .on_connection =
              [](bool connected) {
                log::Info("libvirt {}", connected ? "connected: reconciling" : "connection lost");
              },
          .on_error = [](const std::string& e) { log::Warning("libvirt: {}", e); },
          // Labelled disks of every defined domain, running or not, from the first
          // reconcile on: a guest without the dataset cannot open a stopped guest's
          // volume before that guest first runs.
          .on_defined = [this](const libvirt::DomainDescription& d) { ProtectDefinedVolumes(d); },
      });
  mu_.unlock();  // the watcher's first reconcile calls back into OnGuestUp
  watcher_->Start();
  const bool connected = watcher_->WaitConnected(std::chrono::seconds(30));
  mu_.lock();
  if (!connected) log::Warning("libvirt not reachable yet at {}: retrying", config_.libvirt_uri);
  // Adopted taps no running guest claimed in the first reconcile belong to guests that went away
  // while no daemon ran. Without a reconcile nothing is known: keep enforcing them.
  if (connected) {
    for (const auto& [ifindex, name] : adopted_) {
      try {
        net_->RemoveGuest(ifindex);
        log::Info("adopted tap ifindex {} of guest {} is no longer in use: removed", ifindex, name);
      } catch (const std::exception& e) {
        log::Warning("removing adopted ifindex {}: {}", ifindex, e.what());
      }
    }
    adopted_.clear();
    // Storage registrations adopted from a predecessor whose guest no longer runs.
    if (storage_) {
      std::set<std::string> running;
      for (const auto& [uuid, g] : guests_) running.insert(g.name);
      for (const auto& name : storage_->GuestNames()) {
        if (running.count(name) != 0) continue;
        try {
          storage_->RemoveGuest(name);
          log::Info("adopted storage registration of guest {} is no longer in use: removed", name);
        } catch (const std::exception& e) {
          log::Warning("removing adopted storage guest {}: {}", name, e.what());
        }
      }
    }
    // Guests measured as running that no longer run went away while no daemon ran.
    for (auto it = measured_guests_.begin(); it != measured_guests_.end();) {
      if (guests_.count(*it) != 0) {
        ++it;
        continue;
      }
      attestation::measure::MeasureGuest(*measurements_, *it, false);
      log::Info("guest {} went away while no daemon ran: released in the measurement log", *it);
      it = measured_guests_.erase(it);
    }
  }
  // The first tamper round, whole tables included (what a predecessor left, what was just
  // written), before the daemon says it is ready: a guest starting right after that does not wait
  // behind it for the node's lock (seconds with a world-sized table on a loaded host, longer than
  // the hook's bound under emulation). The main loop's rounds follow.
  CheckTamperLocked();
}

void Node::Reload() {
  std::lock_guard lock(mu_);
  try {
    auto loaded = LoadPolicy();
    // A rejected bundle: the last good one LoadPolicy fell back to is the one in force.
    if (!loaded.rejected.empty()) throw std::runtime_error(loaded.rejected);
    ApplyPolicy(std::move(loaded));
    metrics_->Inc(metrics::kPolicyReloads, {"ok"});
    last_reload_ = {.result = "ok", .error = {}};
  } catch (const std::exception& e) {
    metrics_->Inc(metrics::kPolicyReloads, {"rejected"});
    metrics_->Inc(metrics::kErrors, {"policy"});
    last_reload_ = {.result = "rejected", .error = e.what()};
    log::Error("reload rejected, last good policy stays enforced: {}", e.what());
  }
  ReleaseTables();
}

}  // namespace sovguard::daemon
