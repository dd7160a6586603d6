// What bench_verify and bench_fleet_keeper measure with: CEL records shaped like sovguardd's,
// and a certifier's signed reference manifest approving a log's components.
#pragma once

#include <openssl/evp.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/eventlog/cel.h"
#include "attestation/manifest/manifest.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation::bench {

// Record i: names as sovguardd measures them, so content sizes are realistic (40-90 bytes):
// driver modules, BPF objects, attachments, enforcement events in turn.
inline cel::SovguardEvent EventFor(int i) {
  switch (i % 4) {
    case 0:
      return {cel::EventKind::kLibvirtDriver,
              "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_" +
                  std::to_string(i) + ".so",
              Sha256("driver" + std::to_string(i)), ""};
    case 1:
      return {cel::EventKind::kBpfObject, "sg_tc_egress_" + std::to_string(i) + ".bpf.o",
              Sha256("bpf" + std::to_string(i)), ""};
    case 2:
      return {cel::EventKind::kProgramAttached, "sg_egress", Sha256("attach" + std::to_string(i)),
              "{\"attach_point\":\"vnet" + std::to_string(i) + "\",\"attach_type\":\"tc/egress\"}"};
    default:
      return {cel::EventKind::kEnforcementState, "guest-" + std::to_string(i),
              Sha256("state" + std::to_string(i)), "covered"};
  }
}

// Sets o.manifest_envelope and o.manifest_key_pem: every driver module and BPF object among
// `recs` approved (one file each) from an EU supplier, signed with a fresh Ed25519 key, as a
// certifier does. Returns the number of components.
inline size_t AddManifest(const std::vector<cel::Record>& recs, verify::Options& o) {
  manifest::Manifest mf;
  mf.id = "bench-manifest";
  mf.issuer = "Bench Certifier GmbH";
  mf.issued_at = "2026-11-24T00:00:00Z";
  mf.components = test_support::ApproveMeasured(
      recs, {cel::EventKind::kLibvirtDriver, cel::EventKind::kBpfObject});
  sovguard::base::EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) throw std::runtime_error("manifest key");
  o.manifest_envelope = test_support::SignManifest(mf, key.get());
  o.manifest_key_pem = test_support::PublicPem(key.get());
  return mf.components.size();
}

}  // namespace sovguard::attestation::bench
