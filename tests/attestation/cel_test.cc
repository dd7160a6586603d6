// Unit tests: CEL-TLV encoding, decoding and replay; evidence binding and JSON (no TPM).
#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "attestation/eventlog/cel.h"
#include "attestation/evidence/format.h"

namespace sovguard::attestation {
namespace {

using cel::EventKind;

std::vector<cel::Record> SampleLog(uint32_t pcr) {
  std::vector<cel::Record> recs;
  recs.push_back(cel::MakeSovguardRecord(
      0, pcr, {EventKind::kDaemonStart, "sovguardd", Sha256("fresh"), "fresh"}));
  recs.push_back(cel::MakeSovguardRecord(
      1, pcr, {EventKind::kSelfBinary, "/usr/sbin/sovguardd", Sha256("bin"), ""}));
  recs.push_back(cel::MakeSovguardRecord(
      2, pcr, {EventKind::kPolicyApplied, "bundle-7", Sha256("policy"), "{\"mode\":\"enforce\"}"}));
  return recs;
}

TEST(Cel, MeasuredGuestsReplaysCoveredAndReleasedInOrder) {
  std::vector<cel::Record> recs;
  auto guest = [&](const std::string& uuid, const std::string& detail) {
    recs.push_back(cel::MakeSovguardRecord(
        recs.size(), 13, {EventKind::kEnforcementState, "guest:" + uuid, Sha256(detail), detail}));
  };
  guest("a", "covered");
  guest("b", "covered");
  guest("a", "released");
  guest("c", "covered");
  guest("c", "released");
  guest("c", "covered");
  // Other enforcement events and other kinds with a guest-like name do not count.
  recs.push_back(cel::MakeSovguardRecord(
      recs.size(), 13,
      {EventKind::kEnforcementState, "tamper:filter_missing", Sha256("x"), "covered"}));
  recs.push_back(cel::MakeSovguardRecord(
      recs.size(), 13, {EventKind::kBpfObject, "guest:d", Sha256("d"), "covered"}));
  EXPECT_EQ(cel::MeasuredGuests(recs), (std::set<std::string>{"b", "c"}));
  EXPECT_TRUE(cel::MeasuredGuests({}).empty());
}

TEST(Cel, EncodeDecodeRoundTrip) {
  auto recs = SampleLog(13);
  auto bytes = cel::EncodeLog(recs);
  auto back = cel::DecodeLog(bytes);
  ASSERT_EQ(back.size(), recs.size());
  EXPECT_EQ(back, recs);
  auto ev = cel::DecodeSovguardContent(back[2].content);
  EXPECT_EQ(ev.kind, EventKind::kPolicyApplied);
  EXPECT_EQ(ev.name, "bundle-7");
  EXPECT_EQ(ev.object_digest, Sha256("policy"));
  EXPECT_EQ(ev.detail, "{\"mode\":\"enforce\"}");
}

TEST(Cel, WireFormatIsTlv) {
  auto r = cel::MakeSovguardRecord(5, 13, {EventKind::kBpfObject, "x", Sha256("x"), ""});
  auto b = cel::EncodeRecord(r);
  // RECNUM: type 0, length 8, value 5 (big-endian).
  ASSERT_GE(b.size(), 13u);
  EXPECT_EQ(b[0], 0);
  EXPECT_EQ(GetBe(b, 1, 4), 8u);
  EXPECT_EQ(GetBe(b, 5, 8), 5u);
  // PCR: type 1, length 4, value 13.
  EXPECT_EQ(b[13], 1);
  EXPECT_EQ(GetBe(b, 14, 4), 4u);
  EXPECT_EQ(GetBe(b, 18, 4), 13u);
  // DIGESTS: type 3 holding one SHA-256 (TPM_ALG_SHA256 = 0x0b) TLV.
  EXPECT_EQ(b[22], 3);
  EXPECT_EQ(GetBe(b, 23, 4), 37u);
  EXPECT_EQ(b[27], 0x0b);
  // CONTENT: sovguard type 0xA0.
  EXPECT_EQ(b[27 + 37], 0xA0);
}

TEST(Cel, ReplayIsSha256ExtendChain) {
  auto recs = SampleLog(13);
  Sha256Digest pcr{};
  for (const auto& r : recs) pcr = ExtendSha256(pcr, r.digest);
  auto m = cel::Replay(recs);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at(13), pcr);
}

TEST(Cel, TamperedContentIsRejected) {
  auto recs = SampleLog(13);
  recs[1].content.back() ^= 1;  // changes the object digest but not the extended digest
  EXPECT_THROW(cel::Replay(recs), AttestationError);
}

TEST(Cel, RecnumGapIsRejected) {
  auto recs = SampleLog(13);
  recs.erase(recs.begin() + 1);
  EXPECT_THROW(cel::Replay(recs), AttestationError);
}

TEST(Cel, TruncatedTailIsReportedNotThrown) {
  auto bytes = cel::EncodeLog(SampleLog(13));
  bytes.resize(bytes.size() - 3);
  auto res = cel::DecodeLogPrefix(bytes);
  EXPECT_EQ(res.records.size(), 2u);
  EXPECT_NE(res.tail_error.find("truncated"), std::string::npos) << res.tail_error;
  EXPECT_THROW(cel::DecodeLog(bytes), AttestationError);
}

TEST(Cel, GarbageAndOversizeAreRejected) {
  Bytes garbage = {0x00, 0xff, 0xff, 0xff, 0xff, 1, 2, 3};
  EXPECT_THROW(cel::DecodeLog(garbage), AttestationError);
  Bytes wrong_first = {0x01, 0, 0, 0, 4, 0, 0, 0, 13};
  EXPECT_THROW(cel::DecodeLog(wrong_first), AttestationError);
  EXPECT_THROW(cel::DecodeSovguardContent(Bytes{9, 0, 0, 0, 0}), AttestationError);
}

// The seed corpus was written by an independent encoder (a few lines of Python following the
// format description in cel.h): our decoder must read it and our encoder reproduce it.
TEST(Cel, IndependentlyEncodedLogDecodesAndReEncodes) {
  const auto dir = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/attestation/corpus/cel";
  auto bytes = ReadFileBytes(dir / "valid-3-records.cel");
  auto recs = cel::DecodeLog(bytes);
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(cel::EncodeLog(recs), bytes);
  EXPECT_NO_THROW(cel::Replay(recs));
  EXPECT_EQ(cel::DecodeSovguardContent(recs[2].content).kind, EventKind::kMechanismDowngraded);
  EXPECT_THROW(cel::Replay(cel::DecodeLog(ReadFileBytes(dir / "tampered-content.cel"))),
               AttestationError);
}

// Decodes `data` record by record with DecodeRecordViewAt (the verifier's in-loop decoder): the
// views, or the error text RecordViewError gives for the first record that does not decode.
std::string DecodeOneByOne(std::span<const uint8_t> data, std::vector<cel::RecordView>& out) {
  out.clear();
  size_t off = 0;
  while (off < data.size()) {
    cel::RecordView r;
    const size_t at = off;
    if (!cel::DecodeRecordViewAt(data, off, r)) {
      EXPECT_EQ(off, at) << "offset moved on failure";
      return cel::RecordViewError(data, at, out.size());
    }
    EXPECT_GT(off, at);
    out.push_back(r);
  }
  return "";
}

// The same with the reference decoder (TLV by TLV, no fast path): true when every record
// decodes.
bool DecodeOneByOneSlow(std::span<const uint8_t> data, std::vector<cel::RecordView>& out) {
  out.clear();
  size_t off = 0;
  while (off < data.size()) {
    cel::RecordView r;
    if (!cel::detail::DecodeRecordViewSlow(data, off, r).empty()) return false;
    out.push_back(r);
  }
  return true;
}

void ExpectSameRecords(const std::vector<cel::RecordView>& a, const std::vector<cel::RecordView>& b,
                       const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].recnum, b[i].recnum) << what << " " << i;
    EXPECT_EQ(a[i].pcr, b[i].pcr) << what << " " << i;
    EXPECT_EQ(a[i].digest, b[i].digest) << what << " " << i;
    EXPECT_EQ(a[i].content_type, b[i].content_type) << what << " " << i;
    EXPECT_EQ(a[i].content.data(), b[i].content.data()) << what << " " << i;
    EXPECT_EQ(a[i].content.size(), b[i].content.size()) << what << " " << i;
    EXPECT_EQ(a[i].offset, b[i].offset) << what << " " << i;
  }
}

