// Verify: every check, in order (checks.h lists them, one file per component).
#include "attestation/verify/verifier.h"

#include <openssl/rand.h>

#include <algorithm>
#include <mutex>

#include "attestation/tpm/credential.h"
#include "attestation/verify/checks.h"

namespace sovguard::attestation::verify {
namespace {

using namespace detail;  // NOLINT(google-build-using-namespace): the checks

void CheckOptions(const Options& opts) {
  if (opts.sovguard_pcr < 8 || opts.sovguard_pcr > 15)
    throw InputError("the sovguard PCR must be 8-15 (PCRs 16-23 can be reset by the host), not " +
                     std::to_string(opts.sovguard_pcr));
  for (const auto& w : opts.waivers)
    if (WaivedReasons(w).empty()) throw InputError("unknown waiver \"" + w + "\"");
}

// Verify, with logs.cel given apart from the message (EvidenceView: not copied).
Report VerifyWithCel(const v1::Evidence& ev, std::span<const uint8_t> cel, const Options& opts) {
  // The state file is read, checked and rewritten per verdict: concurrent verifications (fleet
  // mode) must not interleave those steps and lose an update.
  static std::mutex state_mu;
  std::unique_lock<std::mutex> state_lock(state_mu, std::defer_lock);
  if (opts.state_file) state_lock.lock();
  CheckOptions(opts);
  std::optional<nlohmann::json> state;
  if (opts.state_file) state = LoadState(*opts.state_file);
  Report rep;
  rep.node = ev.node();
  for (const auto& w : opts.waivers)
    if (std::find(rep.waivers.begin(), rep.waivers.end(), w) == rep.waivers.end())
      rep.waivers.push_back(w);
  auto& out = rep.checks;

  // The quote and the AK that signed it (with the enrolled key when given).
  TPMS_ATTEST attest_parsed{};
  out.push_back(CheckQuoteStructure(ev.quote().attest(), attest_parsed));
  const TPMS_ATTEST* attest = out.back().status == Status::kPass ? &attest_parsed : nullptr;
  EvpPkeyPtr carried, enrolled;
  out.push_back(CheckAkConsistency(ev.ak(), carried));
  out.push_back(CheckAkEnrolled(carried.get(), opts.ak_pub_pem, enrolled));
  out.push_back(CheckAkEkBinding(ev, opts.ak_ek_binding));
  if (EVP_PKEY* key = enrolled ? enrolled.get() : carried.get())
    out.push_back(CheckSignature(ev.quote().attest(), ev.quote().signature(), key,
                                 enrolled ? "--ak-pub" : "ak.tpm2b_public"));
  else
    out.push_back(Fail("quote.signature", kReasonDependencyFailed, "no usable AK public key"));
  const bool sig_ok = out.back().status == Status::kPass;

  // Freshness and the snapshot, bound into the signed extraData.
  out.push_back(CheckNonce(ev, opts.nonce));
  Sha256Digest snap_digest{};
  out.push_back(CheckSnapshotDigest(ev, snap_digest));
  std::optional<v1::EnforcementSnapshot> snap;
  out.push_back(CheckSnapshotCopy(ev, snap));
  const Bytes nonce = opts.nonce ? *opts.nonce : Bytes(ev.nonce().begin(), ev.nonce().end());
  out.push_back(
      CheckInclusion(ev, nonce, snap_digest, attest ? &attest->extraData : nullptr, sig_ok));
  out.push_back(CheckClock(ev, attest));
  out.push_back(CheckPcrDigest(ev.quote(), attest));
  const bool pcrs_ok = out.back().status == Status::kPass && sig_ok;

  // sovguard's log, and the snapshot's claims against it. The snapshot is bound to the signed
  // quote when its digest is right and the signed extraData binds that digest: only then do its
  // claims count.
  const auto authentic_cel = CheckCel(ev, cel, pcrs_ok, opts.replay_cache,
                                      opts.manifest_envelope != nullptr, opts.sovguard_pcr, out);
  out.push_back(CheckPolicy(snap, authentic_cel, opts.policy_digest));
  const bool snap_bound =
      snap && rep.CheckPassed("snapshot.digest") && rep.CheckPassed("quote.qualifying_data");
  const v1::EnforcementSnapshot* bound_snap = snap_bound ? &*snap : nullptr;
  out.push_back(CheckCoverage(bound_snap, authentic_cel));
  out.push_back(CheckMechanisms(bound_snap, authentic_cel, opts.require_strongest));
  std::string since_text;
  const size_t since = ContinuitySince(state, ev, attest, authentic_cel, since_text);
  out.push_back(CheckContinuity(authentic_cel, since, since_text));

  // What booted and runs, against the reference manifest.
  out.push_back(CheckUefi(ev, pcrs_ok));
  out.push_back(CheckIma(ev, pcrs_ok));
  if (opts.observe) {
    rep.observed.emplace();
    Observe(authentic_cel, bound_snap, *rep.observed);
  }
  CheckManifest(ev, authentic_cel, pcrs_ok, rep.CheckPassed("eventlog.ima"), opts, out,
                rep.observed ? &*rep.observed : nullptr);

  // Replay of old evidence, the EK, and what roots the AK.
  if (!opts.state_file)
    out.push_back(
        NotApplicable("quote.clock_monotonic", kReasonNotRequested,
                      "no state file: replay of old evidence is caught by the nonce only"));
  else if (!attest)
    out.push_back(
        Fail("quote.clock_monotonic", kReasonDependencyFailed, "quote.attest could not be parsed"));
  else
    out.push_back(CheckMonotonic(*state, ToHex(U8(ev.ak().name())), attest->clockInfo));
  out.push_back(CheckEkChain(ev, opts.ek_ca_dir, opts.ek_policies));
  out.push_back(CheckHardware(ev, snap, rep.Find("ek.chain"), rep.Find("ak.ek_binding")));
  out.push_back(CheckRoot(rep));

  ApplyWaivers(rep);
  // Only a passing verdict moves the state forward.
  if (state && rep.passed()) SaveState(*state, *opts.state_file, ev, *attest, authentic_cel);
  return rep;
}

}  // namespace

Report Verify(const v1::Evidence& ev, const Options& opts) {
  return VerifyWithCel(ev, U8(ev.logs().cel()), opts);
}

Report Verify(const EvidenceView& ev, const Options& opts) {
  return VerifyWithCel(ev.message, ev.Cel(), opts);
}

AkChallenge MakeAkChallenge(std::span<const uint8_t> ek_public, std::span<const uint8_t> ak_name) {
  AkChallenge c;
  c.secret.resize(32);
  if (RAND_bytes(c.secret.data(), static_cast<int>(c.secret.size())) != 1)
    throw AttestationError("OpenSSL: RAND_bytes failed");
  auto made = tpm::MakeCredential(ek_public, ak_name, c.secret);
  c.credential_blob = std::move(made.credential_blob);
  c.encrypted_secret = std::move(made.encrypted_secret);
  return c;
}

}  // namespace sovguard::attestation::verify
