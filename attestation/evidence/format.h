// Evidence format helpers that need no TPM (shared by the node and the verifier):
// snapshot binding, JSON rendering, export for tpm2_checkquote. Schema: evidence.proto.
//
// Binding of the enforcement snapshot into the quote (format version 1):
//   snapshot_bytes  = deterministic serialization of EnforcementSnapshot
//   snapshot_sha256 = SHA-256(snapshot_bytes)
//   qualifyingData  = SHA-256("sovguard-evidence-v1" || 0x00 || uint32be(len(nonce)) ||
//                             nonce || snapshot_sha256)
// qualifyingData is TPMS_ATTEST.extraData of the quote, so a verifier that recomputes it from
// its own nonce and the snapshot bytes knows both are as fresh as the quote and signed by the AK.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/evidence/evidence.pb.h"

namespace sovguard::attestation::evidence {

inline constexpr uint32_t kFormatVersion = 1;
inline constexpr size_t kMinNonce = 8, kMaxNonce = 64;
inline constexpr std::string_view kQualifyingLabel = "sovguard-evidence-v1";

Sha256Digest QualifyingData(std::span<const uint8_t> nonce, const Sha256Digest& snapshot_sha256);
// Deterministic serialization of the snapshot (what is digested and carried as snapshot_bytes).
std::string SerializeSnapshot(const v1::EnforcementSnapshot& snapshot);

std::string ToJson(const google::protobuf::Message& msg);
// Throws AttestationError with protobuf's parse error (field path) on bad input.
void FromJson(std::string_view json, google::protobuf::Message& msg);

// Files for tpm2_checkquote(1), written to `dir`: ak.pem, quote.msg (TPMS_ATTEST), quote.sig
// (TPMT_SIGNATURE), quote.pcrs (tpm2-tools' serialized PCR format, as tpm2_quote -o writes it)
// and qualifying.hex. Returns the argument list for tpm2_checkquote:
//   {"-u", "DIR/ak.pem", "-m", ..., "-s", ..., "-f", ..., "-g", "sha256", "-q", HEX}
std::vector<std::string> ExportForCheckquote(const v1::Evidence& ev,
                                             const std::filesystem::path& dir);

}  // namespace sovguard::attestation::evidence