void ExpectSameViews(std::span<const uint8_t> data, const std::string& what) {
  std::vector<cel::RecordView> a, b, c;
  const auto ea = cel::DecodeLogViews(data, a);
  const auto eb = DecodeOneByOne(data, b);
  EXPECT_EQ(ea, eb) << what;
  // The fast paths accept exactly what the reference decoder accepts, with the same fields.
  EXPECT_EQ(ea.empty(), DecodeOneByOneSlow(data, c)) << what << ": " << ea;
  ExpectSameRecords(a, c, what + " (reference decoder)");
  ExpectSameRecords(a, b, what);
}

// The in-loop decoder agrees with DecodeLogViews (records and error texts) on real logs, on
// every truncation of one, and on every single-byte corruption of a record's framing.
TEST(Cel, DecodeRecordViewAtAgreesWithDecodeLogViews) {
  const auto dir = std::filesystem::path(SOVGUARD_SOURCE_DIR) / "tests/attestation/corpus/cel";
  std::vector<Bytes> logs = {cel::EncodeLog(SampleLog(13))};
  for (const auto& f : std::filesystem::directory_iterator(dir))
    logs.push_back(ReadFileBytes(f.path()));
  // Another digest TLV before the SHA-256 one: a second SHA-256 (the last one counts), SHA-1,
  // SHA-384 (ignored).
  for (const Bytes& digests :
       {Bytes{0x0b, 0, 0, 0, 32}, Bytes{0x04, 0, 0, 0, 20}, Bytes{0x0c, 0, 0, 0, 48}}) {
    const auto rec =
        cel::MakeSovguardRecord(0, 13, {EventKind::kDaemonStart, "d", Sha256("x"), ""});
    auto tlv = [](Bytes& o, uint8_t type, std::span<const uint8_t> v) {
      o.push_back(type);
      PutBe(o, v.size(), 4);
      o.insert(o.end(), v.begin(), v.end());
    };
    Bytes dig, out;
    tlv(dig, digests[0], Bytes(digests[4], 0x5a));
    tlv(dig, 0x0b, rec.digest);
    tlv(out, cel::kTypeRecnum, Bytes(8, 0));
    tlv(out, cel::kTypePcr, Bytes{0, 0, 0, 13});
    tlv(out, cel::kTypeDigests, dig);
    tlv(out, cel::kContentSovguard, rec.content);
    cel::RecordView v;
    size_t off = 0;
    ASSERT_TRUE(cel::DecodeRecordViewAt(out, off, v));
    EXPECT_EQ(off, out.size());
    EXPECT_EQ(0, std::memcmp(v.digest, rec.digest.data(), 32));  // the record's, not 0x5a...
    logs.push_back(out);
  }
  for (size_t k = 0; k < logs.size(); ++k) {
    const auto& log = logs[k];
    ExpectSameViews(log, "log " + std::to_string(k));
    for (size_t n = 0; n < log.size(); ++n)
      ExpectSameViews(std::span(log).first(n),
                      "log " + std::to_string(k) + " cut at " + std::to_string(n));
  }
  auto log = cel::EncodeLog(SampleLog(13));
  std::vector<cel::RecordView> views;
  ASSERT_EQ(cel::DecodeLogViews(log, views), "");
  for (const auto& v : views) {
    // Every byte of the framing before the content (type and length octets included).
    const size_t content_at = static_cast<size_t>(v.content.data() - log.data());
    for (size_t i = v.offset; i < content_at; ++i)
      for (uint8_t x : {uint8_t{0x01}, uint8_t{0x80}, uint8_t{0xff}}) {
        auto t = log;
        t[i] ^= x;
        ExpectSameViews(t, "byte " + std::to_string(i) + " ^ " + std::to_string(x));
      }
  }
}

