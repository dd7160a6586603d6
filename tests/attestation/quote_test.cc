// Integration tests: evidence built from a real (software) TPM quote. The mandatory interop check:
// tpm2_checkquote (tpm2-tools) verifies the quote, signature, PCR values and qualifying data
// exported from our evidence, given only the AK public key.
#include <gtest/gtest.h>
#include <tss2/tss2_mu.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <set>

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

Bytes extra(const TPMS_ATTEST& a) {
  return Bytes(a.extraData.buffer, a.extraData.buffer + a.extraData.size);
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
  // `n` auditors' nonces for one batch, and the spans BuildBatch takes.
  void MakeNonces(size_t n) {
    nonces_.clear();
    for (size_t i = 0; i < n; ++i)
      nonces_.push_back(B("auditor-" + std::to_string(i) + "-nonce-0123"));
    spans_.assign(nonces_.begin(), nonces_.end());
  }
  // The root `ev`'s inclusion proof reaches from the leaf recomputed from `nonce`, its snapshot
  // bytes and its salt (what a verifier compares with the quoted root); empty for a malformed path.
  static Bytes RootReachedBy(const v1::Evidence& ev, std::span<const uint8_t> nonce) {
    const auto leaf =
        evidence::LeafHash(nonce, Sha256(B(ev.snapshot_bytes())), B(ev.inclusion().salt()));
    std::vector<Sha256Digest> path;
    for (const auto& h : ev.inclusion().path()) {
      if (h.size() != 32) return {};
      path.emplace_back();
      std::memcpy(path.back().data(), h.data(), 32);
    }
    const auto reached = evidence::RootFromInclusionPath(leaf, ev.inclusion().leaf_index(),
                                                         ev.inclusion().tree_size(), path);
    return Bytes(reached.begin(), reached.end());
  }
  const Bytes nonce_ = B("verifier-nonce-0123456789");
  std::vector<Bytes> nonces_;
  std::vector<std::span<const uint8_t>> spans_;
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
  EXPECT_NE(extra(a1), extra(a2)) << "a different snapshot must change the signed qualifying data";
  // A verifier recomputes the binding from its nonce and the snapshot bytes alone: a lone
  // request is a one-leaf tree, whose root is its leaf.
  for (const auto* ev : {&ev1, &ev2}) {
    auto snap_digest = Sha256(B(ev->snapshot_bytes()));
    EXPECT_EQ(std::string(snap_digest.begin(), snap_digest.end()), ev->snapshot_sha256());
    EXPECT_EQ(ev->inclusion().tree_size(), 1u);
    EXPECT_EQ(ev->inclusion().path_size(), 0);
    auto qd = evidence::LeafHash(nonce_, snap_digest, B(ev->inclusion().salt()));
    EXPECT_EQ(extra(ParseAttest(ev->quote().attest())), Bytes(qd.begin(), qd.end()));
    v1::EnforcementSnapshot parsed;
    ASSERT_TRUE(parsed.ParseFromString(ev->snapshot_bytes()));
    EXPECT_EQ(parsed.SerializeAsString(), ev->snapshot().SerializeAsString());
  }
  // Swapping in another snapshot breaks the binding checked by tpm2_checkquote -q.
  auto forged = ev1;
  forged.set_snapshot_bytes(ev2.snapshot_bytes());
  auto d = Sha256(B(forged.snapshot_bytes()));
  auto qd = evidence::LeafHash(nonce_, d, B(forged.inclusion().salt()));
  forged.mutable_quote()->set_qualifying_data(std::string(qd.begin(), qd.end()));
  ExpectCheckquote(forged, tmp_.path() / "forged", false, "snapshot swapped after quoting");
}

