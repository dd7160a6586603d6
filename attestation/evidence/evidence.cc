#include "attestation/evidence/evidence.h"

#include <openssl/rand.h>
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
  const std::vector<std::span<const uint8_t>> one{nonce};
  auto batch = BuildBatchShared(one, snapshot);
  batch.common.MergeFrom(batch.own.front());
  return std::move(batch.common);
}

v1::Evidence BatchEvidence::Answer(size_t i) const {
  v1::Evidence ev = common;
  ev.MergeFrom(own.at(i));
  return ev;
}

std::vector<v1::Evidence> EvidenceBuilder::BuildBatch(
    std::span<const std::span<const uint8_t>> nonces, const v1::EnforcementSnapshot& snapshot) {
  const auto batch = BuildBatchShared(nonces, snapshot);
  std::vector<v1::Evidence> out;
  out.reserve(batch.own.size());
  for (size_t i = 0; i < batch.own.size(); ++i) out.push_back(batch.Answer(i));
  return out;
}

BatchEvidence EvidenceBuilder::BuildBatchShared(std::span<const std::span<const uint8_t>> nonces,
                                                const v1::EnforcementSnapshot& snapshot) {
  if (nonces.empty() || nonces.size() > kMaxBatchLeaves)
    throw AttestationError("a quote answers 1.." + std::to_string(kMaxBatchLeaves) +
                           " requests, not " + std::to_string(nonces.size()));
  const std::string snap = SerializeSnapshot(snapshot);
  const auto snap_digest = Sha256(snap);
  // One salt per request (hides a low-entropy nonce behind the sibling hashes other auditors
  // see), one leaf per request; the tree orders leaves by hash.
  std::vector<Bytes> salts(nonces.size(), Bytes(kLeafSaltSize));
  std::vector<Sha256Digest> leaf_of(nonces.size());
  for (size_t i = 0; i < nonces.size(); ++i) {
    if (RAND_bytes(salts[i].data(), static_cast<int>(kLeafSaltSize)) != 1)
      throw AttestationError("OpenSSL: RAND_bytes failed");
    leaf_of[i] = LeafHash(nonces[i], snap_digest, salts[i]);  // throws for a bad nonce
  }
  std::vector<size_t> order(nonces.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return leaf_of[a] < leaf_of[b] || (leaf_of[a] == leaf_of[b] && a < b);
  });
  std::vector<Sha256Digest> leaves(order.size());
  std::vector<size_t> index_of(order.size());
  for (size_t pos = 0; pos < order.size(); ++pos) {
    leaves[pos] = leaf_of[order[pos]];
    index_of[order[pos]] = pos;
  }
  const MerkleTree tree(leaves);
  const auto& root = tree.Root();

  // Everything but the nonce and the proof is the same for every request of the batch.
  BatchEvidence out;
  v1::Evidence& common = out.common;
  common.set_format_version(kFormatVersion);
  common.set_node(cfg_.node);
  common.set_snapshot_bytes(snap);
  common.set_snapshot_sha256(AsString(snap_digest));
  *common.mutable_snapshot() = snapshot;

  tpm::QuoteResult q;
  // The log is held still across the quote: the CEL handed out replays to the quoted PCR.
  log_.WithLog([&](std::span<const cel::Record>, std::span<const uint8_t> encoded) {
    q = tpm_.Quote(ak_.handle, root, pcrs_);
    common.mutable_logs()->set_cel(AsString(encoded));
  });
  common.mutable_logs()->set_sovguard_pcr(log_.pcr());
  common.set_log_open_state(log_.open_state());

  auto* quote = common.mutable_quote();
  quote->set_attest(AsString(q.attest));
  quote->set_signature(AsString(q.signature));
  quote->set_pcr_bank("sha256");
  quote->set_qualifying_data(AsString(root));
  for (size_t i = 0; i < q.pcrs.size(); ++i) {
    auto* p = quote->add_pcrs();
    p->set_index(q.pcrs[i]);
    p->set_sha256(AsString(q.values[i]));
  }
  auto* clock = common.mutable_clock();
  clock->set_clock_ms(q.clock);
  clock->set_reset_count(static_cast<uint32_t>(q.reset_count));
  clock->set_restart_count(static_cast<uint32_t>(q.restart_count));
  clock->set_safe(q.safe);
  clock->set_firmware_version(q.firmware_version);

  *common.mutable_ak() = identity_.ak();
  *common.mutable_ek_certificates() = identity_.ek_certificates();
  // Read after the quote: IMA only appends, so the log holds at least what PCR 10 reflects and a
  // verifier replays the prefix that matches. The UEFI log is fixed after boot.
  Bytes data;
  if (ReadFileIfExists(cfg_.uefi_log, data)) common.mutable_logs()->set_uefi_tcg2(AsString(data));
  if (ReadFileIfExists(cfg_.ima_log, data)) common.mutable_logs()->set_ima_ascii(AsString(data));
  common.set_generated_unix_ns(NowNs());

  out.own.resize(nonces.size());
  for (size_t i = 0; i < nonces.size(); ++i) {
    auto& ev = out.own[i];
    ev.set_nonce(AsString(nonces[i]));
    auto* proof = ev.mutable_inclusion();
    proof->set_leaf_index(static_cast<uint32_t>(index_of[i]));
    proof->set_tree_size(static_cast<uint32_t>(leaves.size()));
    proof->set_salt(AsString(salts[i]));
    proof->set_leaf(AsString(leaf_of[i]));
    for (const auto& h : tree.Path(index_of[i])) proof->add_path(AsString(h));
  }
  return out;
}

}  // namespace sovguard::attestation::evidence