// The allocation-free event decoder (with its fast path for the encoder's own layout) accepts
// exactly what DecodeSovguardContent accepts, with the same fields: on encoded events, on every
// truncation, on every single-byte change of the framing, and on reordered or repeated fields.
TEST(Cel, SovguardContentViewAgreesWithDecodeSovguardContent) {
  auto check = [](std::span<const uint8_t> c, const std::string& what) {
    cel::SovguardEventView v;
    const char* why = cel::DecodeSovguardContentView(c, v);
    std::optional<cel::SovguardEvent> e;
    try {
      e = cel::DecodeSovguardContent(c);
    } catch (const AttestationError&) {
    }
    ASSERT_EQ(why == nullptr, e.has_value()) << what << ": " << (why ? why : "accepted");
    if (!e) return;
    EXPECT_EQ(v.kind, e->kind) << what;
    EXPECT_EQ(v.name, e->name) << what;
    EXPECT_EQ(0, std::memcmp(v.object_digest, e->object_digest.data(), 32)) << what;
    EXPECT_EQ(v.detail, e->detail) << what;
  };
  const std::vector<cel::SovguardEvent> events = {
      {EventKind::kDaemonStart, "sovguardd", Sha256("a"), "fresh"},
      {EventKind::kSelfBinary, "/usr/sbin/sovguardd", Sha256("b"), ""},
      {EventKind::kRecovered, std::string(300, 'n'), Sha256("c"), std::string(70, 'd')},
      {EventKind::kPolicyApplied, "x", Sha256("d"), "{\"mode\":\"enforce\"}"}};
  for (size_t k = 0; k < events.size(); ++k) {
    const auto c = cel::EncodeSovguardContent(events[k]);
    const std::string what = "event " + std::to_string(k);
    check(c, what);
    for (size_t n = 0; n < c.size(); ++n)
      check(std::span(c).first(n), what + " cut " + std::to_string(n));
    for (size_t i = 0; i < c.size(); ++i)
      for (uint8_t x :
           {uint8_t{0x01}, uint8_t{0x02}, uint8_t{0x04}, uint8_t{0x0f}, uint8_t{0x80}}) {
        auto t = c;
        t[i] ^= x;
        check(t, what + " byte " + std::to_string(i) + " ^ " + std::to_string(x));
      }
    // Fields reordered, repeated (the last one counts), or followed by another TLV.
    auto t = c;
    t.insert(t.end(), c.begin(), c.begin() + 7);  // a second kind TLV after the rest
    check(t, what + " kind again");
    Bytes reordered(c.begin() + 7, c.end());
    reordered.insert(reordered.end(), c.begin(), c.begin() + 7);  // kind last
    check(reordered, what + " kind last");
    t = c;
    t.insert(t.end(), {4, 0, 0, 0, 1, 'z'});  // a (second) detail
    check(t, what + " detail again");
  }
}

