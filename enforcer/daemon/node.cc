#include "enforcer/daemon/node.h"

#include <bpf/bpf.h>
#include <grpcpp/grpcpp.h>
#include <malloc.h>
#include <net/if.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>

#include "attestation/common/bytes.h"
#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "attestation/service/attestation_service.h"
#include "attestation/tpm/tpm.h"
#include "base/file.h"
#include "base/hex.h"
#include "bpf/net/sg_net.skel.h"
#include "bpf/storage/storage_guard.skel.h"
#include "enforcer/daemon/log.h"
#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/hook_server.h"
#include "enforcer/libvirt/resolve.h"
#include "enforcer/libvirt/tap_watcher.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/metrics/export.h"
#include "enforcer/metrics/http_server.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/process_metrics.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/block_uevents.h"
#include "enforcer/storage/storage_datapath.h"
#include "enforcer/system/mounts.h"
#include "enforcer/version.h"
#include "policy/bundle/bundle.h"
#include "policy/compile/compile.h"

namespace sovguard::daemon {
namespace {

namespace cel = attestation::cel;
using attestation::Sha256Digest;

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

std::vector<std::string> TrustedKeys(const std::filesystem::path& dir) {
  std::vector<std::string> keys;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && e.path().extension() == ".pem")
      keys.push_back(base::ReadFileText(e.path()));
  }
  return keys;
}

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

// Protects volumes a previous storage datapath held (restart, released stale state) on `sp`.
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

std::string ModeText(policy::Mode m) {
  return m == policy::Mode::kEnforce ? "enforce" : "audit";
}

}  // namespace

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

void Node::CompilePolicy(LoadedPolicy& loaded) {
  if (!table_) {
    // Loaded again for each policy change and released after it (ReleaseTables): the kernel maps
    // hold the tables; keeping a copy would cost the daemon about 20 MiB for nothing.
    std::string error;
    table_ = policy::JurisdictionTable::Load(config_.data_dir / "world.sgjt", &error);
    if (!table_) throw std::runtime_error("jurisdiction table: " + error);
  }
  loaded.compiled = policy::Compile(loaded.validated, *table_);
  try {
    loaded.storage = policy::CompileStorage(loaded.validated, loaded.compiled);
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("storage policy: ") + e.what());
  }
}

Node::LoadedPolicy Node::LoadPolicy() {
  LoadedPolicy loaded;
  if (config_.policy_bundle.empty()) {
    const auto file = config_.data_dir / "default-eu-eea.textproto";
    auto result = policy::LoadPolicyFiles({file});
    if (!result.ok()) {
      std::string why;
      for (const auto& d : result.diagnostics) why += "\n  " + d.ToString();
      throw std::runtime_error("shipped default policy " + file.string() + " is invalid:" + why);
    }
    loaded.validated = std::move(*result.policy);
    loaded.source = file.string();
    const std::string bytes = base::ReadFileText(file);
    loaded.source_bytes.assign(bytes.begin(), bytes.end());
    loaded.source_sha256 = attestation::Sha256(bytes);
    CompilePolicy(loaded);
    return loaded;
  }
  std::string error;
  auto store = policy::BundleStore::Open(config_.state_dir / "policy",
                                         TrustedKeys(config_.trusted_keys_dir), &error);
  if (!store) throw std::runtime_error("policy state: " + error);
  const auto from_bundle = [&](const policy::VerifiedBundle& v, const std::string& bytes) {
    LoadedPolicy l;
    l.validated = v.policy;
    l.source = config_.policy_bundle.string();
    l.source_bytes.assign(bytes.begin(), bytes.end());
    l.source_sha256 = v.sha256;
    l.bundle_version = v.manifest.version;
    return l;
  };
  // The incoming bundle becomes the store's active one (what a restart comes back to, the
  // anti-rollback version) only once every table of it compiled.
  const std::string incoming = base::ReadFileText(config_.policy_bundle);
  policy::BundleStore::ApplyResult check;
  std::string rejected;
  if (const auto verified = store->Check(incoming, &check)) {
    try {
      loaded = from_bundle(*verified, incoming);
      CompilePolicy(loaded);
      if (check.changed) {
        const auto result = store->Apply(incoming);
        if (!result.accepted) throw std::runtime_error(result.error);
      }
      return loaded;
    } catch (const std::exception& e) {
      rejected = e.what();
    }
  } else {
    rejected = check.error;
  }
  if (store->active() == nullptr) {
    throw std::runtime_error("policy bundle " + config_.policy_bundle.string() +
                             " rejected and no last good bundle: " + rejected);
  }
  log::Error("policy bundle {} rejected, keeping version {}: {}", config_.policy_bundle.string(),
             store->active_version(), rejected);
  loaded = from_bundle(*store->active(),
                       base::ReadFileText(config_.state_dir / "policy" / "active.bundle"));
  loaded.rejected = rejected;
  CompilePolicy(loaded);
  return loaded;
}

