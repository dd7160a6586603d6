// The quote path on the node: the attestation API (Unix socket; mutual TLS for auditors) and the
// enforcement snapshot every quote binds.
#include "enforcer/daemon/node.h"

#include <grpcpp/grpcpp.h>
#include <net/if.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <sstream>

#include "attestation/evidence/evidence.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/measure/platform.h"
#include "attestation/service/attestation_service.h"
#include "base/file.h"
#include "enforcer/daemon/log.h"
#include "enforcer/daemon/node_internal.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/storage/storage_datapath.h"

namespace sovguard::daemon {

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
  attestation::service::DisableMutexDeadlockGraph();
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
