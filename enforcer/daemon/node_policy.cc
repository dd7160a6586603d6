// Policy: load (bundle signature, parse, validate, compile both paths before any kernel write),
// apply (storage, then network, put back on failure), and the dataset masks it gives guests.
#include "enforcer/daemon/node.h"

#include <malloc.h>

#include <algorithm>
#include <chrono>

#include "attestation/common/bytes.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "base/file.h"
#include "base/hex.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node_internal.h"
#include "enforcer/libvirt/domain.h"
#include "enforcer/libvirt/watcher.h"
#include "enforcer/metrics/export.h"
#include "enforcer/metrics/names.h"
#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"
#include "policy/bundle/bundle.h"
#include "policy/compile/compile.h"

namespace sovguard::daemon {
namespace {

std::vector<std::string> TrustedKeys(const std::filesystem::path& dir) {
  std::vector<std::string> keys;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (e.is_regular_file() && e.path().extension() == ".pem")
      keys.push_back(base::ReadFileText(e.path()));
  }
  return keys;
}

}  // namespace

std::string ModeText(policy::Mode m) {
  return m == policy::Mode::kEnforce ? "enforce" : "audit";
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

}  // namespace sovguard::daemon
