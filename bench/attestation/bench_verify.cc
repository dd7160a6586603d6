// bench_verify: sovguard-verify throughput for evidence with a large CEL (issue 8: goal >= 1,000
// verifications/s/core with a 10,000-entry log).
//
//   bench_verify [--entries 10000] [--seconds 3] [--min-rate R]
//
// Genuine evidence is made once from a private swtpm: the CEL is written with `entries` records
// (realistic names: driver modules, BPF objects, enforcement events), every digest is extended
// into the sovguard PCR, the real UEFI log of shared/data is extended into PCRs 0-9, then one
// quote. Then, on one thread, for `seconds` each:
//   verify      ParseEvidence(binary protobuf) + Verify(): every check, the full verdict
//   baselines   the irreducible parts of that work, measured in the same run:
//     replay    SHA-256 of every record's content + the PCR extend chain (one cached EVP_MD_CTX)
//     sigverify the quote's ECDSA signature alone (EVP_DigestVerify)
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
#include "attestation/verify/uefi_log.h"
#include "attestation/verify/verifier.h"
#include "tests/attestation/swtpm_fixture.h"

namespace sa = sovguard::attestation;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
  int entries = 10000;
  double seconds = 3;
  double min_rate = 0;
};

// Names shaped like what sovguardd measures, so content sizes are realistic (40-90 bytes).
sa::cel::SovguardEvent EventFor(int i) {
  switch (i % 4) {
    case 0:
      return {sa::cel::EventKind::kLibvirtDriver,
              "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_" +
                  std::to_string(i) + ".so",
              sa::Sha256("driver" + std::to_string(i)), ""};
    case 1:
      return {sa::cel::EventKind::kBpfObject, "sg_tc_egress_" + std::to_string(i) + ".bpf.o",
              sa::Sha256("bpf" + std::to_string(i)), ""};
    case 2:
      return {sa::cel::EventKind::kProgramAttached, "sg_egress",
              sa::Sha256("attach" + std::to_string(i)),
              "{\"attach_point\":\"vnet" + std::to_string(i) + "\",\"attach_type\":\"tc/egress\"}"};
    default:
      return {sa::cel::EventKind::kEnforcementState, "guest-" + std::to_string(i),
              sa::Sha256("state" + std::to_string(i)), "covered"};
  }
}

template <typename F>
double Rate(double seconds, F&& fn, size_t& iterations) {
  iterations = 0;
  const auto t0 = Clock::now();
  const auto end = t0 + std::chrono::duration<double>(seconds);
  do {
    fn();
    ++iterations;
  } while (Clock::now() < end && iterations < 10'000'000);
  return static_cast<double>(iterations) / std::chrono::duration<double>(Clock::now() - t0).count();
}

