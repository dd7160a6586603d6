// Builds sovguard attestation evidence on the node (TPM quote + logs + snapshot binding).
// Formats, binding and JSON: attestation/evidence/format.h.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/evidence/evidence.pb.h"
#include "attestation/evidence/format.h"
#include "attestation/measure/measurement_log.h"
#include "attestation/tpm/tpm.h"

namespace sovguard::attestation::evidence {

struct EvidenceConfig {
  TPM2_HANDLE ak_handle = tpm::kDefaultAkHandle;
  tpm::KeyAlg ak_alg = tpm::KeyAlg::kEccP256;
  std::vector<uint32_t> boot_pcrs = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  uint32_t ima_pcr = 10;
  std::filesystem::path uefi_log = "/sys/kernel/security/tpm0/binary_bios_measurements";
  std::filesystem::path ima_log = "/sys/kernel/security/ima/ascii_runtime_measurements";
  std::string node;  // empty = gethostname()
};

// One quote's evidence for many requests, built once: `common` is what every request's evidence
// holds (no nonce, no inclusion proof); own[i] holds only request i's nonce and inclusion proof.
// Request i's evidence is the two merged (Answer), and protobuf parses common's serialization
// followed by own[i]'s as that same message (the two set disjoint fields).
struct BatchEvidence {
  v1::Evidence common;
  std::vector<v1::Evidence> own;
  v1::Evidence Answer(size_t i) const;
};

class EvidenceBuilder {
 public:
  // Loads or creates the AK and reads the EK certificates once.
  EvidenceBuilder(tpm::Tpm& tpm, measure::MeasurementLog& log, EvidenceConfig cfg);

  // One request: a one-leaf tree (the same format as a batch).
  v1::Evidence Build(std::span<const uint8_t> nonce, const v1::EnforcementSnapshot& snapshot);
  // One TPM2_Quote for 1..kMaxBatchLeaves requests: its qualifying data is the Merkle root of
  // their leaves (format.h); evidence i answers nonces[i] and carries its inclusion proof.
  // Throws AttestationError for a bad nonce (before the TPM is touched) or a TPM failure.
  std::vector<v1::Evidence> BuildBatch(std::span<const std::span<const uint8_t>> nonces,
                                       const v1::EnforcementSnapshot& snapshot);
  // The same quote and proofs without copying the common part per request.
  BatchEvidence BuildBatchShared(std::span<const std::span<const uint8_t>> nonces,
                                 const v1::EnforcementSnapshot& snapshot);
  v1::Identity Identity() const { return identity_; }
  Bytes ActivateCredential(std::span<const uint8_t> blob, std::span<const uint8_t> secret);
  const tpm::AkInfo& ak() const { return ak_; }
  // Quoted PCRs: boot PCRs, IMA PCR and the sovguard PCR, ascending.
  const std::vector<uint32_t>& quoted_pcrs() const { return pcrs_; }

 private:
  tpm::Tpm& tpm_;
  measure::MeasurementLog& log_;
  EvidenceConfig cfg_;
  tpm::AkInfo ak_;
  std::vector<uint32_t> pcrs_;
  v1::Identity identity_;
};

}  // namespace sovguard::attestation::evidence