void Node::ApplyPolicy(LoadedPolicy loaded) {
  // LoadPolicy compiled both paths' tables; from here on only kernel writes. Each path builds its
  // tables aside and switches with one store. Storage goes first (small tables, cheap to put
  // back); when the network switch then fails, the storage path returns to the policy in force.
  // Callers hold mu_, so the hook, status and the snapshot see one policy or the other.
  const auto t0 = std::chrono::steady_clock::now();
  if (storage_) storage_->ApplyPolicy(loaded.storage);
  try {
    net_->ApplyPolicy(loaded.compiled);
  } catch (const std::exception& e) {
    if (storage_ && policy_) {
      try {
        storage_->ApplyPolicy(policy::CompileStorage(policy_->validated,
                                                     policy::Compile(policy_->validated, *table_)));
      } catch (const std::exception& back) {
        storage_error_ = fmt::format(
            "holds policy {} while the network path holds {}: putting it back failed: {}",
            base::ToHex(loaded.compiled.digest), base::ToHex(policy_->compiled.digest),
            back.what());
        log::Error("storage path: {}", storage_error_);
      }
    }
    throw;
  }
  const auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0);
  std::string modes;
  for (const auto& d : loaded.compiled.datasets) {
    modes += fmt::format("{}{}={}", modes.empty() ? "" : ", ", d.id, ModeText(d.mode));
  }
  log::Info(
      "policy {} applied in {:.1f} ms: {} datasets ({}), {} IPv4 + {} IPv6 prefixes, digest {}",
      loaded.source, ms.count(), loaded.compiled.datasets.size(), modes,
      loaded.compiled.ipv4.size(), loaded.compiled.ipv6.size(),
      base::ToHex(loaded.compiled.digest));
  for (const auto& w : policy::PolicyWarnings(loaded.validated))
    log::Warning("policy {}: {}", loaded.source, w);
  attestation::measure::MeasurePolicyApplied(*measurements_, loaded.source, loaded.source_bytes);
  metrics::ExportPolicy(*metrics_, loaded.compiled, loaded.source, loaded.bundle_version);
  loaded.storage = {};  // the kernel maps hold it
  policy_ = std::move(loaded);
  // Guests keep their taps; a dataset's bit is its index in the policy and the selectors may
  // have changed, so every guest's mask is computed again under the new policy.
  for (auto& [uuid, g] : guests_) RemaskGuest(g);
}

