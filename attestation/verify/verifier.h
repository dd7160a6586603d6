// sovguard-verify: the auditor's verifier for sovguard evidence. Needs no TPM and no
// root: it links only sovguard_attestation_core (hashing, CEL, public keys, evidence format).
//
// Every check yields one CheckResult with a stable reason code (kReason* below): scripts and
// certification pipelines match on the code, humans read the detail. A check that cannot run
// because an earlier one failed is reported as failed too (fail closed), never skipped as a pass.
#pragma once

#include <cstddef>
#include <filesystem>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/bytes.h"
#include "attestation/evidence/evidence.pb.h"

namespace sovguard::attestation::verify {

namespace v1 = sovguard::attestation::v1;

// Input could not be read or is not sovguard evidence at all: exit code 2, not a verdict.
class InputError : public AttestationError {
 public:
  using AttestationError::AttestationError;
};

// kWaived: the check failed, and the auditor accepted that failure by name (--waive): it does not
// fail the verdict, is listed with its reason code, and an EAR says "warning", never "affirming".
enum class Status { kPass, kFail, kNotApplicable, kWaived };
std::string_view StatusName(Status s);

// Reason codes. Part of the verifier's output format: never rename, only add.
inline constexpr std::string_view kReasonOk = "OK";
inline constexpr std::string_view kReasonNotRequested = "NOT_REQUESTED";
inline constexpr std::string_view kReasonNotVerified = "NOT_VERIFIED_BY_THIS_VERSION";
inline constexpr std::string_view kReasonQuoteMalformed = "QUOTE_MALFORMED";
inline constexpr std::string_view kReasonAkKeyInvalid = "AK_KEY_INVALID";
inline constexpr std::string_view kReasonAkInconsistent = "AK_INCONSISTENT";
inline constexpr std::string_view kReasonAkNotEnrolled = "AK_NOT_ENROLLED";
inline constexpr std::string_view kReasonSignatureMalformed = "SIGNATURE_MALFORMED";
inline constexpr std::string_view kReasonSignatureUnsupported = "SIGNATURE_ALG_UNSUPPORTED";
inline constexpr std::string_view kReasonSignatureInvalid = "SIGNATURE_INVALID";
inline constexpr std::string_view kReasonNonceMismatch = "NONCE_MISMATCH";
inline constexpr std::string_view kReasonSnapshotDigestMismatch = "SNAPSHOT_DIGEST_MISMATCH";
inline constexpr std::string_view kReasonSnapshotCopyMismatch = "SNAPSHOT_COPY_MISMATCH";
// snapshot.copy: the evidence's node name (which the report and the EAR name the node by, and
// which no signature covers) is not the node name of the signed snapshot.
inline constexpr std::string_view kReasonNodeNameMismatch = "NODE_NAME_MISMATCH";
// snapshot.copy: snapshot_bytes hold a field this verifier does not know (never satisfied).
inline constexpr std::string_view kReasonSnapshotUnknownField = "SNAPSHOT_UNKNOWN_FIELD";
inline constexpr std::string_view kReasonQualifyingDataMismatch = "QUALIFYING_DATA_MISMATCH";
// quote.qualifying_data: extraData is the root of a Merkle tree of requests (format version 2);
// the inclusion proof is missing or malformed, its path is shorter or longer than the leaf's
// position needs, it is for another request's leaf, it places this leaf where another request's
// is, or it reaches another root than the signed one.
inline constexpr std::string_view kReasonMerkleProofMalformed = "MERKLE_PROOF_MALFORMED";
inline constexpr std::string_view kReasonMerklePathTruncated = "MERKLE_PATH_TRUNCATED";
inline constexpr std::string_view kReasonMerklePathExtended = "MERKLE_PATH_EXTENDED";
inline constexpr std::string_view kReasonMerkleLeafMismatch = "MERKLE_LEAF_MISMATCH";
inline constexpr std::string_view kReasonMerkleLeafPosition = "MERKLE_LEAF_POSITION_MISMATCH";
inline constexpr std::string_view kReasonMerkleRootMismatch = "MERKLE_ROOT_MISMATCH";
inline constexpr std::string_view kReasonClockMismatch = "CLOCK_MISMATCH";
inline constexpr std::string_view kReasonPcrValuesMalformed = "PCR_VALUES_MALFORMED";
inline constexpr std::string_view kReasonPcrSelectionMismatch = "PCR_SELECTION_MISMATCH";
inline constexpr std::string_view kReasonPcrDigestMismatch = "PCR_DIGEST_MISMATCH";
inline constexpr std::string_view kReasonCelMalformed = "CEL_MALFORMED";
inline constexpr std::string_view kReasonCelUnknownEvent = "CEL_UNKNOWN_EVENT";
inline constexpr std::string_view kReasonCelWrongPcr = "CEL_WRONG_PCR";
inline constexpr std::string_view kReasonCelSequenceBroken = "CEL_SEQUENCE_BROKEN";
inline constexpr std::string_view kReasonCelEntryTampered = "CEL_ENTRY_TAMPERED";
inline constexpr std::string_view kReasonCelPcrNotQuoted = "CEL_PCR_NOT_QUOTED";
inline constexpr std::string_view kReasonCelReplayMismatch = "CEL_REPLAY_MISMATCH";
inline constexpr std::string_view kReasonDependencyFailed = "DEPENDENCY_FAILED";
inline constexpr std::string_view kReasonEvidenceReplayed = "EVIDENCE_REPLAYED";
inline constexpr std::string_view kReasonCounterRollback = "COUNTER_ROLLBACK";
inline constexpr std::string_view kReasonPolicyDigestMismatch = "POLICY_DIGEST_MISMATCH";
inline constexpr std::string_view kReasonPolicyNotMeasured = "POLICY_NOT_MEASURED";
inline constexpr std::string_view kReasonPolicySnapshotMismatch = "POLICY_SNAPSHOT_MISMATCH";
inline constexpr std::string_view kReasonUefiLogMalformed = "UEFI_LOG_MALFORMED";
inline constexpr std::string_view kReasonUefiReplayMismatch = "UEFI_REPLAY_MISMATCH";
inline constexpr std::string_view kReasonUefiUnknownEvent = "UEFI_UNKNOWN_EVENT";
inline constexpr std::string_view kReasonEkCertMissing = "EK_CERT_MISSING";
inline constexpr std::string_view kReasonEkCertMalformed = "EK_CERT_MALFORMED";
inline constexpr std::string_view kReasonEkChainUntrusted = "EK_CHAIN_UNTRUSTED";
inline constexpr std::string_view kReasonImaLogMalformed = "IMA_LOG_MALFORMED";
inline constexpr std::string_view kReasonImaUnknownTemplate = "IMA_UNKNOWN_TEMPLATE";
inline constexpr std::string_view kReasonImaEntryTampered = "IMA_ENTRY_TAMPERED";
inline constexpr std::string_view kReasonImaReplayMismatch = "IMA_REPLAY_MISMATCH";
// The IMA list extends a PCR (policy rule pcr=N) that is not in quote.pcrs.
inline constexpr std::string_view kReasonImaPcrNotQuoted = "IMA_PCR_NOT_QUOTED";
inline constexpr std::string_view kReasonAkNotBoundToEk = "AK_NOT_BOUND_TO_EK";
inline constexpr std::string_view kReasonManifestMalformed = "MANIFEST_MALFORMED";
inline constexpr std::string_view kReasonManifestSignatureInvalid = "MANIFEST_SIGNATURE_INVALID";
inline constexpr std::string_view kReasonComponentNotInManifest = "COMPONENT_NOT_IN_MANIFEST";
inline constexpr std::string_view kReasonSupplierJurisdiction = "SUPPLIER_JURISDICTION_NOT_ALLOWED";
inline constexpr std::string_view kReasonBootValueNotAccepted = "BOOT_VALUE_NOT_ACCEPTED";
// snapshot.coverage: the enforcement snapshot against the guests the quoted CEL says run.
inline constexpr std::string_view kReasonGuestNotCovered = "GUEST_NOT_COVERED";
inline constexpr std::string_view kReasonProgramTagMismatch = "PROGRAM_TAG_MISMATCH";
inline constexpr std::string_view kReasonGuestMissingFromSnapshot = "GUEST_MISSING_FROM_SNAPSHOT";
inline constexpr std::string_view kReasonGuestNotMeasured = "GUEST_NOT_MEASURED";
inline constexpr std::string_view kReasonGuestEventMalformed = "GUEST_EVENT_MALFORMED";
// snapshot.mechanisms: every enforcement path reported, downgrades named.
inline constexpr std::string_view kReasonMechanismNotReported = "MECHANISM_NOT_REPORTED";
inline constexpr std::string_view kReasonMechanismDowngraded = "MECHANISM_DOWNGRADED";
// The snapshot reports a mechanism other than the one the quoted log measured for a path.
inline constexpr std::string_view kReasonMechanismLogMismatch = "MECHANISM_LOG_MISMATCH";
// The snapshot reports more than one MechanismState for an enforcement path.
inline constexpr std::string_view kReasonMechanismReportedTwice = "MECHANISM_REPORTED_TWICE";

// trust.root: neither an enrolled AK (--ak-pub) nor credential activation with an EK certificate
// chained to --ek-ca roots the AK.
inline constexpr std::string_view kReasonRootOfTrustMissing = "ROOT_OF_TRUST_MISSING";
// ek.chain: the EK certificate is not a TCG EK profile certificate (EK EKU, TPM manufacturer
// attributes in the subject alternative name).
inline constexpr std::string_view kReasonEkProfileInvalid = "EK_PROFILE_INVALID";
// tpm.hardware: a software TPM (the EK certificate or the node's own statement says so), or no EK
// certificate chained to --ek-ca that could say which TPM signed.
inline constexpr std::string_view kReasonSoftwareTpm = "SOFTWARE_TPM";
inline constexpr std::string_view kReasonHardwareTpmUnproven = "HARDWARE_TPM_UNPROVEN";
// tpm.hardware: the EK certificates chain, but no credential activation (ak.ek_binding) proved
// the AK that signed the quote lives in the TPM of one of them.
inline constexpr std::string_view kReasonEkNotBoundToAk = "EK_NOT_BOUND_TO_AK";
// manifest.*: no reference manifest given; a manifest approving nothing; a log measuring nothing.
inline constexpr std::string_view kReasonManifestMissing = "MANIFEST_MISSING";
inline constexpr std::string_view kReasonManifestEmpty = "MANIFEST_EMPTY";
inline constexpr std::string_view kReasonNoComponentMeasured = "NO_COMPONENT_MEASURED";
// manifest.ima: a file IMA measured (quoted PCR 10) whose SHA-256 no manifest file has.
inline constexpr std::string_view kReasonImaUnapprovedFile = "IMA_UNAPPROVED_FILE";
// eventlog.ima: PCR 10 is quoted and not zero, but the evidence carries no IMA list.
inline constexpr std::string_view kReasonImaLogMissing = "IMA_LOG_MISSING";
// eventlog.uefi: no UEFI log, or a boot PCR 0-9 not quoted.
inline constexpr std::string_view kReasonBootLogMissing = "BOOT_LOG_MISSING";
inline constexpr std::string_view kReasonBootPcrNotQuoted = "BOOT_PCR_NOT_QUOTED";
// eventlog.cel.replay: logs.sovguard_pcr is not the PCR the verifier pins (--sovguard-pcr).
inline constexpr std::string_view kReasonCelPcrUnexpected = "CEL_PCR_UNEXPECTED";
// enforcement.continuity: tamper findings, forced releases, downgrades or daemon restarts while
// guests ran, since the last passing verdict (--state) or since boot.
inline constexpr std::string_view kReasonEnforcementInterrupted = "ENFORCEMENT_INTERRUPTED";
// policy.bundle: the auditor named no policy it expects (--policy-digest), so whatever policy the
// node enforces, consistently logged and reported, nobody approved.
inline constexpr std::string_view kReasonExpectedPolicyMissing = "EXPECTED_POLICY_MISSING";
// snapshot.coverage: guests run and nothing guards their storage, or none of their taps.
inline constexpr std::string_view kReasonStorageNotAttached = "STORAGE_NOT_ATTACHED";
inline constexpr std::string_view kReasonNoTapCovered = "NO_TAP_COVERED";
// snapshot.mechanisms: a path the node reports as guarding nothing (MechanismState.not_enforced).
inline constexpr std::string_view kReasonPathNotEnforced = "PATH_NOT_ENFORCED";

// Every reason code a check can carry (the verifier README maps each to the test producing it;
// tests/verify/verify_unit_test.cc fails when one is missing there).
inline constexpr std::string_view kAllReasons[] = {
    kReasonOk,
    kReasonNotRequested,
    kReasonNotVerified,
    kReasonQuoteMalformed,
    kReasonAkKeyInvalid,
    kReasonAkInconsistent,
    kReasonAkNotEnrolled,
    kReasonSignatureMalformed,
    kReasonSignatureUnsupported,
    kReasonSignatureInvalid,
    kReasonNonceMismatch,
    kReasonSnapshotDigestMismatch,
    kReasonSnapshotCopyMismatch,
    kReasonNodeNameMismatch,
    kReasonSnapshotUnknownField,
    kReasonQualifyingDataMismatch,
    kReasonClockMismatch,
    kReasonPcrValuesMalformed,
    kReasonPcrSelectionMismatch,
    kReasonPcrDigestMismatch,
    kReasonCelMalformed,
    kReasonCelUnknownEvent,
    kReasonCelWrongPcr,
    kReasonCelSequenceBroken,
    kReasonCelEntryTampered,
    kReasonCelPcrNotQuoted,
    kReasonCelReplayMismatch,
    kReasonDependencyFailed,
    kReasonEvidenceReplayed,
    kReasonCounterRollback,
    kReasonPolicyDigestMismatch,
    kReasonPolicyNotMeasured,
    kReasonPolicySnapshotMismatch,
    kReasonUefiLogMalformed,
    kReasonUefiReplayMismatch,
    kReasonUefiUnknownEvent,
    kReasonEkCertMissing,
    kReasonEkCertMalformed,
    kReasonEkChainUntrusted,
    kReasonImaLogMalformed,
    kReasonImaUnknownTemplate,
    kReasonImaEntryTampered,
    kReasonImaReplayMismatch,
    kReasonImaPcrNotQuoted,
    kReasonAkNotBoundToEk,
    kReasonManifestMalformed,
    kReasonManifestSignatureInvalid,
    kReasonComponentNotInManifest,
    kReasonSupplierJurisdiction,
    kReasonBootValueNotAccepted,
    kReasonGuestNotCovered,
    kReasonProgramTagMismatch,
    kReasonGuestMissingFromSnapshot,
    kReasonGuestNotMeasured,
    kReasonGuestEventMalformed,
    kReasonMechanismNotReported,
    kReasonMechanismDowngraded,
    kReasonMechanismLogMismatch,
    kReasonMechanismReportedTwice,
    kReasonRootOfTrustMissing,
    kReasonEkProfileInvalid,
    kReasonSoftwareTpm,
    kReasonHardwareTpmUnproven,
    kReasonEkNotBoundToAk,
    kReasonManifestMissing,
    kReasonManifestEmpty,
    kReasonNoComponentMeasured,
    kReasonImaUnapprovedFile,
    kReasonImaLogMissing,
    kReasonBootLogMissing,
    kReasonBootPcrNotQuoted,
    kReasonCelPcrUnexpected,
    kReasonEnforcementInterrupted,
    kReasonStorageNotAttached,
    kReasonNoTapCovered,
    kReasonPathNotEnforced,
    kReasonExpectedPolicyMissing,
    kReasonMerkleProofMalformed,
    kReasonMerklePathTruncated,
    kReasonMerklePathExtended,
    kReasonMerkleLeafMismatch,
    kReasonMerkleLeafPosition,
    kReasonMerkleRootMismatch,
};

// What an auditor may accept by name (--waive): each waives exactly the reason codes listed.
inline constexpr std::string_view kWaiverNames[] = {
    "boot-log", "ima", "manifest", "policy", "root-of-trust", "software-tpm", "interruptions"};
// The reason codes `waiver` (one of kWaiverNames) accepts; empty for an unknown name.
std::span<const std::string_view> WaivedReasons(std::string_view waiver);

// The certification clauses a check supports (SecNumCloud 3.2, BSI C5:2020, Gaia-X Policy
// Rules, EU Cloud Sovereignty Framework): one table in report.cc, also in the README.
std::span<const std::string_view> ClausesFor(std::string_view check);
// Every check name Verify can report (the table's keys).
std::vector<std::string_view> AllCheckNames();

// The sovguard PCR the verifier expects unless told otherwise (sovguardd's default).
inline constexpr uint32_t kDefaultSovguardPcr = 13;

// In a passing snapshot.mechanisms detail: the paths that run below their strongest mechanism
// follow this marker (the EAR maps them to an unsafe configuration).
inline constexpr std::string_view kMechanismsDowngradedMarker = "; downgraded: ";

// The enforcement paths sovguardd reports in every snapshot (enforcer/probe/probe.cc and the
// storage datapath): each must have a MechanismState.
inline constexpr std::string_view kEnforcementPaths[] = {
    "guest-network-egress",  "guest-network-ingress", "storage-open",   "storage-io-quota",
    "storage-io-accounting", "storage-block-devices", "storage-network"};

struct CheckResult {
  std::string name;  // e.g. "quote.signature"
  Status status = Status::kFail;
  std::string reason;  // one of kReason*
  std::string detail;  // what was compared, with a pointer into the evidence (field path, record)
};

// What a verdict saw, for reports people look at (html_report.h), collected only when asked
// (Options::observe). Only what the checks authenticated: the timeline only from a sovguard log
// that replayed to the signed PCR, guests only from the snapshot the quote binds, components
// only against a manifest whose signature verified. Every string is the evidence's (untrusted).
struct Observations {
  bool cel_authentic = false;  // eventlog.cel.replay passed
  size_t cel_records = 0;
  enum class Kind {
    kDaemonStart,    // name: detail of the start ("fresh", "restart", "recovered")
    kPolicyApplied,  // name: the bundle id
    kGuestCovered,   // name: the guest's uuid
    kGuestReleased,  // name: the guest's uuid
    kGuestOther,     // a guest event neither covered nor released
    kDowngrade,      // name: the enforcement path
    kTamper,         // name: the finding's kind (after "tamper:")
    kRelease,        // detail: "released ..." (forced or not)
    kRecovered,      // an extend a crash interrupted, completed
  };
  struct Event {
    size_t record = 0;  // logs.cel record number
    Kind kind = Kind::kDaemonStart;
    std::string name, detail;
  };
  std::vector<Event> timeline;  // in log order
  bool snapshot_bound = false;  // snapshot digest and quote binding passed
  struct Guest {
    std::string uuid, name;
    std::vector<std::string> datasets;
  };
  std::vector<Guest> guests;
  std::string policy_bundle_id;  // from the bound snapshot
  bool manifest_authentic = false;
  std::string manifest_id, manifest_issuer;
  struct Component {
    size_t record = 0;           // logs.cel record measuring it
    std::string kind, measured;  // event kind name, what the log names (path, object)
    bool in_manifest = false;
    std::string name, version, supplier, jurisdiction;  // from the manifest, when in it
    bool allowed = false;                               // supplier jurisdiction in the allowed set
  };
  std::vector<Component> components;  // in log order
};

struct Report {
  std::string node;
  std::vector<CheckResult> checks;
  std::vector<std::string> waivers;      // the waivers the auditor gave (--waive), in order
  std::optional<Observations> observed;  // with Options::observe
  // True when no check failed. not_applicable checks do not fail the verdict; they are listed.
  bool passed() const;
  const CheckResult* Find(std::string_view name) const;
  // The status of check `name`; none when the report has no such check.
  std::optional<Status> StatusOf(std::string_view name) const;
  // Check `name` is in the report and passed (not waived, not not_applicable).
  bool CheckPassed(std::string_view name) const { return StatusOf(name) == Status::kPass; }
};

// Credential activation (TPM 2.0 Part 1, 24): the verifier encrypts a fresh secret to the EK
// public key, bound to the AK's name (TPM2_MakeCredential, done in software); only the TPM holding
// that EK, with that AK loaded, recovers it (TPM2_ActivateCredential on the node). A node that
// answers with the secret proves its AK is resident in the TPM whose EK certificate is checked.
struct AkEkBinding {
  Bytes ek_public;        // marshalled TPM2B_PUBLIC of the EK the challenge was made for
  Bytes ak_name;          // the AK name the challenge was made for
  Bytes expected_secret;  // the secret the verifier encrypted
  Bytes returned_secret;  // what the node's TPM recovered (empty if activation failed)
  std::string error;      // why activation failed on the node, if it did
};
struct AkChallenge {
  Bytes secret;            // keep on the verifier
  Bytes credential_blob;   // send to the node (ActivateCredentialRequest)
  Bytes encrypted_secret;  // send to the node
};
// A fresh 32-byte secret (OpenSSL RAND_bytes) and its TPM2_MakeCredential wrapping (RSA EKs of
// the default template). Throws AttestationError for an unusable EK public area.
AkChallenge MakeAkChallenge(std::span<const uint8_t> ek_public, std::span<const uint8_t> ak_name);

// Continuous attestation re-verifies the same nodes again and again, and their CEL only grows:
// replaying all of it each time costs a serial SHA-256 chain of 2 blocks per record. The cache
// remembers, per AK, the last CEL that replayed
// to its signed PCR value. A later CEL from that AK that begins with exactly those bytes
// (compared byte for byte) starts the replay from the remembered PCR value and hashes only the
// records after them. That is memoisation, not trust: a byte-identical prefix replays to the
// same value and its records' contents hash to the same digests; any other byte, or a log that
// is not an extension (e.g. after a reboot), is replayed in full. Every other check still reads
// every record. Thread-safe; least recently used entries are dropped above `max_bytes`.
class ReplayCache {
 public:
  explicit ReplayCache(size_t max_bytes = size_t{256} << 20) : max_bytes_(max_bytes) {}
  struct Hit {
    size_t bytes = 0;      // length of the remembered log: a prefix of the one looked up
    size_t records = 0;    // records in it
    Sha256Digest pcr{};    // the PCR value they replay to (from zero)
    uint64_t version = 0;  // of the entry found (0: none)
  };
  // The remembered prefix of `cel` for `key`, or records == 0.
  Hit Lookup(const std::string& key, std::span<const uint8_t> cel);
  // `cel` (`records` records) replayed to `pcr`, which the signed quote carries. `from`: the
  // Lookup the replay started from; while its entry is unchanged, the prefix it compared is
  // not compared again (only the new records are appended).
  void Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
             const Sha256Digest& pcr, const Hit& from);
  void Store(const std::string& key, std::span<const uint8_t> cel, size_t records,
             const Sha256Digest& pcr);
  struct Stats {
    size_t hits = 0, misses = 0, entries = 0, bytes = 0;
  };
  Stats stats() const;

