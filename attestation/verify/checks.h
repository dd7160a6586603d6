// The verifier's checks (internal to sovguard_verify; the public API is verifier.h). One function
// per check or group of checks; verifier.cc runs them in order. Each yields CheckResults with a
// stable reason code; a check whose input an earlier check did not establish fails with
// DEPENDENCY_FAILED, never passes.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509_vfy.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstddef>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "attestation/common/sha256_chain.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"

namespace sovguard::attestation::verify::detail {

using base::EvpPkeyPtr;

inline std::span<const uint8_t> U8(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}
inline std::string Str(std::span<const uint8_t> b) {
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}
inline std::string Hex(const std::string& s) {
  return ToHex(U8(s));
}

// sovguardd's tc program on every guest tap (enforcer/daemon/node_attestation.cc), as measured
// and reported.
inline constexpr std::string_view kNetProgram = "sg_net";
inline constexpr std::string_view kNetAttachType = "tc/ingress";

inline CheckResult Pass(std::string name, std::string detail = {}) {
  return {std::move(name), Status::kPass, std::string(kReasonOk), std::move(detail)};
}
inline CheckResult Fail(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kFail, std::string(reason), std::move(detail)};
}
inline CheckResult NotApplicable(std::string name, std::string_view reason, std::string detail) {
  return {std::move(name), Status::kNotApplicable, std::string(reason), std::move(detail)};
}

// Issues of one kind, listed up to a bound (the count is always exact).
struct Issues {
  size_t n = 0;
  std::string text;
  void Add(const std::string& s) {
    if (n++ < 8) text += (text.empty() ? "" : "; ") + s;
  }
  std::string Render() const { return std::to_string(n) + ": " + text + (n > 8 ? "; ..." : ""); }
};

// What later checks need from an authentic CEL (eventlog.cel.replay passed): its records, and the
// few records the snapshot and manifest checks read (found while decoding, no pass of their own).
struct CelFacts {
  // Record i of an authentic log has recnum i, extends the sovguard PCR and is a sovguard
  // event: only its content (and digest) are kept, 24 bytes a record.
  std::vector<ChainItem> recs;
  std::vector<size_t> guest_events;    // kEnforcementState "guest:<uuid>", in order
  size_t last_net_program = SIZE_MAX;  // last kProgramAttached of sg_net
  std::vector<size_t> downgrades;      // kMechanismDowngraded since the last kDaemonStart
  size_t last_start = SIZE_MAX;        // the last kDaemonStart
  // What enforcement.continuity reads: every kDaemonStart, every kMechanismDowngraded, every
  // tamper:<kind> and "enforcement" (release) kEnforcementState event, in log order.
  std::vector<size_t> starts, all_downgrades, state_events;
  // With a reference manifest only: what it checks, found while decoding (the manifest check
  // then reads 32 bytes per component instead of decoding the log again).
  std::vector<std::pair<size_t, const uint8_t*>> components;  // record, object digest
  std::vector<size_t> cmdlines;                               // kKernelCmdline records
};

// A public key from SubjectPublicKeyInfo PEM, or null.
EvpPkeyPtr LoadPem(const std::string& pem);

// --- The quote (quote_checks.cc) ---
// quote.structure: `attest` is one marshalled TPM-generated TPMS_ATTEST quote (parsed into `out`).
CheckResult CheckQuoteStructure(const std::string& attest, TPMS_ATTEST& out);
// quote.signature: the TPMT_SIGNATURE verifies over the TPMS_ATTEST bytes with `key`.
CheckResult CheckSignature(const std::string& attest, const std::string& sig_bytes, EVP_PKEY* key,
                           const std::string& key_source);
// nonce: the evidence's nonce is the one the auditor sent (none given: freshness unknown, fails).
CheckResult CheckNonce(const v1::Evidence& ev, const std::optional<Bytes>& expected);
// quote.qualifying_data: the signed extraData is the Merkle root this auditor's leaf reaches.
CheckResult CheckInclusion(const v1::Evidence& ev, std::span<const uint8_t> nonce,
                           const Sha256Digest& snap_digest, const TPM2B_DATA* extra, bool sig_ok);
// quote.clock: the clock carried beside the quote is the signed one.
CheckResult CheckClock(const v1::Evidence& ev, const TPMS_ATTEST* attest);
// quote.pcr_digest: quote.pcrs are the values whose digest and selection the quote signed.
CheckResult CheckPcrDigest(const v1::TpmQuote& q, const TPMS_ATTEST* attest);

// --- AK and EK identity (ak_identity.cc) ---
// ak.consistency: the carried AK's public area, name and PEM agree; `key_out` gets its key.
CheckResult CheckAkConsistency(const v1::AttestationKey& ak, EvpPkeyPtr& key_out);
// ak.enrolled: the carried AK is the enrolled one (--ak-pub); `enrolled_out` gets the enrolled
// key. Throws InputError for an --ak-pub that is not a public key.
CheckResult CheckAkEnrolled(EVP_PKEY* carried, const std::optional<std::string>& ak_pub_pem,
                            EvpPkeyPtr& enrolled_out);
