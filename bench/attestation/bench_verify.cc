// bench_verify: sovguard-verify throughput for evidence with a large CEL (goal >= 1,000
// verifications/s/core with a 10,000-entry log).
//
//   bench_verify [--entries 10000] [--seconds 3] [--min-rate R]
//
// Genuine evidence is made once from a private swtpm: the CEL is written with `entries` records
// (realistic names: driver modules, BPF objects, enforcement events), every digest is extended
// into the sovguard PCR, the real UEFI log of shared/data is extended into PCRs 0-9, then one
// quote. Then, on one thread, for `seconds` each:
//   verify      ParseEvidenceView(binary protobuf, as sovguard-verify reads a file: the CEL
//               stays in the buffer) + Verify(): every check, the full verdict
//   + manifest  the same with a signed reference manifest approving every component the log
//               measured (half the records: 4,998 components, one file each)
//   baselines   the irreducible parts of that work, measured in the same run:
//     replay    SHA-256 of every record's content + the PCR extend chain (one cached EVP_MD_CTX)
//     sigverify the quote's ECDSA signature alone (EVP_DigestVerify)
//   proof       the inclusion-proof check alone: LeafHash + the longest audit path (10 node
//               hashes, 1,024-leaf tree) and a one-leaf tree, as a share of the cold verify
// and prints rates and the ratio verify / (replay + sigverify). --min-rate makes the run fail
// below a verification rate (for Release builds; Debug/ASan builds are several times slower).
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>

#include "attestation/common/sha256_chain.h"
#include "attestation/evidence/evidence.h"
#include "attestation/manifest/manifest.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"
#include "bench/attestation/bench_args.h"
#include "bench/attestation/bench_evidence.h"
#include "bench/attestation/bench_node.h"

namespace sa = sovguard::attestation;
using Clock = std::chrono::steady_clock;
using sovguard::attestation::bench::AddManifest;