 private:
  struct Entry {
    std::string key;
    Bytes cel;
    size_t records = 0;
    Sha256Digest pcr{};
    uint64_t version = 0;  // changes whenever cel does
  };
  mutable std::mutex mu_;
  uint64_t next_version_ = 1;
  std::list<Entry> lru_;  // most recently used first
  size_t max_bytes_, bytes_ = 0, hits_ = 0, misses_ = 0;
};

struct Options {
  // The nonce the verifier sent. Without it, freshness is not established (nonce check fails).
  std::optional<Bytes> nonce;
  // A previously enrolled AK (SubjectPublicKeyInfo PEM): the quote must be signed by this key,
  // not merely by the key the evidence carries.
  std::optional<std::string> ak_pub_pem;
  // Trusted EK CA certificates (PEM or DER files; every certificate found is a trust anchor, so
  // an auditor may pin a vendor intermediate). Every EK certificate in the evidence must chain
  // to one of them. Throws InputError from Verify if the folder holds no certificate.
  std::optional<std::filesystem::path> ek_ca_dir;
  // Verifier state (JSON): the signed TPM clock, reset and restart counters of the last passing
  // verdict per AK (keyed by AK name, which the signature authenticates). The new quote's
  // counters must move forward; the file is updated (atomically) only when the verdict passes,
  // so forged evidence cannot poison it. Created if missing; a corrupt file is an InputError.
  std::optional<std::filesystem::path> state_file;
  // The SHA-256 of the policy bundle the auditor expects to be active (snapshot and CEL).
  // Without it policy.bundle fails (EXPECTED_POLICY_MISSING) unless waived ("policy").
  std::optional<Bytes> policy_digest;
  // Reference manifest: the signed DSSE envelope (attestation/manifest/manifest.h) and the
  // certifier's public key (PEM, Ed25519 or EC P-256). Both or neither; a key that is not one
  // is an InputError. Every measured component must be in the manifest, from a supplier whose
  // jurisdiction is allowed; the manifest's boot values must match. The verifier keeps the last
  // few manifests it verified (parsed, signature checked, indexed) for later verdicts: passing
  // the same envelope object again skips even comparing its bytes (large manifests are MBs).
  std::shared_ptr<const std::string> manifest_envelope;
  std::optional<std::string> manifest_key_pem;
  // Allowed supplier jurisdictions: ISO 3166-1 alpha-2 codes, or the groups "EU" and "EEA".
  // Empty = EEA (the 27 EU member states, Iceland, Liechtenstein, Norway).
  std::vector<std::string> allowed_jurisdictions;
  // The outcome of a credential activation challenge for this node (ak.ek_binding).
  std::optional<AkEkBinding> ak_ek_binding;
  // snapshot.mechanisms: a path running a weaker mechanism than the strongest sovguard supports
  // fails (MECHANISM_DOWNGRADED) instead of passing with the downgrade named.
  bool require_strongest = false;
  // Remembered replays of earlier verdicts (see ReplayCache); none: every CEL replays in full.
  ReplayCache* replay_cache = nullptr;
  // The PCR sovguard's log must extend (8-15: never a resettable PCR 16-23). Evidence naming
  // another fails CEL_PCR_UNEXPECTED. Anything outside 8-15 is an InputError.
  uint32_t sovguard_pcr = kDefaultSovguardPcr;
  // Requirements the auditor accepts as unmet, by name (kWaiverNames); an unknown name is an
  // InputError. "software-tpm" is also what --allow-software-tpm gives.
  std::vector<std::string> waivers;
  // With ek_ca_dir: certificate policy identifiers (dotted OIDs) of which every EK certificate
  // must carry one (the issuer's policy it certified the TPM under). Empty: any policy, or none.
  std::vector<std::string> ek_policies;
  // Fill Report::observed (the timeline decodes every record of an authentic log once more).
  bool observe = false;
};

