// The evidence the verifier tests and benches build on a real (swtpm) TPM, shaped like sovguardd's:
// what a test node measures (its components, mechanisms, policy and covered guests), enforcement
// snapshots like Node::Snapshot() in enforcer/daemon/node_attestation.cc (guests with taps covered
// by sg_net, storage programs at the machine cgroup, a MechanismState for every enforcement path),
// and the certifier's reference manifest approving the measured components.
#pragma once

#include <openssl/bio.h>
#include <openssl/pem.h>

#include <algorithm>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.pb.h"
#include "attestation/manifest/manifest.h"
#include "attestation/measure/platform.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"

namespace sovguard::attestation::test_support {

// The sg_net tag the tests measure into the CEL (MeasureProgramAttached) and report.
inline constexpr std::string_view kNetTag = "5a1c0ffee0ddba11";
inline constexpr std::string_view kMachineCgroup = "/sys/fs/cgroup/unified/machine";

inline std::string GuestUuid(const std::string& guest) {
  return "00000000-0000-4000-8000-" + std::string(12 - std::min<size_t>(12, guest.size()), '0') +
         guest.substr(0, 12);
}

// A guest with one tap (sg_net attached, kNetTag) and a cgroup under the machine cgroup.
inline void AddGuest(v1::EnforcementSnapshot& s, const std::string& name, const std::string& tap) {
  auto* g = s.add_guests();
  g->set_name(name);
  g->set_uuid(GuestUuid(name));
  g->add_taps(tap);
  g->set_cgroup(std::string(kMachineCgroup) + "/qemu-1-" + name + ".libvirt-qemu");
  g->add_datasets()->set_dataset("patients-eu");
  auto* p = s.add_programs();
  p->set_name("sg_net");
  p->set_tag(std::string(kNetTag));
  p->set_prog_id(42);
  p->set_attach_type("tc/ingress");
  p->set_attach_point(tap);
}

// Every enforcement path. `strongest` false: storage-open runs on the tracepoint fallback (as on
// a kernel without BPF LSM), reported as downgraded. Storage programs at the machine cgroup.
inline void AddMechanisms(v1::EnforcementSnapshot& s, bool strongest = false) {
  for (const std::string_view path : verify::kEnforcementPaths) {
    auto* m = s.add_mechanisms();
    m->set_path(std::string(path));
    std::string active = path.starts_with("guest-network") ? "tc"
                         : path == "storage-block-devices" ? "cgroup/dev"
                         : path == "storage-network"       ? "cgroup/connect4+connect6"
                         : path == "storage-open"          ? "bpf-lsm:file_open"
                                                           : "tracepoint:sys_enter_pread64";
    m->set_strongest(active);
    if (path == "storage-open" && !strongest) {
      active = "tracepoint:sys_exit_openat+SIGKILL";
      m->set_downgraded(true);
      m->set_reason("bpf-lsm:file_open: BPF_PROG_LOAD: EPERM (no BPF LSM in this kernel)");
    }
    m->set_active(active);
    if (path.starts_with("storage-")) {
      auto* p = s.add_programs();
      p->set_name(std::string(path));
      p->set_attach_type(active);
      p->set_attach_point(std::string(kMachineCgroup));
    }
  }
}

// What sovguardd measures for the mechanisms AddMechanisms reports (strongest false): the
// storage-open downgrade, as Node::MeasureDowngrades writes it.
inline void MeasureMechanisms(measure::MeasurementLog& log) {
  measure::MeasureMechanismDowngraded(
      log, "storage-open", "bpf-lsm:file_open", "tracepoint:sys_exit_openat+SIGKILL",
      "bpf-lsm:file_open: BPF_PROG_LOAD: EPERM (no BPF LSM in this kernel)");
}

// The policy bundle test nodes apply (MeasurePolicyAndGuest, NodeSnapshot) and the committed
// evidence carries: the one their auditor approves (Options::policy_digest, --policy-digest).
inline Bytes TestPolicyDigest() {
  const Sha256Digest d = Sha256("bundle");
  return Bytes(d.begin(), d.end());
}

// A snapshot of `node` with `guest` (none when empty) on tap vnet0, reporting `policy` as the
// active bundle and every mechanism (storage-open downgraded).
inline v1::EnforcementSnapshot NodeSnapshot(const std::string& node, const std::string& guest,
                                            const Sha256Digest& policy = Sha256("bundle"),
                                            uint64_t taken_unix_ns = 1) {
  v1::EnforcementSnapshot s;
  s.set_version(1);
  s.set_node(node);
  s.set_taken_unix_ns(taken_unix_ns);
  s.set_policy_bundle_sha256(std::string(policy.begin(), policy.end()));
  if (!guest.empty()) AddGuest(s, guest, "vnet0");
  AddMechanisms(s);
  return s;
}

// What a test node's sovguardd measures when it starts: its binary and (with `bpf_object`) its
// BPF object, with the digests kSovguardComponents approves, then its mechanisms probed.
inline void MeasureDaemonStart(measure::MeasurementLog& log, bool bpf_object = true) {
  log.Measure(cel::EventKind::kSelfBinary, "/usr/sbin/sovguardd", Sha256("bin"));
  if (bpf_object) log.Measure(cel::EventKind::kBpfObject, "sg_tc_egress.bpf.o", Sha256("bpf"));
  MeasureMechanisms(log);
}

// A policy applied (digest Sha256("bundle"), as NodeSnapshot reports), then `guest` covered as
// sovguardd covers a starting guest: sg_net (kNetTag) attached to its tap vnet0.
inline void MeasurePolicyAndGuest(measure::MeasurementLog& log, const std::string& guest,
                                  const std::string& policy_name = "bundle-1") {
  log.Measure(cel::EventKind::kPolicyApplied, policy_name, Sha256("bundle"), "enforce");
  measure::MeasureProgramAttached(log, "sg_net", std::string(kNetTag), "tc/ingress", "vnet0");
  measure::MeasureGuest(log, GuestUuid(guest), true);
}

// The manifest components approving what MeasureDaemonStart measures.
inline std::vector<manifest::Component> SovguardComponents() {
  return {{"sovguardd",
           "1",
           "Test Supplier SE",
           "DE",
           "Apache-2.0",
           {{"/usr/sbin/sovguardd", Sha256("bin")}}},
          {"sovguard-bpf",
           "1",
           "Test Supplier SE",
           "DE",
           "GPL-2.0-only",
           {{"sg_tc_egress.bpf.o", Sha256("bpf")}}}};
}

// A reference manifest `id` by "Test Certifier" approving SovguardComponents() and `more`.
inline manifest::Manifest TestManifest(const std::string& id,
                                       const std::vector<manifest::Component>& more = {}) {
  manifest::Manifest m;
  m.id = id;
  m.issuer = "Test Certifier";
  m.issued_at = "2026-01-01T00:00:00Z";
  m.components = SovguardComponents();
  m.components.insert(m.components.end(), more.begin(), more.end());
  return m;
}

// Manifest components approving every object of `kinds` among the sovguard records `recs` (one
// file each, by the name and digest the log measured), from "Example Supplier GmbH" (DE).
inline std::vector<manifest::Component> ApproveMeasured(
    const std::vector<cel::Record>& recs, std::initializer_list<cel::EventKind> kinds) {
  std::vector<manifest::Component> out;
  for (const auto& r : recs) {
    const auto e = cel::DecodeSovguardContent(r.content);
    if (std::find(kinds.begin(), kinds.end(), e.kind) == kinds.end()) continue;
    out.push_back({e.name,
                   "1.0",
                   "Example Supplier GmbH",
                   "DE",
                   "GPL-2.0-only",
                   {{e.name, e.object_digest}}});
  }
  return out;
}

// A public key's SubjectPublicKeyInfo PEM (what --ak-pub and --manifest-key read).
inline std::string PublicPem(EVP_PKEY* key) {
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_PUBKEY(bio.get(), key) != 1)
    throw std::runtime_error("PEM_write_bio_PUBKEY failed");
  char* pem = nullptr;
  return std::string(pem, static_cast<size_t>(BIO_get_mem_data(bio.get(), &pem)));
}

// `m` signed with `key` as a certifier does, as Options::manifest_envelope takes it.
inline std::shared_ptr<const std::string> SignManifest(const manifest::Manifest& m, EVP_PKEY* key) {
  return std::make_shared<const std::string>(manifest::Sign(manifest::ToJson(m), key));
}

}  // namespace sovguard::attestation::test_support