namespace {

struct Options {
  int entries = 10000;
  double seconds = 3;
  double min_rate = 0;
};

// Runs fn for `seconds`. The rate is the mean; best_ms the fastest single run, the figure least
// disturbed by other jobs on a shared machine (the SHA unit is shared with an SMT sibling).
struct Timing {
  double rate = 0, best_ms = 0;
  size_t runs = 0;
  double ms() const { return 1e3 / rate; }
};
template <typename F>
Timing Rate(double seconds, F&& fn) {
  Timing t;
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration<double>(seconds);
  auto best = Clock::duration::max();
  auto last = t0;
  do {
    fn();
    ++t.runs;
    const auto now = Clock::now();
    best = std::min(best, now - last);
    last = now;
  } while (last < end && t.runs < 10'000'000);
  t.rate = static_cast<double>(t.runs) / std::chrono::duration<double>(last - t0).count();
  t.best_ms = std::chrono::duration<double, std::milli>(best).count();
  return t;
}

int Main(const Options& o) {
  const auto t_gen = Clock::now();
  sovguard::attestation::bench::BenchNode node(o.entries);
  auto& log = node.log();
  auto& builder = node.builder();
  const auto& snap = node.snapshot();
  const sa::Bytes nonce(16, 0x42);
  const sa::v1::Evidence ev = builder.Build(nonce, snap);
  const std::string wire = ev.SerializeAsString();
  std::printf("evidence: %zu CEL records, %zu bytes (binary protobuf), made in %.1fs\n", log.size(),
              wire.size(), std::chrono::duration<double>(Clock::now() - t_gen).count());

  // The auditor's anchors: the enrolled AK and the node's policy; swtpm accepted by name;
  // without a manifest (the "verify" figures) that requirement is waived by name too, so the
  // same checks run as before.
  sa::verify::Options vo;
  vo.nonce = nonce;
  vo.ak_pub_pem = ev.ak().public_pem();
  vo.policy_digest = sa::test_support::TestPolicyDigest();
  vo.waivers = {"software-tpm", "manifest"};
  const std::span<const uint8_t> wire_bytes(reinterpret_cast<const uint8_t*>(wire.data()),
                                            wire.size());
  {
    auto rep = sa::verify::Verify(sa::verify::ParseEvidence(wire_bytes), vo);
    if (!rep.passed()) {
      std::cerr << sa::verify::RenderText(rep);
      throw std::runtime_error("genuine evidence does not verify");
    }
  }

  // Baseline 1: the bare replay hashing over pre-decoded records (one context, fetched once).
  const auto recs = sa::cel::DecodeLog(
      std::span(reinterpret_cast<const uint8_t*>(ev.logs().cel().data()), ev.logs().cel().size()));
  sovguard::base::EvpMdPtr md(EVP_MD_fetch(nullptr, "SHA256", nullptr));
  sovguard::base::EvpMdCtxPtr ctx(EVP_MD_CTX_new());
  sa::Sha256Digest sink{};
  auto replay = [&] {
    sa::Sha256Digest pcrv{}, d{};
    for (const auto& r : recs) {
      unsigned n = 0;
      EVP_DigestInit_ex2(ctx.get(), md.get(), nullptr);
      EVP_DigestUpdate(ctx.get(), r.content.data(), r.content.size());
      EVP_DigestFinal_ex(ctx.get(), d.data(), &n);
      sink[0] ^= d[0];
      EVP_DigestInit_ex2(ctx.get(), md.get(), nullptr);
      EVP_DigestUpdate(ctx.get(), pcrv.data(), 32);
      EVP_DigestUpdate(ctx.get(), r.digest.data(), 32);
      EVP_DigestFinal_ex(ctx.get(), pcrv.data(), &n);
    }
    sink[1] ^= pcrv[0];
  };
  // Baseline 2: the quote signature alone.
  sovguard::base::BioPtr bio(
      BIO_new_mem_buf(ev.ak().public_pem().data(), static_cast<int>(ev.ak().public_pem().size())));
  sovguard::base::EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  TPMT_SIGNATURE sig{};
  size_t off = 0;
  const auto& sb = ev.quote().signature();
  if (!key ||
      Tss2_MU_TPMT_SIGNATURE_Unmarshal(reinterpret_cast<const uint8_t*>(sb.data()), sb.size(), &off,
                                       &sig) != TSS2_RC_SUCCESS ||
      sig.sigAlg != TPM2_ALG_ECDSA)
    throw std::runtime_error("bench expects an ECDSA AK");
  sovguard::base::EcdsaSigPtr es(ECDSA_SIG_new());
  ECDSA_SIG_set0(es.get(),
                 BN_bin2bn(sig.signature.ecdsa.signatureR.buffer,
                           sig.signature.ecdsa.signatureR.size, nullptr),
                 BN_bin2bn(sig.signature.ecdsa.signatureS.buffer,
                           sig.signature.ecdsa.signatureS.size, nullptr));
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(es.get(), &der);
  const auto& att = ev.quote().attest();
  auto sigverify = [&] {
    sovguard::base::EvpMdCtxPtr c(EVP_MD_CTX_new());
    EVP_DigestVerifyInit(c.get(), nullptr, EVP_sha256(), nullptr, key.get());
    if (EVP_DigestVerify(c.get(), der, static_cast<size_t>(der_len),
                         reinterpret_cast<const uint8_t*>(att.data()), att.size()) != 1)
      throw std::runtime_error("signature baseline does not verify");
  };
  auto verify = [&] {
    auto rep = sa::verify::Verify(sa::verify::ParseEvidenceView(wire_bytes), vo);
    if (!rep.passed()) throw std::runtime_error("verdict changed during the run");
  };

  auto parse = [&] {
    if (sa::verify::ParseEvidenceView(wire_bytes).Cel().empty()) throw std::runtime_error("?");
  };
  const Timing t_parse = Rate(o.seconds / 2, parse);
  std::vector<sa::ChainItem> items;
  for (const auto& r : recs) items.push_back({r.content, r.digest.data()});
  auto chain = [&] { sink[2] ^= sa::ExtendChainCheckingContents(items).pcr[0]; };
  // The extend chain alone is serial (each PCR value is the next block's input): 2 SHA-256
  // blocks per record at the SHA unit's latency, whatever else runs beside it. Measured with
  // empty contents (1 block each, hashed beside the chain's 2): the physical floor of the replay.
  std::vector<sa::ChainItem> extend_only;
  for (const auto& r : recs) extend_only.push_back({{}, r.digest.data()});
  auto chain_floor = [&] { sink[4] ^= sa::ExtendChainCheckingContents(extend_only).pcr[0]; };
  size_t blocks = 0;
  for (const auto& r : recs) blocks += 2 + (r.content.size() + 9 + 63) / 64;
  const sa::v1::Evidence parsed = sa::verify::ParseEvidence(wire_bytes);
  auto vonly = [&] { sink[3] ^= sa::verify::Verify(parsed, vo).passed(); };
  // Profiling (perf record): only Verify() on parsed evidence, nothing else in the samples.
  if (std::getenv("BENCH_VERIFY_PROFILE")) {
    Rate(o.seconds * 5, vonly);
    return 0;
  }
  const Timing t_vonly = Rate(o.seconds / 2, vonly);
  const auto cel_span = std::span(reinterpret_cast<const uint8_t*>(parsed.logs().cel().data()),
                                  parsed.logs().cel().size());
  auto decode = [&] {
    size_t at = 0, n = 0;
    sa::cel::RecordView r;
    while (at < cel_span.size() && sa::cel::DecodeRecordViewAt(cel_span, at, r)) {
      sa::cel::SovguardEventView v;
      if (sa::cel::DecodeSovguardContentView(r.content, v)) throw std::runtime_error("decode");
      n += v.name.size();
    }
    sink[5] ^= static_cast<uint8_t>(n);
  };
  const Timing t_decode = Rate(o.seconds / 2, decode);
  const Timing t_chain = Rate(o.seconds / 2, chain);
  const Timing t_floor = Rate(o.seconds / 2, chain_floor);
  const Timing t_replay = Rate(o.seconds, replay);
  const Timing t_sig = Rate(o.seconds, sigverify);
  const Timing t_verify = Rate(o.seconds, verify);
  // The inclusion proof at its bound: this evidence's leaf (nonce, snapshot digest, salt) in a
  // tree of kMaxBatchLeaves leaves, at an index whose path has kMaxProofLength hashes. What the
  // verifier adds per verdict to a one-leaf proof is (leaf + path) - (leaf).
  const sa::Sha256Digest snap_digest = sa::Sha256(ev.snapshot_bytes());
  const std::span<const uint8_t> salt(
      reinterpret_cast<const uint8_t*>(ev.inclusion().salt().data()), ev.inclusion().salt().size());
  std::vector<sa::Sha256Digest> leaves(sa::evidence::kMaxBatchLeaves);
  for (size_t i = 0; i < leaves.size(); ++i) leaves[i] = sa::Sha256("leaf " + std::to_string(i));
  leaves[0] = sa::evidence::LeafHash(nonce, snap_digest, salt);
  const sa::evidence::MerkleTree tree(leaves);
  const auto path = tree.Path(0);
  if (path.size() != sa::evidence::kMaxProofLength)
    throw std::runtime_error("the bench's proof is not at the bound");
  auto proof_max = [&] {
    const auto leaf = sa::evidence::LeafHash(nonce, snap_digest, salt);
    const auto root = sa::evidence::RootFromInclusionPath(leaf, 0, leaves.size(), path);
    if (root != tree.Root()) throw std::runtime_error("proof does not reach the root");
    sink[5] ^= root[0];
  };
  auto proof_one = [&] {
    const auto leaf = sa::evidence::LeafHash(nonce, snap_digest, salt);
    const auto root = sa::evidence::RootFromInclusionPath(leaf, 0, 1, {});
    sink[6] ^= root[0];
  };
  const Timing t_proof_max = Rate(o.seconds / 2, proof_max);
  const Timing t_proof_one = Rate(o.seconds / 2, proof_one);
  OPENSSL_free(der);

  // The same with a reference manifest, as an auditor verifies: every component the log
  // measured approved (one file each), from an EU supplier, signed by a certifier (Ed25519).
  sa::verify::Options vm = vo;
  vm.waivers = {"software-tpm"};
  const size_t n_components = AddManifest(recs, vm);
  {
    auto rep = sa::verify::Verify(sa::verify::ParseEvidenceView(wire_bytes), vm);
    if (!rep.passed() || rep.Find("manifest.components")->status != sa::verify::Status::kPass) {
      std::cerr << sa::verify::RenderText(rep);
      throw std::runtime_error("genuine evidence does not verify with its manifest");
    }
  }
  auto verify_manifest = [&] {
    if (!sa::verify::Verify(sa::verify::ParseEvidenceView(wire_bytes), vm).passed())
      throw std::runtime_error("verdict with the manifest changed during the run");
  };
  const Timing t_manifest = Rate(o.seconds, verify_manifest);

  // Continuous attestation (verify::ReplayCache): the same node quoted again and again, its CEL
  // grown by one event each time. The first evidence of each pass replays in full; the others
  // hash only their new record. Timed: ParseEvidenceView + Verify of evidence 1..K-1.
  constexpr int kRounds = 60;
  std::vector<std::string> wires;
  std::vector<sa::Bytes> nonces;
  for (int k = 0; k < kRounds; ++k) {
    log.Measure(sa::cel::EventKind::kEnforcementState, "round-" + std::to_string(k),
                sa::Sha256("round" + std::to_string(k)), "tick");
    nonces.emplace_back(16, static_cast<uint8_t>(k));
    wires.push_back(builder.Build(nonces.back(), snap).SerializeAsString());
  }
  auto wire_span = [&](size_t k) {
    return std::span(reinterpret_cast<const uint8_t*>(wires[k].data()), wires[k].size());
  };
  double warm_s = 0, best_warm = 1e9;
  size_t warm_n = 0;
  const auto warm_end = Clock::now() + std::chrono::duration<double>(o.seconds);
  do {
    sa::verify::ReplayCache cache;
    sa::verify::Options wo = vo;
    wo.replay_cache = &cache;
    wo.nonce = nonces[0];
    if (!sa::verify::Verify(sa::verify::ParseEvidenceView(wire_span(0)), wo).passed())
      throw std::runtime_error("round 0 does not verify");
    for (size_t k = 1; k < wires.size(); ++k) {
      wo.nonce = nonces[k];
      const auto t0 = Clock::now();
      const bool passed =
          sa::verify::Verify(sa::verify::ParseEvidenceView(wire_span(k)), wo).passed();
      const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
      if (!passed) throw std::runtime_error("round " + std::to_string(k) + " does not verify");
      warm_s += dt;
      best_warm = std::min(best_warm, dt);
      ++warm_n;
    }
    if (cache.stats().hits != wires.size() - 1) throw std::runtime_error("replay cache unused");
  } while (Clock::now() < warm_end);
  const Timing t_warm{static_cast<double>(warm_n) / warm_s, best_warm * 1e3, warm_n};
  auto line = [](const char* what, const Timing& t, const std::string& note) {
    std::printf("%-20s %9.1f /s  %7.3f ms (best %.3f ms)  %s\n", what, t.rate, t.ms(), t.best_ms,
                note.c_str());
  };
  line("parse only:", t_parse, "ParseEvidenceView of the binary protobuf");
  line("CEL decode only:", t_decode, "every record and its sovguard event, no hashing");
  line("Verify() only:", t_vonly, "every check, on parsed evidence");
  line("interleaved chain:", t_chain,
       std::string("the replay hashing of Verify (common/sha256_chain.h, ") +
           (sa::Sha256ChainActivePath() == sa::Sha256ChainPath::kShaExtensionsAvx512
                ? "SHA extensions, AVX-512VL registers)"
            : sa::Sha256ChainUsesShaExtensions() ? "SHA extensions)"
                                                 : "OpenSSL path)"));
  line("serial floor:", t_floor,
       std::to_string(2 * recs.size()) +
           " extend blocks, each waiting on the last (empty contents beside them): " +
           std::to_string(t_floor.best_ms * 1e6 / (2.0 * static_cast<double>(recs.size())))
               .substr(0, 5) +
           " ns/block at best");
  line("baseline replay:", t_replay,
       "SHA-256 of " + std::to_string(recs.size()) +
           " contents + extend chain, one cached EVP_MD_CTX (" + std::to_string(blocks) +
           " blocks)");
  line("baseline sigverify:", t_sig, "ECDSA P-256 verify of the quote");
  line("verify:", t_verify, "ParseEvidenceView + Verify: the full verdict");
  line("proof, 1 leaf:", t_proof_one, "LeafHash + an empty path (a lone request)");
  line("proof, 1024 leaves:", t_proof_max,
       "LeafHash + " + std::to_string(sa::evidence::kMaxProofLength) +
           " node hashes (the longest audit path)");
  std::printf(
      "proof cost (same run): %.2f us at the bound = %.3f %% of a cold verify (%.3f ms); "
      "%.2f us more than a one-leaf proof = %.3f %%\n",
      t_proof_max.ms() * 1e3, 100.0 * t_proof_max.ms() / t_verify.ms(), t_verify.ms(),
      (t_proof_max.ms() - t_proof_one.ms()) * 1e3,
      100.0 * (t_proof_max.ms() - t_proof_one.ms()) / t_verify.ms());
  line("verify + manifest:", t_manifest,
       "the same with a signed reference manifest of " + std::to_string(n_components) +
           " components (every one the log measured)");
  const double floor_ms = t_replay.ms() + t_sig.ms();
  // What no verifier of this evidence avoids on this CPU: every SHA-256 block of the replay at
  // the SHA unit's throughput (the interleaved chain) and one ECDSA verification.
  const double hw_floor_best = t_chain.best_ms + t_sig.best_ms;
  std::printf(
      "ratios (same run): verify/(replay+sig) %.2fx, verify/(interleaved chain+sig) %.2fx (best "
      "%.2fx), verify/serial floor %.2fx, chain/replay %.2fx\n",
      t_verify.ms() / floor_ms, t_verify.ms() / (t_chain.ms() + t_sig.ms()),
      t_verify.best_ms / hw_floor_best, t_verify.ms() / t_floor.ms(), t_chain.ms() / t_replay.ms());
  line("verify, continuous:", t_warm,
       "ParseEvidenceView + Verify, same node again, CEL +1 record (verify::ReplayCache)");
  std::printf("continuous/cold: %.2fx\n", t_warm.rate / t_verify.rate);
  std::printf(
      "verifications/s: %.1f (best single run %.1f /s); floor of this CPU (replay hashing at the "
      "SHA unit's throughput + ECDSA) %.1f /s\n",
      t_verify.rate, 1e3 / t_verify.best_ms, 1e3 / hw_floor_best);
  if (sink[0] == 0xff && sink[1] == 0xff) std::printf(" \n");  // keep the baseline's work alive
  const bool ok = t_verify.rate >= o.min_rate;
  std::printf("result: %s\n", ok ? "ok" : "FAILED (below --min-rate)");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  namespace b = sovguard::attestation::bench;
  return b::RunBench("bench_verify", [&] {
    Options o;
    b::ParseFlags(argc, argv,
                  {b::Value("--entries", o.entries), b::Value("--seconds", o.seconds),
                   b::Value("--min-rate", o.min_rate)});
    if (o.entries < 5 || o.seconds <= 0 || o.seconds > 600)
      throw std::runtime_error("--entries >= 5, 0 < --seconds <= 600");
    return Main(o);
  });
}
