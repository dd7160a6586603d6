#include "attestation/evidence/evidence.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>

namespace sovguard::attestation::evidence {
namespace {

std::string AsString(std::span<const uint8_t> b) {
  return std::string(b.begin(), b.end());
}

uint64_t NowNs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

void FillAk(const tpm::AkInfo& ak, v1::AttestationKey* out) {
  out->set_handle(ak.handle);
  out->set_algorithm(tpm::KeyAlgName(ak.alg));
  out->set_tpm2b_public(AsString(ak.public_area));
  out->set_name(AsString(ak.name));
  out->set_public_pem(ak.public_pem);
}

}  // namespace

EvidenceBuilder::EvidenceBuilder(tpm::Tpm& tpm, measure::MeasurementLog& log, EvidenceConfig cfg)
    : tpm_(tpm), log_(log), cfg_(std::move(cfg)) {
  if (cfg_.node.empty()) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) == 0) cfg_.node = host;
  }
  ak_ = tpm_.EnsureAk(cfg_.ak_handle, cfg_.ak_alg);
  pcrs_ = cfg_.boot_pcrs;
  pcrs_.push_back(cfg_.ima_pcr);
  pcrs_.push_back(log_.pcr());
  std::sort(pcrs_.begin(), pcrs_.end());
  pcrs_.erase(std::unique(pcrs_.begin(), pcrs_.end()), pcrs_.end());

  FillAk(ak_, identity_.mutable_ak());
  for (const auto& c : tpm_.ReadEkCertificates()) {
    auto* e = identity_.add_ek_certificates();
    e->set_nv_index(c.nv_index);
    e->set_key_type(c.key_type);
    e->set_der(AsString(c.der));
  }
  identity_.set_ek_public_rsa(AsString(tpm_.EkPublic(tpm::KeyAlg::kRsa2048)));
  identity_.set_sovguard_pcr(log_.pcr());
  identity_.set_node(cfg_.node);
}

Bytes EvidenceBuilder::ActivateCredential(std::span<const uint8_t> blob,
                                          std::span<const uint8_t> secret) {
  return tpm_.ActivateCredential(ak_.handle, blob, secret, tpm::KeyAlg::kRsa2048);
}

v1::Evidence EvidenceBuilder::Build(std::span<const uint8_t> nonce,
                                    const v1::EnforcementSnapshot& snapshot) {
  v1::Evidence ev;
  ev.set_format_version(kFormatVersion);
  ev.set_node(cfg_.node);
  ev.set_nonce(AsString(nonce));
  const std::string snap = SerializeSnapshot(snapshot);
  const auto snap_digest = Sha256(snap);
  ev.set_snapshot_bytes(snap);
  ev.set_snapshot_sha256(AsString(snap_digest));
  *ev.mutable_snapshot() = snapshot;
  const auto qd = QualifyingData(nonce, snap_digest);

  tpm::QuoteResult q;
  // The log is held still across the quote: the CEL handed out replays to the quoted PCR.
  log_.WithLog([&](std::span<const cel::Record>, std::span<const uint8_t> encoded) {
    q = tpm_.Quote(ak_.handle, qd, pcrs_);
    ev.mutable_logs()->set_cel(AsString(encoded));
  });
  ev.mutable_logs()->set_sovguard_pcr(log_.pcr());
  ev.set_log_open_state(log_.open_state());

  auto* quote = ev.mutable_quote();
  quote->set_attest(AsString(q.attest));
  quote->set_signature(AsString(q.signature));
  quote->set_pcr_bank("sha256");
  quote->set_qualifying_data(AsString(qd));
  for (size_t i = 0; i < q.pcrs.size(); ++i) {
    auto* p = quote->add_pcrs();
    p->set_index(q.pcrs[i]);
    p->set_sha256(AsString(q.values[i]));
  }
  auto* clock = ev.mutable_clock();
  clock->set_clock_ms(q.clock);
  clock->set_reset_count(static_cast<uint32_t>(q.reset_count));
  clock->set_restart_count(static_cast<uint32_t>(q.restart_count));
  clock->set_safe(q.safe);
  clock->set_firmware_version(q.firmware_version);

  *ev.mutable_ak() = identity_.ak();
  *ev.mutable_ek_certificates() = identity_.ek_certificates();
  // Read after the quote: IMA only appends, so the log holds at least what PCR 10 reflects and a
  // verifier replays the prefix that matches. The UEFI log is fixed after boot.
  Bytes data;
  if (ReadFileIfExists(cfg_.uefi_log, data)) ev.mutable_logs()->set_uefi_tcg2(AsString(data));
  if (ReadFileIfExists(cfg_.ima_log, data)) ev.mutable_logs()->set_ima_ascii(AsString(data));
  ev.set_generated_unix_ns(NowNs());
  return ev;
}

}  // namespace sovguard::attestation::evidence