// ak.ek_binding: credential activation bound the AK to the EK whose certificate is carried.
CheckResult CheckAkEkBinding(const v1::Evidence& ev, const std::optional<AkEkBinding>& b);
// ek.chain: every carried EK certificate chains to an --ek-ca anchor and has the TCG EK profile.
// Not applicable without --ek-ca; throws InputError for a folder without certificates.
CheckResult CheckEkChain(const v1::Evidence& ev, const std::optional<std::filesystem::path>& ek_ca,
                         const std::vector<std::string>& policies);
// tpm.hardware: the quote comes from a hardware TPM: no software TPM named, an EK certificate
// chained (ek.chain) and the signing AK bound to its EK (ak.ek_binding).
CheckResult CheckHardware(const v1::Evidence& ev,
                          const std::optional<v1::EnforcementSnapshot>& snap,
                          const CheckResult* ek_chain, const CheckResult* ek_binding);
// trust.root: an enrolled AK, or credential activation with a chained EK certificate.
CheckResult CheckRoot(const Report& rep);

// --- sovguard's event log (cel_replay.cc) ---
// eventlog.cel.decode, .events, .replay. The records when the log replayed to the signed PCR.
std::optional<CelFacts> CheckCel(const v1::Evidence& ev, std::span<const uint8_t> cel_bytes,
                                 bool pcrs_ok, ReplayCache* cache, bool for_manifest,
                                 uint32_t pinned_pcr, std::vector<CheckResult>& out);

// --- The enforcement snapshot (snapshot_checks.cc) ---
// snapshot.digest: snapshot_sha256 is the digest of snapshot_bytes (computed into `digest`).
CheckResult CheckSnapshotDigest(const v1::Evidence& ev, Sha256Digest& digest);
// snapshot.copy: the readable snapshot is snapshot_bytes; `parsed` gets snapshot_bytes parsed.
CheckResult CheckSnapshotCopy(const v1::Evidence& ev,
                              std::optional<v1::EnforcementSnapshot>& parsed);
// policy.bundle: the snapshot's active policy is the one the log last applied (and expected).
CheckResult CheckPolicy(const std::optional<v1::EnforcementSnapshot>& bound_snap,
                        const std::optional<CelFacts>& cel, const std::optional<Bytes>& expected);
// snapshot.coverage: every guest the log says runs is in the snapshot and covered.
CheckResult CheckCoverage(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel);
// snapshot.mechanisms: every enforcement path reported; downgrades named (or failed).
CheckResult CheckMechanisms(const v1::EnforcementSnapshot* snap, const std::optional<CelFacts>& cel,
                            bool require_strongest);
// enforcement.continuity: nothing interrupted enforcement since record `since`.
CheckResult CheckContinuity(const std::optional<CelFacts>& cel, size_t since,
                            const std::string& since_text);

// --- Boot and runtime measurement logs (boot_logs.cc) ---
// eventlog.uefi: the UEFI log replays to the quoted boot PCRs 0-9.
CheckResult CheckUefi(const v1::Evidence& ev, bool pcrs_ok);
// eventlog.ima: the IMA list replays to quoted PCR 10, or there is none and PCR 10 is zero.
CheckResult CheckIma(const v1::Evidence& ev, bool pcrs_ok);

// --- The reference manifest (manifest_checks.cc) ---
// manifest.signature, .components, .jurisdiction, .boot, .ima. With `observed`: the manifest's
// identity and every measured component. Throws InputError for unusable manifest options.
void CheckManifest(const v1::Evidence& ev, const std::optional<CelFacts>& cel, bool pcrs_ok,
                   bool ima_ok, const Options& opts, std::vector<CheckResult>& out,
                   Observations* observed = nullptr);

// --- Verifier state (verifier_state.cc) ---
// The state file (Options::state_file), or an empty object when it does not exist.
nlohmann::json LoadState(const std::filesystem::path& path);
// quote.clock_monotonic: the signed counters move forward past the last passing verdict's.
CheckResult CheckMonotonic(const nlohmann::json& state, const std::string& key,
                           const TPMS_CLOCK_INFO& now);
// The first record enforcement.continuity reads, and its wording: after the last passing
// verdict of this AK in this boot, else 0 (the whole log).
size_t ContinuitySince(const std::optional<nlohmann::json>& state, const v1::Evidence& ev,
                       const TPMS_ATTEST* attest, const std::optional<CelFacts>& cel,
                       std::string& since_text);
// Records this passing verdict's counters for the AK (written atomically).
void SaveState(nlohmann::json& state, const std::filesystem::path& path, const v1::Evidence& ev,
               const TPMS_ATTEST& attest, const std::optional<CelFacts>& cel);

// --- Reports (report.cc) ---
// Report::observed from what the checks authenticated.
void Observe(const std::optional<CelFacts>& cel, const v1::EnforcementSnapshot* bound_snap,
             Observations& o);
// Marks failures the auditor waived by name (--waive) as waived.
void ApplyWaivers(Report& rep);

}  // namespace sovguard::attestation::verify::detail