TEST(Cel, RecordViewErrorNamesRecordAndOffset) {
  auto log = cel::EncodeLog(SampleLog(13));
  std::vector<cel::RecordView> views;
  ASSERT_EQ(cel::DecodeLogViews(log, views), "");
  log[views[2].offset + 21] = 24;  // the PCR value's low octet (after RECNUM and the PCR header)
  const auto e = cel::RecordViewError(log, views[2].offset, 2);
  EXPECT_EQ(e, "record 2 at byte " + std::to_string(views[2].offset) +
                   ": PCR index 24 out of range 0-23");
  // A record that does decode is never reported as fine.
  EXPECT_NE(cel::RecordViewError(log, views[0].offset, 0).find("disagrees"), std::string::npos);
}

TEST(Cel, KindNamesRoundTrip) {
  for (uint16_t k = 1; k <= 14; ++k) {
    auto kind = static_cast<EventKind>(k);
    auto name = cel::EventKindName(kind);
    ASSERT_NE(name, "unknown") << k;
    EXPECT_EQ(cel::EventKindFromName(name), kind);
  }
  EXPECT_FALSE(cel::EventKindFromName("nope").has_value());
}

v1::EnforcementSnapshot Snapshot(const std::string& guest) {
  v1::EnforcementSnapshot s;
  s.set_version(1);
  s.set_node("node-a");
  s.set_policy_bundle_sha256(std::string(32, '\x11'));
  auto* g = s.add_guests();
  g->set_name(guest);
  g->add_taps("vnet0");
  auto* d = g->add_datasets();
  d->set_dataset("patients-eu");
  d->set_mode("enforce");
  auto* p = s.add_programs();
  p->set_name("sg_tc_egress");
  p->set_tag("0123456789abcdef");
  p->set_attach_type("tc/egress");
  p->set_attach_point("vnet0");
  return s;
}