int Main(const Options& o) {
  sa::test_support::Swtpm swtpm;
  sa::test_support::TempDir tmp;
  const uint32_t pcr = sa::measure::kDefaultSovguardPcr;
  sa::tpm::Tpm tpm(swtpm.tcti());
  const auto t_gen = Clock::now();
  {
    std::vector<sa::cel::Record> recs;
    recs.reserve(static_cast<size_t>(o.entries));
    // MeasurementLog appends its daemon_start and the policy event: entries - 2 written here.
    for (int i = 0; i < std::max(0, o.entries - 2); ++i)
      recs.push_back(sa::cel::MakeSovguardRecord(static_cast<uint64_t>(i), pcr, EventFor(i)));
    for (const auto& r : recs) tpm.PcrExtend(pcr, r.digest);
    std::filesystem::create_directories(tmp.path() / "state");
    sa::WriteFileAtomic(tmp.path() / "state/cel.bin", sa::cel::EncodeLog(recs));
  }
  const auto uefi_log = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
                        "eventlogs/keylime/binary_bios_measurements-secureboot";
  for (const auto& e : sa::verify::uefi::Parse(sa::ReadFileBytes(uefi_log)).events)
    if (e.type != sa::verify::uefi::kEvNoAction) tpm.PcrExtend(e.pcr, e.sha256);
  sa::measure::MeasurementLog log(tpm, {tmp.path() / "state", pcr});
  if (log.open_state() != "continued") throw std::runtime_error("log open: " + log.open_state());
  log.Measure(sa::cel::EventKind::kPolicyApplied, "bundle-1", sa::Sha256("bundle"), "enforce");
  sa::evidence::EvidenceConfig cfg;
  cfg.node = "bench-node";
  cfg.uefi_log = uefi_log;
  cfg.ima_log = tmp.path() / "no-ima";
  sa::evidence::EvidenceBuilder builder(tpm, log, cfg);
  sa::v1::EnforcementSnapshot snap;
  snap.set_version(1);
  snap.set_node("bench-node");
  snap.set_policy_bundle_sha256(std::string(32, '\0'));
  {
    auto d = sa::Sha256("bundle");
    snap.set_policy_bundle_sha256(std::string(d.begin(), d.end()));
  }
  const sa::Bytes nonce(16, 0x42);
  const sa::v1::Evidence ev = builder.Build(nonce, snap);
  const std::string wire = ev.SerializeAsString();
  std::printf("evidence: %zu CEL records, %zu bytes (binary protobuf), made in %.1fs\n", log.size(),
              wire.size(), std::chrono::duration<double>(Clock::now() - t_gen).count());

  sa::verify::Options vo;
  vo.nonce = nonce;
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
  std::unique_ptr<EVP_MD, decltype(&EVP_MD_free)> md(EVP_MD_fetch(nullptr, "SHA256", nullptr),
                                                     &EVP_MD_free);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
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
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(ev.ak().public_pem().data(), static_cast<int>(ev.ak().public_pem().size())),
      &BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  TPMT_SIGNATURE sig{};
  size_t off = 0;
  const auto& sb = ev.quote().signature();
  if (!key ||
      Tss2_MU_TPMT_SIGNATURE_Unmarshal(reinterpret_cast<const uint8_t*>(sb.data()), sb.size(), &off,
                                       &sig) != TSS2_RC_SUCCESS ||
      sig.sigAlg != TPM2_ALG_ECDSA)
    throw std::runtime_error("bench expects an ECDSA AK");
  std::unique_ptr<ECDSA_SIG, decltype(&ECDSA_SIG_free)> es(ECDSA_SIG_new(), &ECDSA_SIG_free);
  ECDSA_SIG_set0(es.get(),
                 BN_bin2bn(sig.signature.ecdsa.signatureR.buffer,
                           sig.signature.ecdsa.signatureR.size, nullptr),
                 BN_bin2bn(sig.signature.ecdsa.signatureS.buffer,
                           sig.signature.ecdsa.signatureS.size, nullptr));
  unsigned char* der = nullptr;
  const int der_len = i2d_ECDSA_SIG(es.get(), &der);
  const auto& att = ev.quote().attest();
  auto sigverify = [&] {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> c(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
    EVP_DigestVerifyInit(c.get(), nullptr, EVP_sha256(), nullptr, key.get());
    if (EVP_DigestVerify(c.get(), der, static_cast<size_t>(der_len),
                         reinterpret_cast<const uint8_t*>(att.data()), att.size()) != 1)
      throw std::runtime_error("signature baseline does not verify");
  };
  auto verify = [&] {
    auto rep = sa::verify::Verify(sa::verify::ParseEvidence(wire_bytes), vo);
    if (!rep.passed()) throw std::runtime_error("verdict changed during the run");
  };

  auto parse = [&] {
    if (sa::verify::ParseEvidence(wire_bytes).logs().cel().empty()) throw std::runtime_error("?");
  };
  size_t n_replay = 0, n_sig = 0, n_verify = 0, n_parse = 0;
  const double r_parse = Rate(o.seconds / 2, parse, n_parse);
  std::vector<sa::ChainItem> items;
  for (const auto& r : recs) items.push_back({r.content, r.digest.data()});
  auto chain = [&] { sink[2] ^= sa::ExtendChainCheckingContents(items).pcr[0]; };
  size_t n_chain = 0, n_vonly = 0;
  const sa::v1::Evidence parsed = sa::verify::ParseEvidence(wire_bytes);
  auto vonly = [&] { sink[3] ^= sa::verify::Verify(parsed, vo).passed(); };
  const double r_vonly = Rate(o.seconds / 2, vonly, n_vonly);
  if (std::getenv("BENCH_VERIFY_PROFILE")) Rate(o.seconds * 5, vonly, n_vonly);
  std::printf("Verify() only:      %9.1f /s  (%.3f ms: on parsed evidence)\n", r_vonly,
              1e3 / r_vonly);
  const double r_chain = Rate(o.seconds / 2, chain, n_chain);
  std::printf(
      "interleaved chain:  %9.1f /s  (%.3f ms: the same hashing, common/sha256_chain.h, %s)\n",
      r_chain, 1e3 / r_chain,
      sa::Sha256ChainUsesShaExtensions() ? "SHA extensions" : "OpenSSL path");
  const double r_replay = Rate(o.seconds, replay, n_replay);
  const double r_sig = Rate(o.seconds, sigverify, n_sig);
  const double r_verify = Rate(o.seconds, verify, n_verify);
  OPENSSL_free(der);
  const double floor_ms = 1e3 / r_replay + 1e3 / r_sig;
  std::printf("baseline replay:    %9.1f /s  (%.3f ms: SHA-256 of %zu contents + extend chain)\n",
              r_replay, 1e3 / r_replay, recs.size());
  std::printf("parse only:         %9.1f /s  (%.3f ms: ParseEvidence of the binary protobuf)\n",
              r_parse, 1e3 / r_parse);
  std::printf("baseline sigverify: %9.1f /s  (%.3f ms: ECDSA P-256 verify of the quote)\n", r_sig,
              1e3 / r_sig);
  std::printf(
      "verify:             %9.1f /s  (%.3f ms per verification, %zu runs; floor replay+sig "
      "%.3f ms = %.1f /s; verify/floor time %.2fx)\n",
      r_verify, 1e3 / r_verify, n_verify, floor_ms, 1e3 / floor_ms, (1e3 / r_verify) / floor_ms);
  if (sink[0] == 0xff && sink[1] == 0xff) std::printf(" \n");  // keep the baseline's work alive
  const bool ok = r_verify >= o.min_rate;
  std::printf("result: %s\n", ok ? "ok" : "FAILED (below --min-rate)");
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
        return argv[++i];
      };
      if (a == "--entries")
        o.entries = std::stoi(next());
      else if (a == "--seconds")
        o.seconds = std::stod(next());
      else if (a == "--min-rate")
        o.min_rate = std::stod(next());
      else
        throw std::runtime_error("unknown option " + a);
    }
    if (o.entries < 2 || o.seconds <= 0 || o.seconds > 600)
      throw std::runtime_error("--entries >= 2, 0 < --seconds <= 600");
    return Main(o);
  } catch (const std::exception& e) {
    std::cerr << "bench_verify: " << e.what() << "\n";
    return 2;
  }
}
