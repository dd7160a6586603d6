// Integration tests: evidence built from a real (software) TPM quote. The mandatory interop check:
// tpm2_checkquote (tpm2-tools) verifies the quote, signature, PCR values and qualifying data
// exported from our evidence, given only the AK public key.
#include <gtest/gtest.h>
#include <tss2/tss2_mu.h>

#include <chrono>
#include <fstream>

#include "attestation/evidence/evidence.h"
#include "tests/attestation/swtpm_fixture.h"

namespace sovguard::attestation {
namespace {

Bytes B(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

v1::EnforcementSnapshot Snapshot(const std::string& guest) {
  v1::EnforcementSnapshot s;
  s.set_version(1);
  s.set_node("test-node");
  s.set_policy_bundle_sha256(std::string(32, '\x42'));
  auto* g = s.add_guests();
  g->set_name(guest);
  g->set_cgroup("/machine/qemu-1-" + guest + ".libvirt-qemu");
  g->add_taps("vnet0");
  g->add_datasets()->set_dataset("patients-eu");
  auto* p = s.add_programs();
  p->set_name("sg_tc_egress");
  p->set_tag("a1b2c3d4e5f60718");
  p->set_attach_type("tc/egress");
  p->set_attach_point("vnet0");
  return s;
}

TPMS_ATTEST ParseAttest(const std::string& attest) {
  TPMS_ATTEST a{};
  size_t off = 0;
  EXPECT_EQ(Tss2_MU_TPMS_ATTEST_Unmarshal(reinterpret_cast<const uint8_t*>(attest.data()),
                                          attest.size(), &off, &a),
            TSS2_RC_SUCCESS);
  return a;
}

class QuoteTest : public ::testing::Test {
 protected:
  evidence::EvidenceConfig Cfg() {
    evidence::EvidenceConfig cfg;
    cfg.node = "test-node";
    // Point the platform logs at the real recorded ones: the node side must carry them verbatim.
    cfg.uefi_log = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
                   "eventlogs/keylime/binary_bios_measurements";
    cfg.ima_log = tmp_.path() / "no-ima-here";
    return cfg;
  }
  const Bytes nonce_ = B("verifier-nonce-0123456789");
  test_support::Swtpm swtpm_;
  test_support::TempDir tmp_;
  tpm::Tpm tpm_{swtpm_.tcti()};
  measure::MeasurementLog log_{tpm_, {tmp_.path() / "state", measure::kDefaultSovguardPcr}};
};

void ExpectCheckquote(const v1::Evidence& ev, const std::filesystem::path& dir, bool ok,
                      const std::string& what) {
  auto args = evidence::ExportForCheckquote(ev, dir);
  std::vector<std::string> argv;
  argv.reserve(args.size() + 1);
  argv.push_back("tpm2_checkquote");
  for (const auto& a : args) argv.push_back(a);
  auto r = test_support::Run(argv);
  if (ok)
    EXPECT_EQ(r.exit_code, 0) << what << ": " << r.output;
  else
    EXPECT_NE(r.exit_code, 0) << what << " should not verify: " << r.output;
}

TEST_F(QuoteTest, EvidenceVerifiesWithTpm2Checkquote) {
  log_.Measure(cel::EventKind::kSelfBinary, "/usr/sbin/sovguardd", Sha256("bin"));
  log_.Measure(cel::EventKind::kPolicyApplied, "bundle-1", Sha256("bundle"), "enforce");
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  auto ev = builder.Build(nonce_, Snapshot("vm1"));

  ExpectCheckquote(ev, tmp_.path() / "ok", true, "genuine evidence");

  // The quote covers boot PCRs 0-9, IMA PCR 10 and the sovguard PCR.
  ASSERT_EQ(ev.quote().pcrs_size(), 12);
  EXPECT_EQ(ev.quote().pcrs(0).index(), 0u);
  EXPECT_EQ(ev.quote().pcrs(10).index(), 10u);
  EXPECT_EQ(ev.quote().pcrs(11).index(), measure::kDefaultSovguardPcr);
  // The CEL in the evidence replays exactly to the quoted sovguard PCR.
  auto recs = cel::DecodeLog(B(ev.logs().cel()));
  EXPECT_EQ(recs.size(), 3u);
  auto replayed = cel::Replay(recs).at(measure::kDefaultSovguardPcr);
  EXPECT_EQ(std::string(replayed.begin(), replayed.end()), ev.quote().pcrs(11).sha256());
  // Platform logs travel verbatim when present, and are absent (not empty) when not.
  EXPECT_EQ(B(ev.logs().uefi_tcg2()), ReadFileBytes(Cfg().uefi_log));
  EXPECT_FALSE(ev.logs().has_ima_ascii());
  EXPECT_FALSE(ev.ek_certificates().empty());
  EXPECT_EQ(ev.ak().algorithm(), "ecc-p256");
  auto a = ParseAttest(ev.quote().attest());
  EXPECT_EQ(ev.clock().reset_count(), a.clockInfo.resetCount);
  EXPECT_EQ(ev.clock().clock_ms(), a.clockInfo.clock);

  // Tampering with any part is caught by the independent tool.
  auto bad_pcr = ev;
  bad_pcr.mutable_quote()->mutable_pcrs(11)->mutable_sha256()->at(0) ^= 1;
  ExpectCheckquote(bad_pcr, tmp_.path() / "bad-pcr", false, "altered PCR value");
  auto bad_qd = ev;
  bad_qd.mutable_quote()->mutable_qualifying_data()->at(0) ^= 1;
  ExpectCheckquote(bad_qd, tmp_.path() / "bad-qd", false, "other qualifying data");
  auto bad_msg = ev;
  bad_msg.mutable_quote()->mutable_attest()->back() ^= 1;
  ExpectCheckquote(bad_msg, tmp_.path() / "bad-msg", false, "altered TPMS_ATTEST");

  // The JSON rendering of real evidence round-trips.
  v1::Evidence back;
  evidence::FromJson(evidence::ToJson(ev), back);
  EXPECT_EQ(back.SerializeAsString(), ev.SerializeAsString());
}

TEST_F(QuoteTest, RsaAkQuoteVerifiesWithTpm2Checkquote) {
  auto cfg = Cfg();
  cfg.ak_handle = 0x81018001;
  cfg.ak_alg = tpm::KeyAlg::kRsa2048;
  evidence::EvidenceBuilder builder(tpm_, log_, cfg);
  auto ev = builder.Build(nonce_, Snapshot("vm1"));
  EXPECT_EQ(ev.ak().algorithm(), "rsa2048");
  ExpectCheckquote(ev, tmp_.path() / "rsa", true, "RSA AK evidence");
}

TEST_F(QuoteTest, SnapshotDigestIsBoundIntoTheQuote) {
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  auto ev1 = builder.Build(nonce_, Snapshot("vm1"));
  auto ev2 = builder.Build(nonce_, Snapshot("vm2"));
  auto a1 = ParseAttest(ev1.quote().attest());
  auto a2 = ParseAttest(ev2.quote().attest());
  auto extra = [](const TPMS_ATTEST& a) {
    return Bytes(a.extraData.buffer, a.extraData.buffer + a.extraData.size);
  };
  EXPECT_NE(extra(a1), extra(a2)) << "a different snapshot must change the signed qualifying data";
  // A verifier recomputes the binding from its nonce and the snapshot bytes alone.
  for (const auto* ev : {&ev1, &ev2}) {
    auto snap_digest = Sha256(B(ev->snapshot_bytes()));
    EXPECT_EQ(std::string(snap_digest.begin(), snap_digest.end()), ev->snapshot_sha256());
    auto qd = evidence::QualifyingData(nonce_, snap_digest);
    EXPECT_EQ(extra(ParseAttest(ev->quote().attest())), Bytes(qd.begin(), qd.end()));
    v1::EnforcementSnapshot parsed;
    ASSERT_TRUE(parsed.ParseFromString(ev->snapshot_bytes()));
    EXPECT_EQ(parsed.SerializeAsString(), ev->snapshot().SerializeAsString());
  }
  // Swapping in another snapshot breaks the binding checked by tpm2_checkquote -q.
  auto forged = ev1;
  forged.set_snapshot_bytes(ev2.snapshot_bytes());
  auto d = Sha256(B(forged.snapshot_bytes()));
  auto qd = evidence::QualifyingData(nonce_, d);
  forged.mutable_quote()->set_qualifying_data(std::string(qd.begin(), qd.end()));
  ExpectCheckquote(forged, tmp_.path() / "forged", false, "snapshot swapped after quoting");
}

TEST_F(QuoteTest, ManyQuotesLeaveNoTransientObjectsOrSessions) {
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  constexpr int kQuotes = 2000;
  // A hang guard below ctest's 600 s, not a speed: Debug+ASan swtpm quotes under ctest -j2.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(500);
  auto snap = Snapshot("vm1");
  int done = 0;
  for (; done < kQuotes && std::chrono::steady_clock::now() < deadline; ++done) {
    Bytes nonce = nonce_;
    PutBe(nonce, static_cast<uint64_t>(done), 8);
    auto ev = builder.Build(nonce, snap);
    ASSERT_FALSE(ev.quote().signature().empty());
    if (done % 500 == 0) {
      auto c = tpm_.CountHandles();
      ASSERT_EQ(c.transient, 0u) << "after " << done << " quotes";
      ASSERT_EQ(c.loaded_sessions, 0u) << "after " << done << " quotes";
    }
  }
  EXPECT_EQ(done, kQuotes) << "time bound hit: swtpm slower than expected";
  auto c = tpm_.CountHandles();
  EXPECT_EQ(c.transient, 0u);
  EXPECT_EQ(c.loaded_sessions, 0u);
  EXPECT_EQ(c.saved_sessions, 0u);
}

TEST_F(QuoteTest, BadNonceIsRejectedBeforeTheTpm) {
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  EXPECT_THROW(builder.Build(B("short"), Snapshot("vm1")), AttestationError);
  EXPECT_THROW(builder.Build(Bytes(65, 1), Snapshot("vm1")), AttestationError);
}

}  // namespace
}  // namespace sovguard::attestation