TEST(Evidence, LeafBindsNonceSnapshotAndSalt) {
  Bytes nonce(16, 0xaa), salt(32, 0x5c);
  auto a = Sha256(evidence::SerializeSnapshot(Snapshot("vm1")));
  auto b = Sha256(evidence::SerializeSnapshot(Snapshot("vm2")));
  ASSERT_NE(a, b);
  EXPECT_NE(evidence::LeafHash(nonce, a, salt), evidence::LeafHash(nonce, b, salt));
  Bytes nonce2 = nonce, salt2 = salt;
  nonce2[0] ^= 1;
  salt2[31] ^= 1;
  EXPECT_NE(evidence::LeafHash(nonce, a, salt), evidence::LeafHash(nonce2, a, salt));
  EXPECT_NE(evidence::LeafHash(nonce, a, salt), evidence::LeafHash(nonce, a, salt2));
  // The documented formula, computed independently.
  std::string msg(1, '\0');
  msg += "sovguard-evidence-v2";
  msg.push_back('\0');
  msg += std::string("\x00\x00\x00\x10", 4);
  msg += std::string(nonce.begin(), nonce.end());
  msg += std::string(a.begin(), a.end());
  msg += std::string(salt.begin(), salt.end());
  EXPECT_EQ(evidence::LeafHash(nonce, a, salt), Sha256(msg));
  EXPECT_THROW(evidence::LeafHash(Bytes(7, 1), a, salt), AttestationError);
  EXPECT_THROW(evidence::LeafHash(Bytes(65, 1), a, salt), AttestationError);
  EXPECT_THROW(evidence::LeafHash(nonce, a, Bytes(31, 1)), AttestationError);
  EXPECT_THROW(evidence::LeafHash(nonce, a, Bytes(33, 1)), AttestationError);
  // Inner nodes: 0x01 || left || right.
  std::string node(1, '\x01');
  node += std::string(a.begin(), a.end()) + std::string(b.begin(), b.end());
  EXPECT_EQ(evidence::NodeHash(a, b), Sha256(node));
}

// RFC 9162 2.1.1 and 2.1.3.1, written down recursively (the definitions, not the code's levels).
Sha256Digest Mth(std::span<const Sha256Digest> d) {
  if (d.size() == 1) return d[0];
  size_t k = 1;
  while (k * 2 < d.size()) k *= 2;
  return evidence::NodeHash(Mth(d.subspan(0, k)), Mth(d.subspan(k)));
}
std::vector<Sha256Digest> RfcPath(size_t m, std::span<const Sha256Digest> d) {
  if (d.size() == 1) return {};
  size_t k = 1;
  while (k * 2 < d.size()) k *= 2;
  std::vector<Sha256Digest> p;
  if (m < k) {
    p = RfcPath(m, d.subspan(0, k));
    p.push_back(Mth(d.subspan(k)));
  } else {
    p = RfcPath(m - k, d.subspan(k));
    p.push_back(Mth(d.subspan(0, k)));
  }
  return p;
}