// Parses evidence as written by `sovguardctl attest quote`: the JSON rendering (first
// non-blank byte '{') or the binary protobuf. Throws InputError naming what is wrong.
v1::Evidence ParseEvidence(std::span<const uint8_t> data);

// Evidence whose CEL stays in the caller's buffer: the binary protobuf is parsed field by field
// and logs.cel is kept as a view of the bytes parsed (a 10,000-entry log is 1.7 MB, which
// ParseEvidence copies). From JSON, the CEL is decoded into `message` and `cel` is unset.
struct EvidenceView {
  v1::Evidence message;                         // logs.cel empty when `cel` is set
  std::optional<std::span<const uint8_t>> cel;  // logs.cel: inside the buffer parsed
  std::span<const uint8_t> Cel() const;
};
// As ParseEvidence (same errors, same messages); `data` must outlive the view.
EvidenceView ParseEvidenceView(std::span<const uint8_t> data);

// Runs every check. Never throws for bad evidence content (that is a failed check); throws
// InputError only for unusable options (e.g. an --ak-pub that is not a public key).
Report Verify(const v1::Evidence& ev, const Options& opts);
Report Verify(const EvidenceView& ev, const Options& opts);

// A quote made by tpm2_quote(1) (tpm2-tools), checked without sovguard evidence: the files of
// `tpm2_quote -m MSG -s SIG -o PCRS -q NONCE` (-o in tpm2-tools' default "serialized" format,
// SHA-256 bank only). Checks: quote.structure, quote.signature (with opts.ak_pub_pem, required),
// nonce (extraData equals opts.nonce, required) and quote.pcr_digest. Throws InputError for
// missing options or a PCR file that is not the serialized format.
struct Tpm2QuoteFiles {
  std::string attest;     // -m: TPMS_ATTEST
  std::string signature;  // -s: TPMT_SIGNATURE
  std::string pcrs;       // -o: serialized PCR values
};
Report VerifyTpm2Quote(const Tpm2QuoteFiles& files, const Options& opts);
// The PCR values of a tpm2-tools serialized PCR file, as evidence PcrValues (SHA-256 only).
v1::TpmQuote ParseTpm2ToolsPcrs(std::span<const uint8_t> data);

std::string RenderText(const Report& r);
std::string RenderJson(const Report& r);

}  // namespace sovguard::attestation::verify