// One TPM2_Quote for several requests: every evidence carries the same signed quote, whose
// qualifying data is the Merkle root; tpm2_checkquote verifies it with -q ROOT, and each
// request's leaf walks its audit path to that root.
TEST_F(QuoteTest, BatchedQuoteVerifiesWithTpm2CheckquoteOverTheRoot) {
  log_.Measure(cel::EventKind::kSelfBinary, "/usr/sbin/sovguardd", Sha256("bin"));
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  MakeNonces(5);
  const auto batch = builder.BuildBatch(spans_, Snapshot("vm1"));
  ASSERT_EQ(batch.size(), nonces_.size());
  const auto root = extra(ParseAttest(batch[0].quote().attest()));
  ASSERT_EQ(root.size(), 32u);
  std::set<uint32_t> positions;
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& ev = batch[i];
    EXPECT_EQ(B(ev.nonce()), nonces_[i]);
    EXPECT_EQ(ev.quote().attest(), batch[0].quote().attest()) << "one quote for the batch";
    EXPECT_EQ(ev.quote().signature(), batch[0].quote().signature());
    EXPECT_EQ(B(ev.quote().qualifying_data()), root);
    EXPECT_EQ(ev.inclusion().tree_size(), 5u);
    positions.insert(ev.inclusion().leaf_index());
    const auto leaf =
        evidence::LeafHash(nonces_[i], Sha256(B(ev.snapshot_bytes())), B(ev.inclusion().salt()));
    EXPECT_EQ(B(ev.inclusion().leaf()), Bytes(leaf.begin(), leaf.end()));
    EXPECT_EQ(RootReachedBy(ev, nonces_[i]), root) << "request " << i;
    ExpectCheckquote(ev, tmp_.path() / ("batch-" + std::to_string(i)), true,
                     "batched evidence " + std::to_string(i) + " with -q ROOT");
  }
  EXPECT_EQ(positions.size(), 5u) << "one leaf per request";
  // tpm2_checkquote itself refuses the quote for qualifying data other than the root: a leaf.
  auto leaf_qd = batch[0];
  leaf_qd.mutable_quote()->set_qualifying_data(leaf_qd.inclusion().leaf());
  ExpectCheckquote(leaf_qd, tmp_.path() / "batch-leaf", false, "-q LEAF instead of the root");
  // Leaf order is a function of the leaves (sorted by hash), not of the request order.
  for (size_t i = 0; i + 1 < batch.size(); ++i)
    for (size_t j = 0; j < batch.size(); ++j)
      if (batch[j].inclusion().leaf_index() == batch[i].inclusion().leaf_index() + 1) {
        EXPECT_LT(batch[i].inclusion().leaf(), batch[j].inclusion().leaf());
      }
  // More requests than a quote can carry are refused before the TPM.
  std::vector<std::span<const uint8_t>> too_many(evidence::kMaxBatchLeaves + 1, spans_[0]);
  EXPECT_THROW(builder.BuildBatch(too_many, Snapshot("vm1")), AttestationError);
  EXPECT_THROW(builder.BuildBatch({}, Snapshot("vm1")), AttestationError);
}

// The batch as the service sends it: the part every auditor receives carries no request's nonce,
// salt, leaf or path (another auditor learns nothing of them), each request's own part carries only
// its nonce and inclusion proof, and the two serialized one after the other parse as that request's
// whole evidence, whose leaf walks to the quoted root.
TEST_F(QuoteTest, SharedBatchPartCarriesNoRequestsNonceOrProof) {
  evidence::EvidenceBuilder builder(tpm_, log_, Cfg());
  MakeNonces(3);
  const auto batch = builder.BuildBatchShared(spans_, Snapshot("vm1"));
  ASSERT_EQ(batch.own.size(), nonces_.size());
  EXPECT_TRUE(batch.common.nonce().empty());
  EXPECT_FALSE(batch.common.has_inclusion());
  const std::string shared = batch.common.SerializeAsString();
  const auto root = extra(ParseAttest(batch.common.quote().attest()));
  for (size_t i = 0; i < nonces_.size(); ++i) {
    const std::string n(nonces_[i].begin(), nonces_[i].end());
    EXPECT_EQ(shared.find(n), std::string::npos) << "nonce " << i << " in the shared part";
    EXPECT_EQ(shared.find(batch.own[i].inclusion().salt()), std::string::npos);
    EXPECT_EQ(shared.find(batch.own[i].inclusion().leaf()), std::string::npos);
    auto rest = batch.own[i];
    EXPECT_EQ(rest.nonce(), n);
    rest.clear_nonce();
    rest.clear_inclusion();
    EXPECT_EQ(rest.ByteSizeLong(), 0u) << "request " << i << "'s own part holds more";
    v1::Evidence ev;
    ASSERT_TRUE(ev.ParseFromString(shared + batch.own[i].SerializeAsString()));
    EXPECT_EQ(ev.SerializeAsString(), batch.Answer(i).SerializeAsString());
    EXPECT_EQ(ev.nonce(), n);
    EXPECT_EQ(RootReachedBy(ev, nonces_[i]), root) << "request " << i;
  }
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