TEST(Evidence, MerkleTreeIsRfc9162AndEveryPathReachesTheRoot) {
  std::vector<Sha256Digest> leaves;
  for (size_t n = 1; n <= 70; ++n) {
    leaves.push_back(Sha256("leaf " + std::to_string(n)));
    const evidence::MerkleTree tree(leaves);
    ASSERT_EQ(tree.Root(), Mth(leaves)) << n << " leaves";
    for (size_t i = 0; i < n; ++i) {
      const auto path = tree.Path(i);
      ASSERT_EQ(path, RfcPath(i, leaves)) << "leaf " << i << " of " << n;
      ASSERT_EQ(path.size(), evidence::InclusionPathLength(i, n));
      ASSERT_EQ(evidence::RootFromInclusionPath(leaves[i], i, n, path), tree.Root());
      // A path one hash short or long is refused, not walked.
      if (!path.empty()) {
        EXPECT_THROW(evidence::RootFromInclusionPath(leaves[i], i, n,
                                                     std::span(path).first(path.size() - 1)),
                     AttestationError);
      }
      auto longer = path;
      longer.push_back(leaves[0]);
      EXPECT_THROW(evidence::RootFromInclusionPath(leaves[i], i, n, longer), AttestationError);
      // Another leaf, or this one at another position, reaches another root.
      if (n > 1) {
        EXPECT_NE(evidence::RootFromInclusionPath(leaves[(i + 1) % n], i, n, path), tree.Root());
        const size_t j = i ^ 1;
        if (j < n && evidence::InclusionPathLength(j, n) == path.size()) {
          EXPECT_NE(evidence::RootFromInclusionPath(leaves[i], j, n, path), tree.Root());
        }
      }
    }
  }
  // The bound: no leaf of the largest tree needs more than kMaxProofLength hashes.
  size_t longest = 0;
  for (size_t n : {evidence::kMaxBatchLeaves - 1, evidence::kMaxBatchLeaves})
    for (size_t i = 0; i < n; ++i) longest = std::max(longest, evidence::InclusionPathLength(i, n));
  EXPECT_EQ(longest, evidence::kMaxProofLength);
  EXPECT_THROW(evidence::InclusionPathLength(0, 0), AttestationError);
  EXPECT_THROW(evidence::InclusionPathLength(0, evidence::kMaxBatchLeaves + 1), AttestationError);
  EXPECT_THROW(evidence::InclusionPathLength(3, 3), AttestationError);
  EXPECT_THROW(evidence::MerkleTree(std::span<const Sha256Digest>{}), AttestationError);
  std::vector<Sha256Digest> too_many(evidence::kMaxBatchLeaves + 1);
  EXPECT_THROW(evidence::MerkleTree{too_many}, AttestationError);
}

TEST(Evidence, SnapshotSerializationIsDeterministic) {
  EXPECT_EQ(evidence::SerializeSnapshot(Snapshot("vm1")),
            evidence::SerializeSnapshot(Snapshot("vm1")));
}

TEST(Evidence, JsonRoundTrips) {
  v1::Evidence ev;
  ev.set_format_version(1);
  ev.set_nonce(std::string("\x00\x01\xfe\xff", 4));
  *ev.mutable_snapshot() = Snapshot("vm1");
  ev.set_snapshot_bytes(evidence::SerializeSnapshot(ev.snapshot()));
  auto* q = ev.mutable_quote();
  q->set_attest(std::string("\xff\x54\x43\x47", 4));
  auto* p = q->add_pcrs();
  p->set_index(13);
  p->set_sha256(std::string(32, '\x02'));
  ev.mutable_logs()->set_ima_ascii("10 abc ima-ng sha256:00 /init\n");
  ev.mutable_clock()->set_clock_ms(1ull << 40);
  auto json = evidence::ToJson(ev);
  EXPECT_NE(json.find("\"format_version\": 1"), std::string::npos) << json;
  v1::Evidence back;
  evidence::FromJson(json, back);
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(ev, back));
  EXPECT_TRUE(back.logs().has_ima_ascii());
  EXPECT_FALSE(back.logs().has_uefi_tcg2());  // absence survives the round trip
  v1::Evidence bad;
  EXPECT_THROW(evidence::FromJson("{\"no_such_field\": 1}", bad), AttestationError);
}

}  // namespace
}  // namespace sovguard::attestation