void Node::RemaskGuest(CoveredGuest& g) {
  const libvirt::GuestInfo& info = *g.info;
  const std::uint64_t datasets = DatasetsFor(info);
  if (datasets != g.datasets) {
    log::Info("guest {}: datasets mask {:#x} -> {:#x} under the new policy", g.name, g.datasets,
              datasets);
  }
  g.datasets = datasets;
  const std::vector<std::uint16_t> ethertypes = EthertypesFor(datasets);
  for (auto ifindex : g.ifindexes) {
    try {
      net_->SetGuestDatasets(ifindex, datasets, ethertypes);
    } catch (const std::exception& e) {
      g.error = fmt::format("ifindex {}: datasets after reload: {}", ifindex, e.what());
      metrics_->Inc(metrics::kErrors, {"attach"});
      log::Error("guest {}: {}", g.name, g.error);
    }
  }
  if (storage_) {
    const auto put = [&](const storage::GuestStorage& gs) {
      if (info.cgroup) {
        storage_->RegisterGuestCgroup(info.cgroup->scope_id, gs);
      } else {  // announced by the hook, cgroup not reported yet: the announcement is updated
        storage_->ExpectGuest(storage_->GuestCgroupName(info.domain.id, info.domain.name), gs);
      }
    };
    try {
      put(StorageFor(info.domain, datasets));
    } catch (const std::exception& e) {
      // Its old bits now name other datasets: it holds none on storage (fail closed).
      g.error = std::string("storage after reload, holding no dataset: ") + e.what();
      log::Error("guest {}: {}", g.name, g.error);
      try {
        put(storage::GuestStorage{.name = info.domain.name});
      } catch (const std::exception& again) {
        log::Error("guest {}: storage: holding no dataset: {}", g.name, again.what());
      }
    }
  }
  // A running guest now holding a dataset loses its uncovered interfaces, as on a hot-plug.
  if (!info.paused) RemoveUncoveredNics(g);
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

void Node::StartApi() {
  attestation::evidence::EvidenceConfig evidence_config;
  // The kernel's event logs (UEFI, IMA) describe the kernel's own TPM: sent only when that TPM
  // quotes. A swtpm's PCRs never saw them, and every verifier would fail their replay.
  if (!tpm_choice_.tcti.starts_with("device:")) {
    evidence_config.uefi_log.clear();
    evidence_config.ima_log.clear();
    log::Info("quotes carry no UEFI or IMA log: the TPM ({}) is not the kernel's",
              tpm_choice_.tcti);
  }
  evidence_ = std::make_unique<attestation::evidence::EvidenceBuilder>(*tpm_, *measurements_,
                                                                       evidence_config);
  service_ = std::make_unique<attestation::service::AttestationServiceImpl>(
      *evidence_, [this] { return Snapshot(); },
      attestation::service::BatchConfig{
          .window = std::chrono::milliseconds(config_.quote_batch_window_ms)});
  api_socket_ = attestation::service::PrepareUnixSocket(config_.runtime_dir / "api.sock");
  grpc::ServerBuilder builder;
  // The socket lives in the runtime directory (mode 0750; group sovguard under the shipped unit)
  // and is made 0660 once bound: the file system authenticates local callers (root and that
  // group).
  builder.AddListeningPort(api_socket_, grpc::InsecureServerCredentials());
  int tls_port = 0;
  if (!config_.api_listen.empty()) {
    attestation::service::MtlsConfig mtls{.server_cert_pem = base::ReadFileText(config_.api_cert),
                                          .server_key_pem = base::ReadFileText(config_.api_key),
                                          .auditor_ca_pem = base::ReadFileText(config_.auditor_ca)};
    std::istringstream allow(base::ReadFileText(config_.auditor_allowlist));
    std::string line;
    while (std::getline(allow, line)) {
      line = line.substr(0, line.find('#'));
      std::erase_if(line, [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
      if (line.empty()) continue;
      if (line.size() != 64 || line.find_first_not_of("0123456789abcdef") != std::string::npos) {
        throw std::runtime_error(config_.auditor_allowlist.string() +
                                 ": expected lower-case hex SHA-256 fingerprints, got '" + line +
                                 "'");
      }
      mtls.allowed_client_sha256.push_back(line);
    }
    builder.AddListeningPort(config_.api_listen,
                             attestation::service::MakeMtlsServerCredentials(mtls), &tls_port);
    api_auditors_ = mtls.allowed_client_sha256.size();
  }
  builder.RegisterService(service_.get());
  server_ = builder.BuildAndStart();
  if (!server_ || (!config_.api_listen.empty() && tls_port == 0)) {
    throw std::runtime_error("cannot serve the API on " + api_socket_ +
                             (config_.api_listen.empty() ? "" : " and " + config_.api_listen));
  }
  std::filesystem::permissions(config_.runtime_dir / "api.sock", std::filesystem::perms(0660));
  log::Info("attestation API on {}", api_socket_);
  if (tls_port != 0) {
    api_tls_ =
        config_.api_listen.substr(0, config_.api_listen.rfind(':') + 1) + std::to_string(tls_port);
    log::Info("attestation API for auditors on {} (mutual TLS, {} allowed auditor certificates)",
              api_tls_, api_auditors_);
  }
}

bool Node::LabelFailsClosed(const libvirt::DomainDescription& domain) const {
  if (domain.labels.state == libvirt::LabelState::kInvalid) return true;
  for (const auto& id : domain.labels.AllDatasets()) {
    if (std::none_of(policy_->compiled.datasets.begin(), policy_->compiled.datasets.end(),
                     [&](const auto& d) { return d.id == id; })) {
      return true;
    }
  }
  return false;
}

std::uint64_t Node::DatasetsFor(const libvirt::GuestInfo& guest) const {
  const auto& labels = guest.domain.labels;
  const auto& validated = policy_->validated;
  if (LabelFailsClosed(guest.domain)) {
    // Fail closed: the guest holds every dataset, so only destinations every dataset allows are
    // reachable (and StorageFor gives it no protected volume).
    if (labels.state != libvirt::LabelState::kInvalid) {
      log::Warning(
          "guest {} names a dataset the policy does not define: treated as holding "
          "every dataset, opening no protected volume",
          guest.domain.name);
    }
    std::uint64_t all = 0;
    for (const auto& d : policy_->compiled.datasets) all |= 1ULL << d.index;
    return all;
  }
  // The policy's selectors by name, UUID or key=value label, without the unlabelled default.
  const std::vector<std::string> selectors = labels.Selectors();
  std::uint64_t selected = 0;
  for (std::size_t i = 0; i < validated.datasets.size() && i < 64; ++i) {
    const auto& d = validated.datasets[i];
    auto has = [](const std::vector<std::string>& v, const std::string& x) {
      return std::find(v.begin(), v.end(), x) != v.end();
    };
    bool hit = has(d.guest_names, guest.domain.name) || has(d.guest_uuids, guest.domain.uuid);
    for (const auto& s : selectors) hit = hit || has(d.guest_labels, s);
    if (hit) selected |= 1ULL << i;
  }
  std::uint64_t mask = selected;
  for (const auto& id : labels.AllDatasets()) {
    for (const auto& d : policy_->compiled.datasets) {
      if (d.id == id) mask |= 1ULL << d.index;
    }
  }
  return mask != 0 ? mask : validated.DefaultMask();
}

std::vector<std::uint16_t> Node::EthertypesFor(std::uint64_t datasets) const {
  // Only what every held dataset allows; a guest holding nothing sends no non-IP frames.
  std::optional<std::vector<std::uint16_t>> common;
  for (const auto& d : policy_->compiled.datasets) {
    if (!(datasets & (1ULL << d.index))) continue;
    if (!common) {
      common = d.allowed_ethertypes;
      continue;
    }
    std::vector<std::uint16_t> both;
    std::set_intersection(common->begin(), common->end(), d.allowed_ethertypes.begin(),
                          d.allowed_ethertypes.end(), std::back_inserter(both));
    common = std::move(both);
  }
  return common.value_or(std::vector<std::uint16_t>{});
}

namespace {
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
          log::Write(log::Level::kError, "tamper: machine-cgroup-replaced: " + detail,
                     {{"EVENT", "tamper"}, {"KIND", "storage-machine-cgroup-replaced"}});
          CountAndMeasureTamper("storage-machine-cgroup-replaced", detail);
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
  net_ = std::make_unique<datapath::NetDatapath>(datapath::NetDatapathOptions{
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
  bpf_prog_info info{};
  __u32 info_len = sizeof info;
  if (int err = bpf_obj_get_info_by_fd(net_->program_fd(), &info, &info_len); err != 0) {
    throw std::runtime_error("reading the residency program's info: " + std::to_string(err));
  }
  program_tag_ = attestation::ToHex(std::span(info.tag, sizeof info.tag));
  program_id_ = info.id;
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

void Node::RefreshStorageAliases(std::string_view why) {
  std::vector<std::string> found;
  try {
    found = storage_->RefreshAliases();
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

void Node::ReleaseTables() {
  table_.reset();
  if (policy_) {
    // swap, not assignment: the vectors' capacity goes too.
    std::vector<policy::Ipv4Prefix>().swap(policy_->compiled.ipv4);
    std::vector<policy::Ipv6Prefix>().swap(policy_->compiled.ipv6);
  }
  // glibc keeps freed heap pages; hand the table's back to the kernel (RSS after start).
  ::malloc_trim(0);
}

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
      log::Write(log::Level::kNotice, "violation: " + datapath::FormatEvent(ev),
                 {{"EVENT", "violation"},
                  {"PATH", "network"},
                  {"GUEST", guest},
                  {"DATASET", dataset},
                  {"COUNTRY", datapath::CountryText(ev.country)},
                  {"VERDICT", ev.verdict == SG_VERDICT_DROP ? "dropped" : "audited"}});
    });
  }
  if (storage_ && block_uevents_ && block_uevents_->Changed())
    RefreshStorageAliases("block device uevent");
  if (storage_) {
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
  datapath::NetStatus net_status;
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
      {"network", net_ ? datapath::FormatStatus(net_status) : ""}};
}

std::vector<attestation::v1::MechanismState> Node::Mechanisms() const {
  // Network paths from the start-up probe; storage paths from the storage datapath as it runs
  // (or "none" with the reason when it could not start). The snapshot reports this list and
  // MeasureDowngrades measures its downgrades: the verifier compares the two.
  std::vector<attestation::v1::MechanismState> out;
  for (const auto& p : probe_.paths) {
    if (p.path.starts_with("storage-")) continue;
    auto& m = out.emplace_back();
    m.set_path(p.path);
    m.set_active(p.mechanism);
    m.set_strongest(p.attempts.empty() ? p.mechanism : p.attempts.front().mechanism);
    m.set_downgraded(p.attempts.size() > 1 || p.guarantee == enforcer::Guarantee::kNone);
    m.set_not_enforced(p.guarantee == enforcer::Guarantee::kNone);
    if (m.downgraded() && !p.attempts.empty()) m.set_reason(p.attempts.front().error);
    if (m.not_enforced() && m.reason().empty()) m.set_reason("no mechanism on this kernel");
  }
  if (storage_) {
    for (const auto& p : storage_->Status().paths) {
      auto& m = out.emplace_back();
      m.set_path(p.path);
      m.set_active(p.mechanism);
      m.set_strongest(p.unavailable.empty()
                          ? p.mechanism
                          : p.unavailable.front().substr(0, p.unavailable.front().find(": ")));
      m.set_downgraded(!p.unavailable.empty() || p.guarantee == storage::Guarantee::kNone);
      m.set_not_enforced(p.guarantee == storage::Guarantee::kNone);
      if (!p.unavailable.empty()) m.set_reason(p.unavailable.front());
      if (m.not_enforced() && m.reason().empty()) m.set_reason("no mechanism");
    }
  } else {
    for (const char* path : {"storage-open", "storage-io-quota", "storage-io-accounting",
                             "storage-block-devices", "storage-network"}) {
      auto& m = out.emplace_back();
      m.set_path(path);
      m.set_active("none");
      m.set_downgraded(true);
      m.set_not_enforced(true);
      m.set_reason("storage path not running: " + storage_error_);
    }
  }
  return out;
}

std::string Node::NotEnforced() const {
  // Paths with the same reason (e.g. the storage path not running) are named together.
  std::vector<std::pair<std::string, std::string>> by_reason;  // reason, paths
  for (const auto& m : Mechanisms()) {
    if (!m.not_enforced()) continue;
    auto it = std::find_if(by_reason.begin(), by_reason.end(),
                           [&](const auto& r) { return r.first == m.reason(); });
    if (it == by_reason.end()) it = by_reason.insert(by_reason.end(), {m.reason(), ""});
    it->second += (it->second.empty() ? "" : ", ") + m.path();
  }
  std::string out;
  for (const auto& [reason, paths] : by_reason)
    out += fmt::format("{}{} ({})", out.empty() ? "" : "; ", paths, reason);
  return out;
}

void Node::MeasureDowngrades() {
  for (const auto& m : Mechanisms()) {
    if (m.downgraded())
      attestation::measure::MeasureMechanismDowngraded(*measurements_, m.path(), m.strongest(),
                                                       m.active(), m.reason());
  }
}

attestation::v1::EnforcementSnapshot Node::Snapshot() const {
  std::lock_guard lock(mu_);
  attestation::v1::EnforcementSnapshot s;
  s.set_version(1);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  s.set_node(host);
  s.set_taken_unix_ns(
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count()));
  if (policy_) {
    s.set_policy_bundle_sha256(policy_->source_sha256.data(), policy_->source_sha256.size());
    s.set_policy_bundle_id(policy_->source);
  }
  std::set<std::uint32_t> broken;
  if (net_) {
    try {
      for (const auto& f : net_->VerifyAttachments({.hash_tables = false}))
        broken.insert(f.ifindex);
    } catch (const std::exception& e) {
      log::Error("snapshot: checking attachments: {}", e.what());
      for (const auto& [uuid, g] : guests_) broken.insert(g.ifindexes.begin(), g.ifindexes.end());
    }
  }
  for (const auto& [uuid, g] : guests_) {
    auto* guest = s.add_guests();
    guest->set_name(g.name);
    guest->set_uuid(g.uuid);
    guest->set_cgroup(g.cgroup);
    for (const auto& tap : g.taps) guest->add_taps(tap);
    if (policy_) {
      for (const auto& d : policy_->compiled.datasets) {
        if (!(g.datasets & (1ULL << d.index))) continue;
        auto* gd = guest->add_datasets();
        gd->set_dataset(d.id);
        gd->set_bit(d.index);
        gd->set_mode(ModeText(d.mode));
      }
    }
    for (const auto& n : g.nics) {
      auto* nic = guest->add_interfaces();
      nic->set_type(n.type);
      nic->set_device(n.device);
      nic->set_mac(n.mac);
      const unsigned ifindex = n.covered ? ::if_nametoindex(n.device.c_str()) : 0;
      const bool covered = ifindex != 0 && broken.count(ifindex) == 0;
      nic->set_mechanism(covered ? "tc/ingress" : "");
      nic->set_covered(covered);
    }
    // Only what the kernel shows right now: a tap whose filter is missing or not ours is left
    // out (the verifier then reports the guest as not covered).
    for (const auto ifindex : g.ifindexes) {
      if (broken.count(ifindex) != 0) continue;
      char name[IF_NAMESIZE] = {};
      if (!::if_indextoname(ifindex, name)) continue;
      auto* p = s.add_programs();
      p->set_name("sg_net");
      p->set_tag(program_tag_);
      p->set_prog_id(program_id_);
      p->set_attach_type("tc/ingress");
      p->set_attach_point(name);
    }
  }
  for (auto& m : Mechanisms()) *s.add_mechanisms() = std::move(m);
  s.set_software_tpm(tpm_choice_.software);  // the node's own statement; swtpm proves no hardware
  if (storage_) {
    // The storage programs as the kernel has them: "cgroup/connect4 <machine cgroup>" hooks
    // become attach type + point; tracepoints and LSM hooks name themselves.
    for (const auto& p : storage_->Programs()) {
      auto* a = s.add_programs();
      a->set_name(p.name);
      a->set_tag(p.tag);
      a->set_prog_id(p.prog_id);
      const auto space = p.hook.find(' ');
      a->set_attach_type(p.hook.substr(0, space));
      a->set_attach_point(space == std::string::npos ? p.hook : p.hook.substr(space + 1));
    }
  }
  return s;
}

}  // namespace sovguard::daemon
