// Evidence format helpers that need no TPM (shared by the node and the verifier):
// snapshot binding, JSON rendering, export for tpm2_checkquote. Schema: evidence.proto.
//
// Binding of the enforcement snapshot into the quote (format version 2): one TPM2_Quote answers
// every request of a batch (attestation/evidence/batcher.h); its qualifying data is the root of
// a Merkle tree with one leaf per request (RFC 9162 2.1.1 shape, sovguard's own encodings):
//   snapshot_bytes  = deterministic serialization of EnforcementSnapshot
//   snapshot_sha256 = SHA-256(snapshot_bytes)
//   leaf            = SHA-256(0x00 || "sovguard-evidence-v2" || 0x00 || uint32be(len(nonce)) ||
//                             nonce || snapshot_sha256 || salt)      salt: 32 bytes, per request
//   node            = SHA-256(0x01 || left || right)
//   qualifyingData  = MTH(leaves)  (a lone request: its leaf)
// Leaves are ordered by their hash (a function of the batch, not of thread timing). Each request
// gets its salt, leaf index, tree size and audit path (InclusionProof). A verifier recomputes the
// leaf from its own nonce and the snapshot bytes, walks the path and requires the signed
// extraData to be the root it reaches: nonce and snapshot are then as fresh as the quote and
// signed by the AK. docs/threat-model.md gives the security argument.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/evidence/evidence.pb.h"

namespace sovguard::attestation::evidence {

inline constexpr uint32_t kFormatVersion = 2;
inline constexpr size_t kMinNonce = 8, kMaxNonce = 64;
inline constexpr std::string_view kLeafLabel = "sovguard-evidence-v2";
inline constexpr size_t kLeafSaltSize = 32;
// Leaves per quote, and so the longest audit path (ceil(log2(kMaxBatchLeaves))): a verifier
// refuses anything larger before hashing.
inline constexpr size_t kMaxBatchLeaves = 1024;
inline constexpr size_t kMaxProofLength = 10;
inline constexpr uint8_t kLeafPrefix = 0x00, kNodePrefix = 0x01;

// The leaf of one request. Throws AttestationError for a nonce outside kMinNonce..kMaxNonce or a
// salt that is not kLeafSaltSize bytes.
Sha256Digest LeafHash(std::span<const uint8_t> nonce, const Sha256Digest& snapshot_sha256,
                      std::span<const uint8_t> salt);
Sha256Digest NodeHash(const Sha256Digest& left, const Sha256Digest& right);
// The RFC 9162 tree over 1..kMaxBatchLeaves leaves (throws AttestationError otherwise), every
// level kept: Root() is MTH(leaves), Path(i) is PATH(i, leaves), the sibling hashes from the
// leaf level up.
class MerkleTree {
 public:
  explicit MerkleTree(std::span<const Sha256Digest> leaves);
  const Sha256Digest& Root() const { return levels_.back().front(); }
  std::vector<Sha256Digest> Path(size_t index) const;

 private:
  std::vector<std::vector<Sha256Digest>> levels_;  // leaves first
};
// How many hashes the audit path of leaf `index` in a tree of `size` leaves has (index < size).
size_t InclusionPathLength(size_t index, size_t size);
// Walks `path` from `leaf` at `index` in a tree of `size` leaves (RFC 9162 2.1.3.2) and returns
// the root it reaches. The caller checks the shape first: index < size <= kMaxBatchLeaves and
// path.size() == InclusionPathLength(index, size); anything else throws AttestationError.
Sha256Digest RootFromInclusionPath(const Sha256Digest& leaf, size_t index, size_t size,
                                   std::span<const Sha256Digest> path);
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
