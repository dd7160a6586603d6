// Integration tests of sovguard-verify on real evidence: a private swtpm, sovguardd's measurement
// log and EvidenceBuilder produce genuine evidence; the verifier must pass it and fail every
// forgery with the right reason code. The binary is also run as a subprocess for exit codes.
#include <gtest/gtest.h>

#include <openssl/pem.h>
#include <tss2/tss2_tpm2_types.h>

#include <algorithm>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "attestation/cli/manifest_cli.h"
#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.h"
#include "attestation/evidence/format.h"
#include "attestation/manifest/manifest.h"
#include "attestation/measure/platform.h"
#include "attestation/verify/ear.h"
#include "attestation/verify/ima_log.h"
#include "attestation/verify/uefi_log.h"
#include "attestation/verify/verifier.h"
#include "base/openssl.h"
#include "tests/attestation/swtpm_fixture.h"
#include "tests/verify/evidence_fixture.h"

namespace sovguard::attestation {
namespace {

namespace ts = test_support;
using verify::Status;

Bytes B(const std::string& s) {
  return Bytes(s.begin(), s.end());
}
std::string S(std::span<const uint8_t> b) {
  return std::string(b.begin(), b.end());
}

// The policy digest matches the kPolicyApplied event measured below, unless told otherwise.
// The guest (tap vnet0) is the one the CEL measures as covered; storage-open is downgraded.
v1::EnforcementSnapshot Snapshot(const std::string& guest,
                                 const Sha256Digest& policy = Sha256("bundle"),
                                 uint64_t taken_unix_ns = 1) {
  return ts::NodeSnapshot("verify-node", guest, policy, taken_unix_ns);
}

// Snapshots that disagree with the CEL or leave something uncovered (snapshot.coverage,
// snapshot.mechanisms), each quoted genuinely: the node itself reports them.
std::map<std::string, v1::EnforcementSnapshot> CoverageSnapshots() {
  std::map<std::string, v1::EnforcementSnapshot> m;
  m["no-guests"] = Snapshot("");
  m["extra-guest"] = Snapshot("vm1");
  ts::AddGuest(m["extra-guest"], "vm9", "vnet9");
  auto drop_programs = [](v1::EnforcementSnapshot s, std::string_view name) {
    auto* p = s.mutable_programs();
    p->erase(std::remove_if(p->begin(), p->end(),
                            [&](const v1::ProgramAttachment& a) { return a.name() == name; }),
             p->end());
    return s;
  };
  m["no-attachment"] = drop_programs(Snapshot("vm1"), "sg_net");
  m["wrong-tag"] = Snapshot("vm1");
  for (auto& p : *m["wrong-tag"].mutable_programs())
    if (p.name() == "sg_net") p.set_tag("00000000deadbeef");
  m["bad-cgroup"] = Snapshot("vm1");
  m["bad-cgroup"].mutable_guests(0)->set_cgroup("/sys/fs/cgroup/unified/system.slice/qemu.scope");
  m["no-cgroup"] = Snapshot("vm1");
  m["no-cgroup"].mutable_guests(0)->clear_cgroup();
  m["no-mechanism"] = Snapshot("vm1");
  {
    auto* ms = m["no-mechanism"].mutable_mechanisms();
    ms->erase(
        std::remove_if(ms->begin(), ms->end(),
                       [](const v1::MechanismState& x) { return x.path() == "storage-network"; }),
        ms->end());
  }
  m["strongest"] = Snapshot("vm1");
  m["strongest"].clear_mechanisms();
  m["strongest"] = drop_programs(m["strongest"], "storage-open");
  for (const auto* path :
       {"storage-io-quota", "storage-io-accounting", "storage-block-devices", "storage-network"})
    m["strongest"] = drop_programs(m["strongest"], path);
  ts::AddMechanisms(m["strongest"], /*strongest=*/true);
  // Every NIC listed (new snapshot field): one not covered, one covered without a tap entry.
  m["nic-uncovered"] = Snapshot("vm1");
  {
    auto* g = m["nic-uncovered"].mutable_guests(0);
    auto* ok = g->add_interfaces();
    ok->set_type("network");
    ok->set_device("vnet0");
    ok->set_mechanism("tc/ingress");
    ok->set_covered(true);
    auto* nic = g->add_interfaces();
    nic->set_type("direct");
    nic->set_device("macvtap0");
    nic->set_mac("52:54:00:00:00:02");
    nic->set_covered(false);
  }
  m["nic-no-tap"] = Snapshot("vm1");
  {
    auto* nic = m["nic-no-tap"].mutable_guests(0)->add_interfaces();
    nic->set_type("bridge");
    nic->set_device("vnet7");
    nic->set_mechanism("tc/ingress");
    nic->set_covered(true);
  }
  // Nothing passes vacuously: no storage program at all, no tap covered, a path guarding nothing.
  m["no-storage"] = Snapshot("vm1");
  for (const auto path : verify::kEnforcementPaths)
    m["no-storage"] = drop_programs(m["no-storage"], path);
  // A guest whose NIC is listed but has no tap covered (the daemon left out a tap whose filter
  // is missing): its network path is unguarded.
  m["no-taps"] = drop_programs(Snapshot("vm1"), "sg_net");
  m["no-taps"].mutable_guests(0)->clear_taps();
  {
    auto* nic = m["no-taps"].mutable_guests(0)->add_interfaces();
    nic->set_type("network");
    nic->set_device("vnet0");
    nic->set_mac("52:54:00:00:00:01");
    nic->set_covered(false);
  }
  // A guest without any network interface: no network path, nothing for sg_net to guard.
  m["no-nic"] = drop_programs(Snapshot("vm1"), "sg_net");
  m["no-nic"].mutable_guests(0)->clear_taps();
  m["not-enforced"] = Snapshot("vm1");
  for (auto& ms : *m["not-enforced"].mutable_mechanisms())
    if (ms.path() == "storage-network") {
      ms.set_not_enforced(true);
      ms.set_reason("no guest cgroup to attach to");
    }
  m["software-tpm"] = Snapshot("vm1");
  m["software-tpm"].set_software_tpm(true);
  // A field this verifier does not know (number 99, as a newer node might add, e.g. to say a
  // guest is exempt): never read, so never satisfied.
  m["unknown-field"] = Snapshot("vm1");
  m["unknown-field"].GetReflection()->MutableUnknownFields(&m["unknown-field"])->AddVarint(99, 1);
  // A path reported twice: guarding nothing, then (last) at its strongest mechanism.
  m["mechanism-twice"] = m["not-enforced"];
  for (const auto& ms : m["not-enforced"].mechanisms())
    if (ms.path() == "storage-network") {
      auto* again = m["mechanism-twice"].add_mechanisms();
      *again = ms;
      again->set_not_enforced(false);
      again->clear_reason();
    }
  return m;
}

// What root does without sovguardd (PCR 16 is resettable from locality 0: tpm2_pcrreset 16):
// the clean log of `genuine` rewritten into PCR 16, extended there, and quoted with the node's
// own AK over the boot PCRs, PCR 10 and PCR 16; logs.sovguard_pcr = 16. Every signature is real.
v1::Evidence ForgeInPcr16(tpm::Tpm& tpm, const v1::Evidence& genuine, const Bytes& nonce,
                          const v1::EnforcementSnapshot& snap) {
  std::vector<cel::Record> recs;
  for (const auto& r : cel::DecodeLog(B(genuine.logs().cel())))
    recs.push_back(cel::MakeSovguardRecord(r.recnum, 16, cel::DecodeSovguardContent(r.content)));
  for (const auto& r : recs) tpm.PcrExtend(16, r.digest);
  v1::Evidence ev = genuine;
  const std::string sb = evidence::SerializeSnapshot(snap);
  const auto digest = Sha256(sb);
  ev.set_snapshot_bytes(sb);
  ev.set_snapshot_sha256(S(digest));
  *ev.mutable_snapshot() = snap;
  // A one-leaf tree (its root is the leaf), with the genuine evidence's salt.
  const auto qd = evidence::LeafHash(nonce, digest, B(genuine.inclusion().salt()));
  auto* proof = ev.mutable_inclusion();
  proof->set_leaf_index(0);
  proof->set_tree_size(1);
  proof->set_leaf(S(qd));
  proof->clear_path();
  const auto q = tpm.Quote(tpm::kDefaultAkHandle, qd, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16});
  auto* quote = ev.mutable_quote();
  quote->set_attest(S(q.attest));
  quote->set_signature(S(q.signature));
  quote->set_qualifying_data(S(qd));
  quote->clear_pcrs();
  for (size_t i = 0; i < q.pcrs.size(); ++i) {
    auto* p = quote->add_pcrs();
    p->set_index(q.pcrs[i]);
    p->set_sha256(S(q.values[i]));
  }
  ev.mutable_clock()->set_clock_ms(q.clock);
  ev.mutable_clock()->set_reset_count(static_cast<uint32_t>(q.reset_count));
  ev.mutable_clock()->set_restart_count(static_cast<uint32_t>(q.restart_count));
  ev.mutable_clock()->set_safe(q.safe);
  ev.mutable_clock()->set_firmware_version(q.firmware_version);
  ev.mutable_logs()->set_cel(S(cel::EncodeLog(recs)));
  ev.mutable_logs()->set_sovguard_pcr(16);
  return ev;
}

// One swtpm and one set of genuine evidence for the whole suite: every test mutates copies.
struct World {
  ts::Swtpm swtpm;
  ts::TempDir tmp;
  // Closed once the evidence is built: swtpm serves one client, and tpm2-tools needs it too.
  std::unique_ptr<tpm::Tpm> tpm = std::make_unique<tpm::Tpm>(swtpm.tcti());
  std::unique_ptr<measure::MeasurementLog> log = std::make_unique<measure::MeasurementLog>(
      *tpm, measure::MeasureConfig{tmp.path() / "state", measure::kDefaultSovguardPcr});
  Bytes nonce = B("auditor-nonce-0123456789");
  v1::Evidence ecc, rsa, other_snapshot, wrong_policy;
  // The forger's evidence: root extends a clean log into resettable PCR 16 (fresh, as after
  // tpm2_pcrreset 16), declares logs.sovguard_pcr = 16, and quotes it with the node's real AK.
  v1::Evidence pcr16;
  // Boot PCRs left out of the quote (EvidenceConfig::boot_pcrs empty).
  v1::Evidence no_boot_pcrs;
  // Enforcement continuity, on its own log in PCR 11 (Options::sovguard_pcr = 11): a clean
  // start with vm1 covered, then a tamper finding, a later quote with nothing new, a downgrade
  // while vm1 runs, a forced release, a daemon restart while vm1 runs.
  std::map<std::string, v1::Evidence> cont;
  // A log in PCR 12 that never applied a policy, quoted with a snapshot claiming one.
  v1::Evidence no_policy;
  // The auditor's anchors: a reference manifest approving what the world's logs measure (its
  // components and the files of the IMA list), signed by a certifier key.
  manifest::Manifest manifest;
  base::EvpPkeyPtr manifest_key{nullptr};
  std::string manifest_pub;
  std::shared_ptr<const std::string> manifest_envelope;
  std::shared_ptr<const std::string> Sign(const manifest::Manifest& m) const {
    return ts::SignManifest(m, manifest_key.get());
  }
  // CoverageSnapshots() quoted while vm1 runs; then vm1 released with no guest / vm1 listed;
  // then a guest event the verifier does not know.
  std::map<std::string, v1::Evidence> coverage;
  // Credential activation outcomes: the ECC AK's challenge answered by its TPM; a challenge made
  // for another AK name (the RSA AK) that the node could only try with the ECC AK.
  verify::AkEkBinding bind_ok, bind_wrong_ak;
};
World* world = nullptr;

class VerifyTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    world = new World;
    auto& w = *world;
    // Replay a real UEFI log into swtpm's boot PCRs, as firmware would have extended them.
    const auto uefi_log = std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
                          "eventlogs/keylime/binary_bios_measurements-secureboot";
    for (const auto& e : verify::uefi::Parse(ReadFileBytes(uefi_log)).events)
      if (e.type != verify::uefi::kEvNoAction) w.tpm->PcrExtend(e.pcr, e.sha256);
    // And the real keylime IMA list into PCR 10, as the kernel would have (SHA-256 bank).
    const auto ima_log =
        std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs/keylime/ima-log-sha256";
    for (const auto& e : verify::ima::Parse(ReadFileBytes(ima_log)).entries)
      w.tpm->PcrExtend(e.pcr, verify::ima::TemplateHashSha256(e));
    // The certifier's manifest: sovguardd, its BPF object, and every file of the IMA list.
    w.manifest_key.reset(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    w.manifest_pub = ts::PublicPem(w.manifest_key.get());
    w.manifest = ts::TestManifest("verify-test");
    {
      manifest::Component files{"host-files", "1", "Test Distribution SA", "FR", "MIT", {}};
      const std::string text = S(ReadFileBytes(ima_log));
      for (size_t at = 0; at < text.size();) {  // "PCR HASH TEMPLATE sha256:HEX NAME"
        const size_t end = std::min(text.find('\n', at), text.size());
        std::istringstream line(text.substr(at, end - at));
        std::string pcr, hash, tmpl, digest, name;
        line >> pcr >> hash >> tmpl >> digest >> name;
        if (name != "boot_aggregate" && digest.starts_with("sha256:")) {
          manifest::File f{name, {}};
          const Bytes d = FromHex(digest.substr(7), "IMA digest");
          std::copy(d.begin(), d.end(), f.sha256.begin());
          files.files.push_back(f);
        }
        at = end + 1;
      }
      EXPECT_FALSE(files.files.empty());
      w.manifest.components.push_back(files);
    }
    w.manifest_envelope = w.Sign(w.manifest);
    // As sovguardd does when it starts (storage-open downgraded), applies its policy and covers
    // a starting guest.
    ts::MeasureDaemonStart(*w.log);
    ts::MeasurePolicyAndGuest(*w.log, "vm1");
    evidence::EvidenceConfig cfg;
    cfg.node = "verify-node";
    cfg.uefi_log = uefi_log;
    cfg.ima_log = ima_log;
    {
      evidence::EvidenceBuilder b(*w.tpm, *w.log, cfg);
      w.ecc = b.Build(w.nonce, Snapshot("vm1"));
      w.other_snapshot = b.Build(w.nonce, Snapshot("vm1", Sha256("bundle"), 2));
      // "strongest" now contradicts the measured storage-open downgrade.
      for (const auto& [name, snap] : CoverageSnapshots())
        w.coverage[name == "strongest" ? "claims-strongest" : name] = b.Build(w.nonce, snap);
      w.wrong_policy = b.Build(w.nonce, Snapshot("vm1", Sha256("another bundle")));
      const auto id = b.Identity();
      const Bytes ek = B(id.ek_public_rsa()), ak = B(id.ak().name());
      auto c = verify::MakeAkChallenge(ek, ak);
      w.bind_ok = {ek, ak, c.secret, b.ActivateCredential(c.credential_blob, c.encrypted_secret),
                   ""};
    }
    const evidence::EvidenceConfig ecc_cfg = cfg;
    w.pcr16 = ForgeInPcr16(*w.tpm, w.ecc, w.nonce, Snapshot("vm1"));
    {
      auto nb = cfg;
      nb.boot_pcrs.clear();
      evidence::EvidenceBuilder b(*w.tpm, *w.log, nb);
      w.no_boot_pcrs = b.Build(w.nonce, Snapshot("vm1"));
    }
    {
      // Enforcement continuity in PCR 11: started as sovguardd starts, then interrupted.
      measure::MeasurementLog cl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr11", 11});
      ts::MeasureDaemonStart(cl);
      ts::MeasurePolicyAndGuest(cl, "vm1");
      evidence::EvidenceBuilder b(*w.tpm, cl, cfg);
      w.cont["clean"] = b.Build(w.nonce, Snapshot("vm1"));
      // As Node::CountAndMeasureTamper: a deleted tc filter found (and repaired).
      const std::string found = "tc filter on vnet0 ingress missing; re-attached";
      cl.MeasureBytes(cel::EventKind::kEnforcementState, "tamper:net-filter-missing",
                      std::span(reinterpret_cast<const uint8_t*>(found.data()), found.size()),
                      found);
      w.cont["tamper"] = b.Build(w.nonce, Snapshot("vm1"));
      w.cont["after-tamper"] = b.Build(w.nonce, Snapshot("vm1"));
      // A weaker mechanism chosen while vm1 runs.
      measure::MeasureMechanismDowngraded(cl, "storage-network", "cgroup/connect4+connect6", "none",
                                          "cgroup detached");
      w.cont["downgrade"] = b.Build(w.nonce, Snapshot("vm1"));
    }
    {
      measure::MeasurementLog cl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr11", 11});
      evidence::EvidenceBuilder b(*w.tpm, cl, cfg);
      // The daemon (re)started while vm1 still ran (never released): its daemon_start record.
      w.cont["restart"] = b.Build(w.nonce, Snapshot("vm1"));
      // As `sovguardd release --force` does: the guests measured released, then the release.
      measure::MeasureGuest(cl, ts::GuestUuid("vm1"), false);
      const std::string detail = "released (forced): 1 taps/cgroups covered";
      cl.Measure(cel::EventKind::kEnforcementState, "enforcement", Sha256(detail), detail);
      w.cont["forced-release"] = b.Build(w.nonce, Snapshot(""));
    }
    size_t records = 0;
    {
      // The daemon started again with no guest running (not an interruption), then a plain
      // `sovguardctl release` (nothing covered, as release.cc measures it).
      measure::MeasurementLog cl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr11", 11});
      evidence::EvidenceBuilder b(*w.tpm, cl, cfg);
      const std::string detail = "released: 0 taps/cgroups covered";
      cl.Measure(cel::EventKind::kEnforcementState, "enforcement", Sha256(detail), detail);
      w.cont["plain-release"] = b.Build(w.nonce, Snapshot(""));
    }
    {
      // A daemon again, vm1 started under it; then the daemon dies (SIGKILL) between logging a
      // record and extending it.
      measure::MeasurementLog cl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr11", 11});
      measure::MeasureGuest(cl, ts::GuestUuid("vm1"), true);
      records = cl.size();
    }
    {
      const auto torn = cel::EncodeRecord(cel::MakeSovguardRecord(
          records, 11, {cel::EventKind::kEnforcementState, "tamper-scan", Sha256("x"), "clean"}));
      std::ofstream(w.tmp.path() / "pcr11" / "cel.bin", std::ios::binary | std::ios::app)
          .write(reinterpret_cast<const char*>(torn.data()),
                 static_cast<std::streamsize>(torn.size()));
      // The next daemon adopts vm1: its log opens "recovered" (the lost extend done now).
      measure::MeasurementLog cl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr11", 11});
      evidence::EvidenceBuilder b(*w.tpm, cl, cfg);
      w.cont["crash"] = b.Build(w.nonce, Snapshot("vm1"));
    }
    {
      // A log that never applied a policy nor measured a component (PCR 12: only the daemon's
      // start), with a snapshot that claims a policy.
      measure::MeasurementLog pl(*w.tpm, measure::MeasureConfig{w.tmp.path() / "pcr12", 12});
      evidence::EvidenceBuilder b(*w.tpm, pl, cfg);
      w.no_policy = b.Build(w.nonce, Snapshot(""));
    }
    cfg.ak_handle = 0x81018001;
    cfg.ak_alg = tpm::KeyAlg::kRsa2048;
    {
      evidence::EvidenceBuilder rb(*w.tpm, *w.log, cfg);
      w.rsa = rb.Build(w.nonce, Snapshot("vm1"));
    }
    {
      // The RSA AK's name, but activation attempted with the ECC AK (the only AK the "node"
      // answers with): the TPM refuses, so no secret comes back.
      evidence::EvidenceBuilder b(*w.tpm, *w.log, evidence::EvidenceConfig{});
      const Bytes ek = B(b.Identity().ek_public_rsa()), ak = B(w.rsa.ak().name());
      auto c = verify::MakeAkChallenge(ek, ak);
      w.bind_wrong_ak = {ek, ak, c.secret, {}, ""};
      try {
        w.bind_wrong_ak.returned_secret =
            b.ActivateCredential(c.credential_blob, c.encrypted_secret);
      } catch (const AttestationError& e) {
        w.bind_wrong_ak.error = e.what();
      }
    }
    {
      // sovguardd restarts where every path gets its strongest mechanism: it measures no
      // downgrade, so the strongest snapshot is genuine and a reported downgrade is not.
      w.log.reset();
      w.log = std::make_unique<measure::MeasurementLog>(
          *w.tpm, measure::MeasureConfig{w.tmp.path() / "state", measure::kDefaultSovguardPcr});
      evidence::EvidenceBuilder b(*w.tpm, *w.log, ecc_cfg);
      w.coverage["strongest"] = b.Build(w.nonce, CoverageSnapshots().at("strongest"));
      w.coverage["unmeasured-downgrade"] = b.Build(w.nonce, Snapshot("vm1"));
    }
    // And once more on a kernel without BPF LSM: storage-open downgraded, measured.
    w.log.reset();
    w.log = std::make_unique<measure::MeasurementLog>(
        *w.tpm, measure::MeasureConfig{w.tmp.path() / "state", measure::kDefaultSovguardPcr});
    ts::MeasureMechanisms(*w.log);
    {
      // vm1 goes away: a snapshot without it passes, one still listing it does not.
      measure::MeasureGuest(*w.log, ts::GuestUuid("vm1"), false);
      evidence::EvidenceBuilder b(*w.tpm, *w.log, ecc_cfg);
      w.coverage["released"] = b.Build(w.nonce, Snapshot(""));
      w.coverage["released-listed"] = b.Build(w.nonce, Snapshot("vm1"));
      // A guest event that is neither "covered" nor "released".
      w.log->Measure(cel::EventKind::kEnforcementState,
                     std::string(cel::kGuestEventPrefix) + ts::GuestUuid("vm1"), Sha256("paused"),
                     "paused");
      w.coverage["odd-guest-event"] = b.Build(w.nonce, Snapshot(""));
      // A downgrade event without the daemon's {"path", "to", ...} detail.
      w.log->Measure(cel::EventKind::kMechanismDowngraded, "storage-open", Sha256("x"), "lsm");
      w.coverage["odd-mechanism-event"] = b.Build(w.nonce, Snapshot(""));
    }
    w.log.reset();
    w.tpm.reset();
    // Regenerates the committed unit-test / fuzz seed from real evidence on request.
    if (const char* seed = std::getenv("SOVGUARD_VERIFY_WRITE_SEED")) {
      WriteFileAtomic(std::filesystem::path(seed) / "genuine-ecc.json", evidence::ToJson(w.ecc));
      WriteFileAtomic(std::filesystem::path(seed) / "genuine-rsa.pb", w.rsa.SerializeAsString());
      WriteFileAtomic(std::filesystem::path(seed) / "genuine-strongest.pb",
                      w.coverage.at("strongest").SerializeAsString());
      // The swtpm local CA root that issued the EK certificates in the committed evidence.
      const auto ca = std::filesystem::path(seed) / "../../data/ek-ca";
      std::filesystem::create_directories(ca);
      WriteFileAtomic(ca / "swtpm-localca-rootca-cert.pem",
                      ReadFileBytes(w.swtpm.ca_dir() / "swtpm-localca-rootca-cert.pem"));
      WriteFileAtomic(ca / "issuercert.pem", ReadFileBytes(w.swtpm.ca_dir() / "issuercert.pem"));
      // The auditor's anchors for the committed evidence: enrolled AKs, manifest and its key.
      const auto anchors = std::filesystem::path(seed) / "../../data/anchors";
      std::filesystem::create_directories(anchors);
      WriteFileAtomic(anchors / "ak-ecc.pem", w.ecc.ak().public_pem());
      WriteFileAtomic(anchors / "ak-rsa.pem", w.rsa.ak().public_pem());
      WriteFileAtomic(anchors / "manifest.dsse.json", *w.manifest_envelope);
      WriteFileAtomic(anchors / "manifest.pub", w.manifest_pub);
    }
  }
  static void TearDownTestSuite() {
    delete world;
    world = nullptr;
  }

  // The auditor's anchors: the enrolled AK (the world's ECC or RSA AK, as the evidence names),
  // the world's manifest, the policy the test node applies, and swtpm accepted by name.
  static verify::Options Opts(const v1::Evidence& ev, std::optional<Bytes> nonce = std::nullopt,
                              std::optional<std::string> ak_pub = std::nullopt) {
    verify::Options o;
    o.nonce = nonce ? nonce : world->nonce;
    o.ak_pub_pem = ak_pub
                       ? std::move(ak_pub)
                       : (ev.ak().name() == world->rsa.ak().name() ? world->rsa.ak().public_pem()
                                                                   : world->ecc.ak().public_pem());
    o.manifest_envelope = world->manifest_envelope;
    o.manifest_key_pem = world->manifest_pub;
    o.waivers = {"software-tpm"};
    o.policy_digest = ts::TestPolicyDigest();
    return o;
  }
  verify::Report Run(const v1::Evidence& ev, std::optional<Bytes> nonce = std::nullopt,
                     std::optional<std::string> ak_pub = std::nullopt) {
    return verify::Verify(ev, Opts(ev, std::move(nonce), std::move(ak_pub)));
  }
  // The named check failed with `reason`, and so did the verdict.
  static void ExpectFail(const verify::Report& r, const std::string& check,
                         std::string_view reason) {
    EXPECT_FALSE(r.passed()) << verify::RenderText(r);
    const auto* c = r.Find(check);
    ASSERT_NE(c, nullptr) << "no check " << check;
    EXPECT_EQ(c->status, Status::kFail) << verify::RenderText(r);
    EXPECT_EQ(c->reason, reason) << verify::RenderText(r);
  }
  static v1::Evidence WithCel(const v1::Evidence& ev, const std::vector<cel::Record>& recs) {
    auto out = ev;
    out.mutable_logs()->set_cel(S(cel::EncodeLog(recs)));
    return out;
  }
  static std::vector<cel::Record> Cel(const v1::Evidence& ev) {
    return cel::DecodeLog(B(ev.logs().cel()));
  }
};

TEST_F(VerifyTest, GenuineEvidencePassesEveryCheck) {
  for (const auto* ev : {&world->ecc, &world->rsa, &world->other_snapshot}) {
    auto r = Run(*ev);
    EXPECT_TRUE(r.passed()) << verify::RenderText(r);
    for (const char* name : {"quote.structure",
                             "ak.consistency",
                             "quote.signature",
                             "nonce",
                             "snapshot.digest",
                             "snapshot.copy",
                             "quote.qualifying_data",
                             "quote.clock",
                             "quote.pcr_digest",
                             "eventlog.cel.decode",
                             "eventlog.cel.events",
                             "eventlog.cel.replay",
                             "policy.bundle",
                             "snapshot.coverage",
                             "snapshot.mechanisms",
                             "eventlog.uefi",
                             "eventlog.ima",
                             "enforcement.continuity",
                             "trust.root",
                             "manifest.signature",
                             "manifest.components",
                             "manifest.jurisdiction",
                             "manifest.ima"}) {
      const auto* c = r.Find(name);
      ASSERT_NE(c, nullptr) << name;
      EXPECT_EQ(c->status, Status::kPass) << name << ": " << c->detail;
    }
  }
  // JSON report: every check with name, status, reason, detail.
  auto j = nlohmann::json::parse(verify::RenderJson(Run(world->ecc)));
  EXPECT_EQ(j["verdict"], "pass");
  EXPECT_EQ(j["node"], "verify-node");
  ASSERT_GE(j["checks"].size(), 12u);
  for (const auto& c : j["checks"]) {
    EXPECT_TRUE(c.contains("name") && c.contains("status") && c.contains("reason") &&
                c.contains("detail") && c.contains("clauses"));
  }
  // swtpm, accepted by name: listed as waived with its reason, never as passed.
  EXPECT_EQ(Run(world->ecc).Find("tpm.hardware")->status, Status::kWaived);
  EXPECT_EQ(Run(world->ecc).Find("tpm.hardware")->reason, verify::kReasonSoftwareTpm);
  EXPECT_EQ(j["waivers"], nlohmann::json({"software-tpm"}));
}

// Root resets PCR 16 (resettable from locality 0), extends a clean log into it and declares
// logs.sovguard_pcr = 16: every signature is genuine, the log replays to the quoted PCR 16. The
// verifier pins sovguard's PCR (13 unless --sovguard-pcr), so the evidence is not sovguard's.
// (Before the PCR was pinned this evidence passed: the hole.)
TEST_F(VerifyTest, ResettablePcr16LogIsNotSovguards) {
  const auto& w = *world;
  ASSERT_EQ(w.pcr16.logs().sovguard_pcr(), 16u);
  // With every anchor an auditor has (enrolled AK, manifest), only the PCR gives it away.
  auto r = Run(w.pcr16);
  ExpectFail(r, "eventlog.cel.replay", verify::kReasonCelPcrUnexpected);
  for (const auto& c : r.checks) {
    if (c.status == Status::kFail) {
      EXPECT_TRUE(c.name == "eventlog.cel.replay" || c.reason == verify::kReasonDependencyFailed)
          << c.name << " " << c.reason;
    }
  }
  // Nor can the auditor be talked into it: PCRs the host can reset are refused.
  auto o = Opts(w.pcr16);
  o.sovguard_pcr = 16;
  EXPECT_THROW(verify::Verify(w.pcr16, o), verify::InputError);
  // And root can indeed reset PCR 16 on this TPM (locality 0), as the forgery assumes.
  auto reset = ts::Run({"tpm2_pcrreset", "-T", w.swtpm.tcti(), "16"});
  EXPECT_EQ(reset.exit_code, 0) << reset.output;
}

TEST_F(VerifyTest, ForgedSignatureFails) {
  auto ev = world->ecc;
  ev.mutable_quote()->mutable_signature()->back() ^= 1;  // inside ECDSA s
  ExpectFail(Run(ev), "quote.signature", verify::kReasonSignatureInvalid);
  auto rsa = world->rsa;
  rsa.mutable_quote()->mutable_signature()->back() ^= 1;
  ExpectFail(Run(rsa), "quote.signature", verify::kReasonSignatureInvalid);
  // Signature of another quote (same AK): valid signature, wrong message.
  auto swapped = world->ecc;
  swapped.mutable_quote()->set_signature(world->other_snapshot.quote().signature());
  ExpectFail(Run(swapped), "quote.signature", verify::kReasonSignatureInvalid);
  // Altered signed bytes.
  auto msg = world->ecc;
  msg.mutable_quote()->mutable_attest()->back() ^= 1;
  ExpectFail(Run(msg), "quote.signature", verify::kReasonSignatureInvalid);
  // Garbage signature structure.
  auto garbage = world->ecc;
  garbage.mutable_quote()->set_signature("\x00\x01", 2);
  ExpectFail(Run(garbage), "quote.signature", verify::kReasonSignatureMalformed);
}

TEST_F(VerifyTest, AkMustBeTheEnrolledOneWhenGiven) {
  const auto& w = *world;
  auto ok = Run(w.ecc, std::nullopt, w.ecc.ak().public_pem());
  EXPECT_TRUE(ok.passed()) << verify::RenderText(ok);
  EXPECT_EQ(ok.Find("ak.enrolled")->status, Status::kPass);
  // Evidence whose AK was swapped for another TPM key: the enrolled key does not verify it.
  auto r = Run(w.rsa, std::nullopt, w.ecc.ak().public_pem());
  ExpectFail(r, "ak.enrolled", verify::kReasonAkNotEnrolled);
  EXPECT_EQ(r.Find("quote.signature")->reason, verify::kReasonSignatureInvalid);
  // A self-consistent AK block that does not belong to the signer.
  auto swapped = w.ecc;
  *swapped.mutable_ak() = w.rsa.ak();
  ExpectFail(Run(swapped), "quote.signature", verify::kReasonSignatureInvalid);
  // Inconsistent AK block: PEM of another key.
  auto mixed = w.ecc;
  mixed.mutable_ak()->set_public_pem(w.rsa.ak().public_pem());
  ExpectFail(Run(mixed), "ak.consistency", verify::kReasonAkInconsistent);
  // Another P-256 key (the PEM the verifier renders itself for P-256 differs: the keys are then
  // compared, and differ).
  {
    auto other = base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
    base::BioPtr bio(BIO_new(BIO_s_mem()));
    PEM_write_bio_PUBKEY(bio.get(), other.get());
    char* pem = nullptr;
    const long n = BIO_get_mem_data(bio.get(), &pem);
    auto p256 = w.ecc;
    p256.mutable_ak()->set_public_pem(std::string(pem, static_cast<size_t>(n)));
    ExpectFail(Run(p256), "ak.consistency", verify::kReasonAkInconsistent);
    // The right key in other PEM line breaks: the same key, so consistent.
    std::string text = w.ecc.ak().public_pem();
    text.erase(std::remove(text.begin(), text.end(), '\n'), text.end());
    text.insert(text.find("-----END"), "\n");
    text.insert(text.find("KEY-----") + 8, "\n");
    auto reflowed = w.ecc;
    reflowed.mutable_ak()->set_public_pem(text + "\n");
    auto rr = Run(reflowed);
    EXPECT_EQ(rr.Find("ak.consistency")->status, Status::kPass) << verify::RenderText(rr);
  }
  EXPECT_THROW(Run(w.ecc, std::nullopt, "not a key"), verify::InputError);
}

TEST_F(VerifyTest, AkBoundToEkByCredentialActivation) {
  const auto& w = *world;
  auto with = [&](const v1::Evidence& ev, const verify::AkEkBinding& b) {
    auto o = Opts(ev);
    o.ak_pub_pem.reset();  // rooted by credential activation and the EK chain alone
    o.ak_ek_binding = b;
    o.ek_ca_dir = w.swtpm.ca_dir();
    return verify::Verify(ev, o);
  };
  auto r = with(w.ecc, w.bind_ok);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("trust.root")->status, Status::kPass) << r.Find("trust.root")->detail;
  EXPECT_EQ(r.Find("ak.ek_binding")->status, Status::kPass) << r.Find("ak.ek_binding")->detail;
  // Without a challenge the check is listed as not applicable, never as passed.
  EXPECT_EQ(Run(w.ecc).Find("ak.ek_binding")->status, Status::kNotApplicable);
  // The TPM could not activate a credential made for the RSA AK with the ECC AK.
  EXPECT_TRUE(w.bind_wrong_ak.returned_secret.empty());
  EXPECT_FALSE(w.bind_wrong_ak.error.empty());
  ExpectFail(with(w.rsa, w.bind_wrong_ak), "ak.ek_binding", verify::kReasonAkNotBoundToEk);
  // A binding proven for one AK does not vouch for evidence signed by another.
  ExpectFail(with(w.rsa, w.bind_ok), "ak.ek_binding", verify::kReasonAkNotBoundToEk);
  // A wrong secret (e.g. replayed from an earlier challenge).
  auto replayed = w.bind_ok;
  replayed.expected_secret[0] ^= 1;
  ExpectFail(with(w.ecc, replayed), "ak.ek_binding", verify::kReasonAkNotBoundToEk);
  // An EK the evidence has no certificate for (the challenge went to another TPM's EK).
  auto no_cert = w.ecc;
  no_cert.clear_ek_certificates();
  ExpectFail(with(no_cert, w.bind_ok), "ak.ek_binding", verify::kReasonAkNotBoundToEk);
}

TEST_F(VerifyTest, WrongNonceFails) {
  auto r = Run(world->ecc, B("some-other-nonce-987654"));
  ExpectFail(r, "nonce", verify::kReasonNonceMismatch);
  // The leaf of the auditor's nonce is not the one the proof is for.
  EXPECT_EQ(r.Find("quote.qualifying_data")->reason, verify::kReasonMerkleLeafMismatch);
  // A replayed old quote relabelled with the fresh nonce: the signed binding gives it away.
  auto relabelled = world->ecc;
  relabelled.set_nonce("some-other-nonce-987654");
  auto r2 = Run(relabelled, B("some-other-nonce-987654"));
  EXPECT_EQ(r2.Find("nonce")->status, Status::kPass);
  ExpectFail(r2, "quote.qualifying_data", verify::kReasonMerkleLeafMismatch);
  // ... and with the leaf recomputed for the fresh nonce, its path reaches another root.
  auto releafed = relabelled;
  releafed.mutable_inclusion()->set_leaf(
      S(evidence::LeafHash(B("some-other-nonce-987654"), Sha256(B(releafed.snapshot_bytes())),
                           B(releafed.inclusion().salt()))));
  ExpectFail(Run(releafed, B("some-other-nonce-987654")), "quote.qualifying_data",
             verify::kReasonMerkleRootMismatch);
  // No expected nonce: freshness is not established, never assumed.
  auto r3 = verify::Verify(world->ecc, {});
  ExpectFail(r3, "nonce", verify::kReasonNonceMismatch);
}

// The signed snapshot carries a field this verifier does not know: it cannot say what the field
// claims, so the snapshot is not accepted (the binary evidence keeps it in the readable copy
// too). (Before: PASS, the field ignored.)
TEST_F(VerifyTest, SnapshotWithAnUnknownFieldFails) {
  const auto& ev = world->coverage.at("unknown-field");
  ExpectFail(Run(ev), "snapshot.copy", verify::kReasonSnapshotUnknownField);
  EXPECT_NE(Run(ev).Find("snapshot.copy")->detail.find("99"), std::string::npos);
  // As the binary protobuf an auditor receives, too.
  const std::string wire = ev.SerializeAsString();
  ExpectFail(verify::Verify(verify::ParseEvidenceView(B(wire)), Opts(ev)), "snapshot.copy",
             verify::kReasonSnapshotUnknownField);
}

TEST_F(VerifyTest, SwappedSnapshotFails) {
  auto ev = world->ecc;
  ev.set_snapshot_bytes(world->other_snapshot.snapshot_bytes());
  ExpectFail(Run(ev), "snapshot.digest", verify::kReasonSnapshotDigestMismatch);
  ev.set_snapshot_sha256(world->other_snapshot.snapshot_sha256());
  *ev.mutable_snapshot() = world->other_snapshot.snapshot();
  auto r = Run(ev);
  EXPECT_EQ(r.Find("snapshot.digest")->status, Status::kPass);
  ExpectFail(r, "quote.qualifying_data", verify::kReasonMerkleLeafMismatch);
  auto copy = world->ecc;
  copy.mutable_snapshot()->set_node("elsewhere");
  ExpectFail(Run(copy), "snapshot.copy", verify::kReasonSnapshotCopyMismatch);
}

TEST_F(VerifyTest, TamperedCelEntryFails) {
  auto recs = Cel(world->ecc);
  ASSERT_EQ(recs.size(), 7u);  // daemon start + 6 measurements
  // Content changed, digest left: the record no longer checks out.
  auto t = recs;
  t[2].content.back() ^= 1;
  ExpectFail(Run(WithCel(world->ecc, t)), "eventlog.cel.replay", verify::kReasonCelEntryTampered);
  // Content and digest both rewritten consistently: the PCR does not replay.
  auto t2 = recs;
  t2[2] = cel::MakeSovguardRecord(2, recs[2].pcr,
                                  {cel::EventKind::kBpfObject, "evil.bpf.o", Sha256("evil"), ""});
  ExpectFail(Run(WithCel(world->ecc, t2)), "eventlog.cel.replay", verify::kReasonCelReplayMismatch);
  // Raw byte flip inside the log (any byte): never passes.
  auto raw = world->ecc;
  raw.mutable_logs()->mutable_cel()->at(raw.logs().cel().size() / 2) ^= 0x10;
  {
    const auto rr = Run(raw);
    EXPECT_FALSE(rr.passed());
    // Wherever the flipped bit lands: the log does not decode, names an unknown event, or no
    // longer replays; never a pass of the replay.
    const auto* c = rr.Find("eventlog.cel.replay");
    EXPECT_EQ(c->status, Status::kFail);
    EXPECT_TRUE(c->reason == verify::kReasonCelEntryTampered ||
                c->reason == verify::kReasonCelReplayMismatch ||
                c->reason == verify::kReasonDependencyFailed ||
                c->reason == verify::kReasonCelSequenceBroken ||
                c->reason == verify::kReasonCelWrongPcr)
        << verify::RenderText(rr);
  }
  // Truncated log.
  auto trunc = world->ecc;
  trunc.mutable_logs()->mutable_cel()->resize(trunc.logs().cel().size() - 3);
  ExpectFail(Run(trunc), "eventlog.cel.decode", verify::kReasonCelMalformed);
}

// Continuous attestation: a later CEL of the same AK that extends one already replayed hashes
// only its new records, and the verdict is the same as without the cache, check for check;
// tampering before or after the remembered prefix is still found.
TEST_F(VerifyTest, ReplayCacheHashesOnlyNewRecordsAndChangesNoVerdict) {
  const auto& c = world->coverage;
  // Evidence in the order the node produced it: each CEL extends the previous one.
  const std::vector<const v1::Evidence*> seq = {&world->ecc, &c.at("claims-strongest"),
                                                &c.at("strongest"), &c.at("released"),
                                                &c.at("odd-mechanism-event")};
  verify::ReplayCache cache;
  verify::Options cached = Opts(world->ecc);
  cached.replay_cache = &cache;
  for (size_t i = 0; i < seq.size(); ++i) {
    const auto with = verify::Verify(*seq[i], cached);
    const auto without = Run(*seq[i]);
    ASSERT_EQ(with.checks.size(), without.checks.size());
    for (size_t k = 0; k < with.checks.size(); ++k) {
      EXPECT_EQ(with.checks[k].status, without.checks[k].status) << i << " " << with.checks[k].name;
      EXPECT_EQ(with.checks[k].reason, without.checks[k].reason) << i << " " << with.checks[k].name;
    }
    const auto& replay = with.Find("eventlog.cel.replay")->detail;
    EXPECT_EQ(replay.find("as remembered") != std::string::npos, i > 0) << i << ": " << replay;
  }
  EXPECT_EQ(cache.stats().hits, seq.size() - 1);
  EXPECT_EQ(cache.stats().entries, 1u);
  EXPECT_EQ(cache.stats().bytes, c.at("odd-mechanism-event").logs().cel().size());

  // Start again from w.ecc remembered, then alter the later evidence.
  verify::ReplayCache fresh;
  cached.replay_cache = &fresh;
  ASSERT_TRUE(verify::Verify(world->ecc, cached).passed());
  const size_t known = Cel(world->ecc).size();
  const auto later = c.at("released");
  auto recs = Cel(later);
  ASSERT_GT(recs.size(), known + 1);
  // Inside the remembered prefix, rewritten consistently: not a prefix any more, full replay.
  auto t = recs;
  t[2] = cel::MakeSovguardRecord(2, recs[2].pcr,
                                 {cel::EventKind::kBpfObject, "evil.bpf.o", Sha256("evil"), ""});
  ExpectFail(verify::Verify(WithCel(later, t), cached), "eventlog.cel.replay",
             verify::kReasonCelReplayMismatch);
  // After it: a content that does not hash to its digest is named by its own record number.
  t = recs;
  t[known].content.back() ^= 1;
  auto r = verify::Verify(WithCel(later, t), cached);
  ExpectFail(r, "eventlog.cel.replay", verify::kReasonCelEntryTampered);
  EXPECT_NE(r.Find("eventlog.cel.replay")->detail.find("record " + std::to_string(known) + ":"),
            std::string::npos)
      << r.Find("eventlog.cel.replay")->detail;
  // A record dropped after the prefix: the PCR does not replay.
  t = recs;
  t.erase(t.begin() + static_cast<std::ptrdiff_t>(known));
  for (size_t i = known; i < t.size(); ++i) t[i].recnum = i;
  ExpectFail(verify::Verify(WithCel(later, t), cached), "eventlog.cel.replay",
             verify::kReasonCelReplayMismatch);
  // None of these poisoned the cache: the genuine evidence still passes, from the prefix (its
  // log has the restart while vm1 ran, accepted by name).
  cached.waivers.push_back("interruptions");
  r = verify::Verify(later, cached);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_NE(r.Find("eventlog.cel.replay")->detail.find(std::to_string(known) + " of them"),
            std::string::npos);
}

TEST_F(VerifyTest, MissingEventFails) {
  auto recs = Cel(world->ecc);
  auto last = recs;
  last.pop_back();
  ExpectFail(Run(WithCel(world->ecc, last)), "eventlog.cel.replay",
             verify::kReasonCelReplayMismatch);
  auto middle = recs;
  middle.erase(middle.begin() + 1);
  const auto broken = Run(WithCel(world->ecc, middle));
  ExpectFail(broken, "eventlog.cel.replay", verify::kReasonCelSequenceBroken);
  EXPECT_NE(broken.Find("eventlog.cel.replay")->detail.find("record 1 has recnum 2 (expected 1)"),
            std::string::npos)
      << broken.Find("eventlog.cel.replay")->detail;
  ExpectFail(Run(WithCel(world->ecc, {})), "eventlog.cel.replay", verify::kReasonCelReplayMismatch);
}

TEST_F(VerifyTest, ExtraEventFails) {
  auto recs = Cel(world->ecc);
  recs.push_back(cel::MakeSovguardRecord(
      recs.size(), recs[0].pcr,
      {cel::EventKind::kPolicyApplied, "bundle-2", Sha256("bundle2"), "enforce"}));
  ExpectFail(Run(WithCel(world->ecc, recs)), "eventlog.cel.replay",
             verify::kReasonCelReplayMismatch);
  // An event for another PCR smuggled into sovguard's log.
  auto other = Cel(world->ecc);
  other.push_back(cel::MakeSovguardRecord(
      other.size(), 16, {cel::EventKind::kEnforcementState, "x", Sha256("x"), ""}));
  const auto smuggled = Run(WithCel(world->ecc, other));
  ExpectFail(smuggled, "eventlog.cel.replay", verify::kReasonCelWrongPcr);
  EXPECT_NE(smuggled.Find("eventlog.cel.replay")
                ->detail.find("record " + std::to_string(other.size() - 1) + " extends PCR 16"),
            std::string::npos)
      << smuggled.Find("eventlog.cel.replay")->detail;
}

TEST_F(VerifyTest, UnknownEventTypeIsReportedNotAccepted) {
  auto recs = Cel(world->ecc);
  cel::Record r;
  r.recnum = recs.size();
  r.pcr = recs[0].pcr;
  r.content_type = cel::kContentMgmt;
  r.content = B("something");
  r.digest = Sha256(r.content);
  recs.push_back(r);
  auto rep = Run(WithCel(world->ecc, recs));
  ExpectFail(rep, "eventlog.cel.events", verify::kReasonCelUnknownEvent);
  EXPECT_NE(rep.Find("eventlog.cel.events")
                ->detail.find("record 7: content type " + std::to_string(cel::kContentMgmt)),
            std::string::npos)
      << rep.Find("eventlog.cel.events")->detail;
  EXPECT_EQ(rep.Find("eventlog.cel.replay")->status, Status::kFail);
}

TEST_F(VerifyTest, PcrValueMismatchFails) {
  auto ev = world->ecc;
  ev.mutable_quote()->mutable_pcrs(0)->mutable_sha256()->at(0) ^= 1;
  ExpectFail(Run(ev), "quote.pcr_digest", verify::kReasonPcrDigestMismatch);
  // The sovguard PCR rewritten to match a forged log: the signed digest still catches it.
  auto recs = Cel(world->ecc);
  recs.pop_back();
  auto forged = WithCel(world->ecc, recs);
  auto replayed = cel::Replay(recs).at(measure::kDefaultSovguardPcr);
  forged.mutable_quote()->mutable_pcrs(11)->set_sha256(S(replayed));
  auto r = Run(forged);
  ExpectFail(r, "quote.pcr_digest", verify::kReasonPcrDigestMismatch);
  ExpectFail(r, "eventlog.cel.replay", verify::kReasonDependencyFailed);
  // A PCR dropped from the list: the signed selection disagrees.
  auto dropped = world->ecc;
  dropped.mutable_quote()->mutable_pcrs()->RemoveLast();
  ExpectFail(Run(dropped), "quote.pcr_digest", verify::kReasonPcrSelectionMismatch);
}

TEST_F(VerifyTest, EkCertificateChainsToTrustedCa) {
  const auto& w = *world;
  auto with_ca = [&](const v1::Evidence& ev, const std::filesystem::path& dir) {
    auto o = Opts(ev);
    o.ek_ca_dir = dir;
    return verify::Verify(ev, o);
  };
  auto r = with_ca(w.ecc, w.swtpm.ca_dir());
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("ek.chain")->status, Status::kPass) << r.Find("ek.chain")->detail;
  // The chained EK certificate is swtpm's: a software TPM, accepted only by name.
  EXPECT_EQ(r.Find("tpm.hardware")->status, Status::kWaived);
  EXPECT_EQ(r.Find("tpm.hardware")->reason, verify::kReasonSoftwareTpm);
  {
    auto strict = Opts(w.ecc);
    strict.ek_ca_dir = w.swtpm.ca_dir();
    strict.waivers.clear();
    ExpectFail(verify::Verify(w.ecc, strict), "tpm.hardware", verify::kReasonSoftwareTpm);
  }
  // Pinning the intermediate alone is the auditor's choice and works too.
  const auto inter = w.tmp.path() / "ek-inter";
  std::filesystem::create_directories(inter);
  std::filesystem::copy_file(w.swtpm.ca_dir() / "issuercert.pem", inter / "i.pem",
                             std::filesystem::copy_options::overwrite_existing);
  EXPECT_EQ(with_ca(w.ecc, inter).Find("ek.chain")->status, Status::kPass);
  // A CA the EK certificates do not come from.
  const auto other = w.tmp.path() / "ek-other";
  std::filesystem::create_directories(other);
  auto gen =
      ts::Run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
               "-nodes", "-subj", "/CN=swtpm-localca-rootca", "-days", "2", "-keyout",
               (w.tmp.path() / "other.key").string(), "-out", (other / "root.pem").string()});
  ASSERT_EQ(gen.exit_code, 0) << gen.output;
  ExpectFail(with_ca(w.ecc, other), "ek.chain", verify::kReasonEkChainUntrusted);
  // No EK certificate, or a broken one.
  auto none = w.ecc;
  none.clear_ek_certificates();
  ExpectFail(with_ca(none, w.swtpm.ca_dir()), "ek.chain", verify::kReasonEkCertMissing);
  auto broken = w.ecc;
  broken.mutable_ek_certificates(0)->mutable_der()->resize(40);
  ExpectFail(with_ca(broken, w.swtpm.ca_dir()), "ek.chain", verify::kReasonEkCertMalformed);
  // A folder without certificates is a usage error, not a verdict.
  const auto empty = w.tmp.path() / "ek-empty";
  std::filesystem::create_directories(empty);
  EXPECT_THROW(with_ca(w.ecc, empty), verify::InputError);
  EXPECT_THROW(with_ca(w.ecc, w.tmp.path() / "no-such-dir"), verify::InputError);
}

TEST_F(VerifyTest, UefiLogMustReplayToTheBootPcrs) {
  const auto& w = *world;
  // One event's SHA-256 digest altered in place.
  auto log = verify::uefi::Parse(B(w.ecc.logs().uefi_tcg2()));
  ASSERT_GT(log.events.size(), 5u);
  auto tampered = w.ecc;
  const auto& target = log.events[3];
  const auto at = tampered.logs().uefi_tcg2().find(S(target.sha256), target.offset);
  ASSERT_NE(at, std::string::npos);
  tampered.mutable_logs()->mutable_uefi_tcg2()->at(at) ^= 1;
  ExpectFail(Run(tampered), "eventlog.uefi", verify::kReasonUefiReplayMismatch);
  // An event dropped: cut the log before the last event.
  auto cut = w.ecc;
  cut.mutable_logs()->mutable_uefi_tcg2()->resize(log.events.back().offset);
  ExpectFail(Run(cut), "eventlog.uefi", verify::kReasonUefiReplayMismatch);
  // Garbage and empty logs.
  for (const char* f : {"binary_bios_measurements-bogus", "binary_bios_measurements-empty"}) {
    auto bad = w.ecc;
    bad.mutable_logs()->set_uefi_tcg2(S(
        ReadFileBytes(std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) / "eventlogs/keylime" / f)));
    ExpectFail(Run(bad), "eventlog.uefi", verify::kReasonUefiLogMalformed);
  }
  // An event's type rewritten to one the TCG profile does not define: the digests still replay
  // (the type is not hashed), but the event is reported, not accepted.
  auto typed = w.ecc;
  const size_t type_at = log.events[3].offset + 4;
  for (int i = 0; i < 4; ++i) typed.mutable_logs()->mutable_uefi_tcg2()->at(type_at + i) = '\x7e';
  auto tr = Run(typed);
  ExpectFail(tr, "eventlog.uefi", verify::kReasonUefiUnknownEvent);
  EXPECT_NE(tr.Find("eventlog.uefi")->detail.find("type 0x7e7e7e7e"), std::string::npos);
  // Another machine's (real) log.
  auto other = w.ecc;
  other.mutable_logs()->set_uefi_tcg2(
      S(ReadFileBytes(std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
                      "eventlogs/keylime/binary_bios_measurements")));
  ExpectFail(Run(other), "eventlog.uefi", verify::kReasonUefiReplayMismatch);
}

TEST_F(VerifyTest, ImaListMustReplayToPcr10) {
  const auto& w = *world;
  const std::string list = w.ecc.logs().ima_ascii();
  ASSERT_FALSE(list.empty());
  auto with_list = [&](const std::string& l) {
    auto ev = w.ecc;
    ev.mutable_logs()->set_ima_ascii(l);
    return Run(ev);
  };
  EXPECT_EQ(Run(w.ecc).Find("eventlog.ima")->status, Status::kPass);
  // The listed SHA-1 template hash altered: the SHA-256 replay still matches, the entry does not.
  auto sha1 = list;
  sha1[3] = sha1[3] == 'a' ? 'b' : 'a';
  ExpectFail(with_list(sha1), "eventlog.ima", verify::kReasonImaEntryTampered);
  // Another file name: the SHA-256 bank no longer replays.
  auto renamed = list;
  renamed.replace(renamed.find("/data"), 5, "/date");
  ExpectFail(with_list(renamed), "eventlog.ima", verify::kReasonImaReplayMismatch);
  // An entry dropped.
  ExpectFail(with_list(list.substr(0, list.find('\n') + 1)), "eventlog.ima",
             verify::kReasonImaReplayMismatch);
  // An entry appended after the quote: the quoted prefix still verifies, and says so.
  auto grown = list + list.substr(list.find('\n') + 1);
  auto r = with_list(grown);
  EXPECT_EQ(r.Find("eventlog.ima")->status, Status::kPass) << r.Find("eventlog.ima")->detail;
  EXPECT_NE(r.Find("eventlog.ima")->detail.find("1 later entries"), std::string::npos);
  // A template the verifier cannot replay: reported, not accepted.
  ExpectFail(with_list(list + "10 " + std::string(40, '1') +
                       " ima-future sha256:" + std::string(64, '0') + " /future\n"),
             "eventlog.ima", verify::kReasonImaUnknownTemplate);
  // Bogus and empty lists.
  ExpectFail(with_list(""), "eventlog.ima", verify::kReasonImaLogMalformed);
  ExpectFail(with_list(S(ReadFileBytes(std::filesystem::path(SOVGUARD_SHARED_DATA_DIR) /
                                       "eventlogs/keylime/binary_bios_measurements-bogus"))),
             "eventlog.ima", verify::kReasonImaLogMalformed);
}

TEST_F(VerifyTest, ActivePolicyIsTheMeasuredAndExpectedOne) {
  const auto& w = *world;
  auto with_policy = [&](const v1::Evidence& ev, std::optional<Bytes> p) {
    auto o = Opts(ev);
    o.policy_digest = std::move(p);
    return verify::Verify(ev, o);
  };
  const auto bundle = Sha256("bundle");
  auto r = with_policy(w.ecc, Bytes(bundle.begin(), bundle.end()));
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_NE(r.Find("policy.bundle")->detail.find("bundle-1"), std::string::npos);
  const auto other = Sha256("other");
  ExpectFail(with_policy(w.ecc, Bytes(other.begin(), other.end())), "policy.bundle",
             verify::kReasonPolicyDigestMismatch);
  // Consistent, but the auditor named no policy: nobody approved it.
  ExpectFail(with_policy(w.ecc, std::nullopt), "policy.bundle",
             verify::kReasonExpectedPolicyMissing);
  // Signed, fresh, but the snapshot claims a policy the measurement log never applied.
  ExpectFail(with_policy(w.wrong_policy, std::nullopt), "policy.bundle",
             verify::kReasonPolicySnapshotMismatch);
  // A log that does not replay cannot vouch for the policy.
  auto recs = Cel(w.ecc);
  recs.pop_back();
  ExpectFail(with_policy(WithCel(w.ecc, recs), std::nullopt), "policy.bundle",
             verify::kReasonDependencyFailed);
  // An authentic log that never applied a policy, and a snapshot that claims one.
  auto o = Opts(w.no_policy);
  o.sovguard_pcr = 12;
  ExpectFail(verify::Verify(w.no_policy, o), "policy.bundle", verify::kReasonPolicyNotMeasured);
}

TEST_F(VerifyTest, ReplayedOldEvidenceFailsAgainstTheStateFile) {
  const auto& w = *world;
  const auto state = w.tmp.path() / "state-replay.json";
  std::filesystem::remove(state);
  auto with_state = [&](const v1::Evidence& ev) {
    auto o = Opts(ev);
    o.state_file = state;
    return verify::Verify(ev, o);
  };
  // `ecc` was quoted before `other_snapshot` by the same AK.
  auto r = with_state(w.other_snapshot);
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("quote.clock_monotonic")->status, Status::kPass);
  ASSERT_TRUE(std::filesystem::exists(state));
  ExpectFail(with_state(w.ecc), "quote.clock_monotonic", verify::kReasonEvidenceReplayed);
  ExpectFail(with_state(w.other_snapshot), "quote.clock_monotonic",
             verify::kReasonEvidenceReplayed);
  // Another AK has its own history.
  EXPECT_TRUE(with_state(w.rsa).passed());
  // A failed verdict never moves the state: forged evidence cannot poison it.
  const auto before = ReadFileBytes(state);
  auto forged = w.rsa;
  forged.mutable_quote()->mutable_signature()->back() ^= 1;
  ExpectFail(with_state(forged), "quote.signature", verify::kReasonSignatureInvalid);
  EXPECT_EQ(ReadFileBytes(state), before);
  // Counters behind the recorded ones: a rollback.
  auto j = nlohmann::json::parse(S(before));
  for (auto& [k, v] : j["aks"].items()) v["reset_count"] = v["reset_count"].get<uint32_t>() + 1;
  WriteFileAtomic(state, j.dump());
  ExpectFail(with_state(w.other_snapshot), "quote.clock_monotonic", verify::kReasonCounterRollback);
  // A corrupt state file is an input error, not a verdict.
  WriteFileAtomic(state, "{\"aks\": {\"x\": {\"clock_ms\": \"soon\"}}}");
  EXPECT_THROW(with_state(w.ecc), verify::InputError);
  WriteFileAtomic(state, "not json");
  EXPECT_THROW(with_state(w.ecc), verify::InputError);
  std::filesystem::remove(state);
}

// The real stack of this host, measured by MeasurePlatform into a swtpm, against a manifest
// drafted by `sovguardctl manifest scan` on the same host and signed: every component found.
TEST_F(VerifyTest, MeasuredPlatformMatchesAScannedManifest) {
  const auto& w = *world;
  const auto dir = w.tmp.path() / "platform";
  std::filesystem::create_directories(dir);
  measure::PlatformPaths paths;               // this host's QEMU, libvirtd, drivers, cmdline
  paths.kernel_image = dir / "vmlinuz-test";  // no /boot image on CI hosts
  WriteFileAtomic(paths.kernel_image, "test kernel image");
  v1::Evidence ev;
  {
    tpm::Tpm tpm(w.swtpm.tcti());
    measure::MeasurementLog log(tpm, {dir / "state", 15});
    measure::MeasurePlatform(log, paths);
    ts::MeasureMechanisms(log);
    evidence::EvidenceConfig cfg;
    cfg.node = "verify-node";
    cfg.uefi_log = dir / "none";
    cfg.ima_log = dir / "none";
    evidence::EvidenceBuilder b(tpm, log, cfg);
    v1::EnforcementSnapshot snap;
    snap.set_version(1);
    snap.set_node("verify-node");  // as the daemon: the evidence's node is the snapshot's
    ts::AddMechanisms(snap);
    ev = b.Build(w.nonce, snap);
  }
  cli::ScanOptions so;
  so.paths = paths;
  so.jurisdiction = "DE";
  so.issuer = "Test Certifier";
  auto m = cli::ScanHost(so);
  for (auto& c : m.components)  // the certifier's review
    for (auto* f : {&c.version, &c.supplier, &c.license})
      if (f->empty()) *f = "reviewed";
  auto key = base::EvpPkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  base::BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PUBKEY(bio.get(), key.get());
  char* pem = nullptr;
  const std::string pub(pem, static_cast<size_t>(BIO_get_mem_data(bio.get(), &pem)));
  auto verify_with = [&](const manifest::Manifest& mf) {
    auto o = Opts(ev);
    o.sovguard_pcr = 15;  // this log's
    // No UEFI or IMA list was collected for this evidence, and it applies no policy (the
    // manifest is what this test is about): accepted by name.
    o.policy_digest.reset();
    o.waivers = {"software-tpm", "boot-log", "ima", "policy"};
    o.manifest_envelope =
        std::make_shared<const std::string>(manifest::Sign(manifest::ToJson(mf), key.get()));
    o.manifest_key_pem = pub;
    return verify::Verify(ev, o);
  };
  auto r = verify_with(m);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("manifest.components")->status, Status::kPass);
  EXPECT_EQ(r.Find("manifest.boot")->status, Status::kPass) << r.Find("manifest.boot")->detail;
  // Drop the component owning QEMU: the measured QEMU binary is not approved.
  auto no_qemu = m;
  std::erase_if(no_qemu.components, [&](const manifest::Component& c) {
    return std::any_of(c.files.begin(), c.files.end(),
                       [&](const manifest::File& f) { return f.path == paths.qemu.string(); });
  });
  ASSERT_LT(no_qemu.components.size(), m.components.size());
  r = verify_with(no_qemu);
  ExpectFail(r, "manifest.components", verify::kReasonComponentNotInManifest);
  EXPECT_NE(r.Find("manifest.components")->detail.find("qemu_binary"), std::string::npos);
  // One supplier outside the EU/EEA.
  auto foreign = m;
  foreign.components.back().supplier_jurisdiction = "US";
  ExpectFail(verify_with(foreign), "manifest.jurisdiction", verify::kReasonSupplierJurisdiction);
  // Another kernel command line than the measured one.
  auto cmdline = m;
  cmdline.kernel_cmdlines = {"root=/dev/evil"};
  ExpectFail(verify_with(cmdline), "manifest.boot", verify::kReasonBootValueNotAccepted);
}

// A quote made by tpm2_quote (tpm2-tools) with the node's persistent AK verifies too.
TEST_F(VerifyTest, Tpm2QuoteFromTpm2ToolsVerifies) {
  const auto& w = *world;
  const auto dir = w.tmp.path() / "tpm2-quote";
  std::filesystem::create_directories(dir);
  const std::string nonce = "0011223344556677889900aabbccddeeff";
  auto q = ts::Run({"tpm2_quote", "-T", w.swtpm.tcti(), "-c", "0x81018000", "-l",
                    "sha256:0,1,2,3,4,5,6,7,8,9,10,13", "-q", nonce, "-g", "sha256", "-m",
                    (dir / "msg").string(), "-s", (dir / "sig").string(), "-o",
                    (dir / "pcrs").string()});
  ASSERT_EQ(q.exit_code, 0) << q.output;
  auto text = [&](const char* f) { return S(ReadFileBytes(dir / f)); };
  if (const char* seed = std::getenv("SOVGUARD_VERIFY_WRITE_SEED"))
    WriteFileAtomic(std::filesystem::path(seed) / "../tpm2-pcrs/tpm2_quote-12-pcrs.bin",
                    ReadFileBytes(dir / "pcrs"));
  verify::Tpm2QuoteFiles files{text("msg"), text("sig"), text("pcrs")};
  verify::Options opts{FromHex(nonce), w.ecc.ak().public_pem(), std::nullopt};
  auto r = verify::VerifyTpm2Quote(files, opts);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("quote.pcr_digest")->status, Status::kPass);
  // The PCR file carries the 12 selected PCRs; PCR 13 is the sovguard PCR of the evidence.
  auto pcrs = verify::ParseTpm2ToolsPcrs(B(files.pcrs));
  ASSERT_EQ(pcrs.pcrs_size(), 12);
  EXPECT_EQ(pcrs.pcrs(11).index(), 13u);
  // (the value of the last evidence built: measurements went on after w.ecc)
  EXPECT_EQ(pcrs.pcrs(11).sha256(), w.coverage.at("odd-mechanism-event").quote().pcrs(11).sha256());
  // Wrong nonce, other AK, altered PCR value, altered signature.
  ExpectFail(verify::VerifyTpm2Quote(files, {B("other-nonce-1234"), opts.ak_pub_pem, {}}), "nonce",
             verify::kReasonNonceMismatch);
  ExpectFail(verify::VerifyTpm2Quote(files, {opts.nonce, w.rsa.ak().public_pem(), {}}),
             "quote.signature", verify::kReasonSignatureInvalid);
  auto bad = files;  // first byte of PCR 0's value
  bad.pcrs[sizeof(TPML_PCR_SELECTION) + 4 + offsetof(TPML_DIGEST, digests) +
           offsetof(TPM2B_DIGEST, buffer)] ^= 1;
  ExpectFail(verify::VerifyTpm2Quote(bad, opts), "quote.pcr_digest",
             verify::kReasonPcrDigestMismatch);
  auto badsig = files;
  badsig.signature.back() ^= 1;
  ExpectFail(verify::VerifyTpm2Quote(badsig, opts), "quote.signature",
             verify::kReasonSignatureInvalid);
  auto trunc = files;
  trunc.pcrs.resize(10);
  EXPECT_THROW(verify::VerifyTpm2Quote(trunc, opts), verify::InputError);
  // The same through the binary.
  const std::string bin = std::string(SOVGUARD_BINARY_DIR) + "/attestation/verify/sovguard-verify";
  WriteFileAtomic(dir / "ak.pem", w.ecc.ak().public_pem());
  auto c = ts::Run({bin, "--nonce", nonce, "--ak-pub", (dir / "ak.pem").string(), "--tpm2-quote",
                    (dir / "msg").string(), (dir / "sig").string(), (dir / "pcrs").string()});
  EXPECT_EQ(c.exit_code, 0) << c.output;
}

// The installed binary, run as an auditor would: exit codes 0/1/2, JSON and binary inputs.
TEST_F(VerifyTest, BinaryExitCodes) {
  const std::string bin = std::string(SOVGUARD_BINARY_DIR) + "/attestation/verify/sovguard-verify";
  const auto dir = world->tmp.path() / "cli";
  std::filesystem::create_directories(dir);
  const auto json = dir / "ev.json", pb = dir / "ev.pb";
  WriteFileAtomic(json, evidence::ToJson(world->ecc));
  WriteFileAtomic(pb, world->rsa.SerializeAsString());
  const std::string nonce = ToHex(world->nonce);
  auto run = [&](std::vector<std::string> args) {
    args.insert(args.begin(), bin);
    return ts::Run(args);
  };
  // The auditor's anchors, as files: enrolled AKs, the manifest and its key, the policy.
  WriteFileAtomic(dir / "ak-ecc.pem", world->ecc.ak().public_pem());
  WriteFileAtomic(dir / "ak-rsa.pem", world->rsa.ak().public_pem());
  WriteFileAtomic(dir / "m.dsse.json", *world->manifest_envelope);
  WriteFileAtomic(dir / "m.pub", world->manifest_pub);
  auto anchored = [&](const char* ak, std::vector<std::string> args) {
    for (const std::string& a :
         {std::string("--ak-pub"), (dir / (std::string("ak-") + ak + ".pem")).string(),
          std::string("--manifest"), (dir / "m.dsse.json").string(), std::string("--manifest-key"),
          (dir / "m.pub").string(), std::string("--allow-software-tpm"),
          std::string("--policy-digest"), ToHex(ts::TestPolicyDigest())})
      args.insert(args.end() - 1, a);
    return run(args);
  };
  // Without anchors: FAIL, exit 1 (nothing roots the AK, no manifest, swtpm).
  auto r = run({"--nonce", nonce, json.string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("ROOT_OF_TRUST_MISSING"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("MANIFEST_MISSING"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("SOFTWARE_TPM"), std::string::npos) << r.output;
  r = anchored("ecc", {"--nonce", nonce, json.string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("PASS"), std::string::npos) << r.output;
  r = anchored("rsa", {"--nonce", nonce, pb.string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = anchored("ecc", {"--json", "--nonce", nonce, json.string()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["verdict"], "pass");
  r = anchored("ecc", {"--nonce", nonce, "--ek-ca", world->swtpm.ca_dir().string(), json.string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  // An unknown waiver is a usage error.
  EXPECT_EQ(anchored("ecc", {"--nonce", nonce, "--waive", "all", json.string()}).exit_code, 2);
  const auto st = dir / "state.json";
  r = anchored("ecc", {"--nonce", nonce, "--state", st.string(), json.string()});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  r = anchored("ecc", {"--nonce", nonce, "--state", st.string(), json.string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("EVIDENCE_REPLAYED"), std::string::npos) << r.output;
  r = run({"--nonce", nonce, "--ek-ca", (dir / "no-such-dir").string(), json.string()});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  // A failed check: exit 1, with the reason code.
  r = run({"--nonce", ToHex(B("some-other-nonce-987654")), json.string()});
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("NONCE_MISMATCH"), std::string::npos) << r.output;
  // Input and usage errors: exit 2, never a crash.
  const std::string full = world->rsa.SerializeAsString();
  WriteFileAtomic(dir / "trunc.pb", full.substr(0, full.size() / 2));
  const std::string js = evidence::ToJson(world->ecc);
  WriteFileAtomic(dir / "trunc.json", js.substr(0, js.size() / 2));
  WriteFileAtomic(dir / "empty", "");
  WriteFileAtomic(dir / "garbage", std::string("\xff\xfe garbage \x00\x01 not evidence", 27));
  for (const char* f : {"trunc.pb", "trunc.json", "empty", "garbage", "does-not-exist"}) {
    r = run({"--nonce", nonce, (dir / f).string()});
    EXPECT_EQ(r.exit_code, 2) << f << ": " << r.output;
    EXPECT_NE(r.output.find("sovguard-verify:"), std::string::npos) << f << ": " << r.output;
  }
  EXPECT_EQ(run({json.string()}).exit_code, 2);                   // no --nonce
  EXPECT_EQ(run({"--nonce", "zz", json.string()}).exit_code, 2);  // bad hex
  EXPECT_EQ(run({"--nonce", nonce, "--bogus", json.string()}).exit_code, 2);
  EXPECT_EQ(run({"--nonce", nonce, "--ak-pub", (dir / "empty").string(), json.string()}).exit_code,
            2);
}

// snapshot.coverage: real swtpm evidence whose snapshot covers the guest the CEL measured as
// running passes; each disagreement fails with its own reason code.
TEST_F(VerifyTest, SnapshotCoverageOfMeasuredGuests) {
  const auto& c = world->coverage;
  auto r = Run(world->ecc);
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("1 guest(s)"), std::string::npos);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find(std::string(ts::kNetTag)), std::string::npos);
  // Running per the CEL, absent from the snapshot.
  ExpectFail(Run(c.at("no-guests")), "snapshot.coverage", verify::kReasonGuestMissingFromSnapshot);
  EXPECT_NE(Run(c.at("no-guests")).Find("snapshot.coverage")->detail.find(ts::GuestUuid("vm1")),
            std::string::npos);
  // In the snapshot, never measured as running.
  ExpectFail(Run(c.at("extra-guest")), "snapshot.coverage", verify::kReasonGuestNotMeasured);
  EXPECT_NE(Run(c.at("extra-guest")).Find("snapshot.coverage")->detail.find("vm9"),
            std::string::npos);
  // A tap without its sg_net attachment, a cgroup outside the storage attach point, none at all.
  ExpectFail(Run(c.at("no-attachment")), "snapshot.coverage", verify::kReasonGuestNotCovered);
  EXPECT_NE(Run(c.at("no-attachment")).Find("snapshot.coverage")->detail.find("tap vnet0"),
            std::string::npos);
  ExpectFail(Run(c.at("bad-cgroup")), "snapshot.coverage", verify::kReasonGuestNotCovered);
  ExpectFail(Run(c.at("no-cgroup")), "snapshot.coverage", verify::kReasonGuestNotCovered);
  // sg_net attached, but not the program the CEL measured.
  ExpectFail(Run(c.at("wrong-tag")), "snapshot.coverage", verify::kReasonProgramTagMismatch);
  // Released: gone from the snapshot is right, still listed is not.
  // (Its log has the daemon restart while vm1 ran: that fails continuity until waived.)
  r = Run(c.at("released"));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_EQ(r.Find("snapshot.coverage")->status, Status::kPass) << verify::RenderText(r);
  auto waived = Opts(c.at("released"));
  waived.waivers.push_back("interruptions");
  r = verify::Verify(c.at("released"), waived);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  // Every interface of a guest is covered and has its tap; nothing is covered vacuously.
  r = Run(c.at("nic-uncovered"));
  ExpectFail(r, "snapshot.coverage", verify::kReasonGuestNotCovered);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("interface direct macvtap0"),
            std::string::npos)
      << r.Find("snapshot.coverage")->detail;
  r = Run(c.at("nic-no-tap"));
  ExpectFail(r, "snapshot.coverage", verify::kReasonGuestNotCovered);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("vnet7 is reported covered but has no tap"),
            std::string::npos)
      << r.Find("snapshot.coverage")->detail;
  ExpectFail(Run(c.at("no-storage")), "snapshot.coverage", verify::kReasonStorageNotAttached);
  r = Run(c.at("no-taps"));
  ExpectFail(r, "snapshot.coverage", verify::kReasonNoTapCovered);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("1 interface(s) and no tap covered by sg_net"),
            std::string::npos)
      << r.Find("snapshot.coverage")->detail;
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("interface network vnet0"), std::string::npos)
      << r.Find("snapshot.coverage")->detail;
  r = Run(c.at("no-nic"));
  EXPECT_EQ(r.Find("snapshot.coverage")->status, Status::kPass) << verify::RenderText(r);
  EXPECT_NE(r.Find("snapshot.coverage")->detail.find("1 guest(s) without a network interface"),
            std::string::npos)
      << r.Find("snapshot.coverage")->detail;
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  r = Run(c.at("not-enforced"));
  ExpectFail(r, "snapshot.mechanisms", verify::kReasonPathNotEnforced);
  EXPECT_NE(r.Find("snapshot.mechanisms")->detail.find("storage-network"), std::string::npos);
  ExpectFail(Run(c.at("released-listed")), "snapshot.coverage", verify::kReasonGuestNotMeasured);
  ExpectFail(Run(c.at("odd-guest-event")), "snapshot.coverage", verify::kReasonGuestEventMalformed);
}

TEST_F(VerifyTest, SnapshotCoverageNeedsABoundSnapshotAndAnAuthenticLog) {
  // The readable snapshot and its bytes swapped for another quote's: not bound, not believed.
  auto ev = world->ecc;
  const auto& other = world->coverage.at("no-guests");
  ev.set_snapshot_bytes(other.snapshot_bytes());
  ev.set_snapshot_sha256(other.snapshot_sha256());
  *ev.mutable_snapshot() = other.snapshot();
  auto r = Run(ev);
  ExpectFail(r, "quote.qualifying_data", verify::kReasonMerkleLeafMismatch);
  ExpectFail(r, "snapshot.coverage", verify::kReasonDependencyFailed);
  ExpectFail(r, "snapshot.mechanisms", verify::kReasonDependencyFailed);
  // The guest event dropped from the CEL: the replay fails, so coverage cannot be judged.
  auto recs = Cel(world->ecc);
  recs.pop_back();
  ExpectFail(Run(WithCel(world->ecc, recs)), "snapshot.coverage", verify::kReasonDependencyFailed);
}

// snapshot.mechanisms: every path reported; a downgrade is named, and fails on request.
TEST_F(VerifyTest, SnapshotMechanismsReportedAndDowngradesNamed) {
  auto r = Run(world->ecc);
  const auto* m = r.Find("snapshot.mechanisms");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->status, Status::kPass);
  EXPECT_NE(m->detail.find("downgraded: storage-open: tracepoint:sys_exit_openat+SIGKILL"),
            std::string::npos)
      << m->detail;
  ExpectFail(Run(world->coverage.at("no-mechanism")), "snapshot.mechanisms",
             verify::kReasonMechanismNotReported);
  EXPECT_NE(Run(world->coverage.at("no-mechanism"))
                .Find("snapshot.mechanisms")
                ->detail.find("storage-network"),
            std::string::npos);
  verify::Options strict = Opts(world->ecc);
  strict.require_strongest = true;
  r = verify::Verify(world->ecc, strict);
  ExpectFail(r, "snapshot.mechanisms", verify::kReasonMechanismDowngraded);
  EXPECT_NE(r.Find("snapshot.mechanisms")->detail.find("storage-open"), std::string::npos);
  // (The restarted daemon left vm1 without a daemon for a moment: accepted by name here.)
  strict.waivers.push_back("interruptions");
  r = verify::Verify(world->coverage.at("strongest"), strict);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  strict.waivers.pop_back();
  // The signed snapshot must tell what the quoted log measured: claiming the strongest
  // mechanism where the log measured a downgrade fails, and so does reporting a downgrade the
  // (restarted) daemon never measured.
  // snapshot.mechanisms of evidence `name` fails with `reason`, its detail saying `why`.
  const auto expect_mechanisms = [&](const char* name, std::string_view reason,
                                     std::string_view why) {
    const auto rep = Run(world->coverage.at(name));
    ExpectFail(rep, "snapshot.mechanisms", reason);
    EXPECT_NE(rep.Find("snapshot.mechanisms")->detail.find(why), std::string::npos)
        << name << ": " << rep.Find("snapshot.mechanisms")->detail;
  };
  expect_mechanisms("claims-strongest", verify::kReasonMechanismLogMismatch,
                    "storage-open: reported bpf-lsm:file_open, logs.cel record");
  expect_mechanisms("unmeasured-downgrade", verify::kReasonMechanismLogMismatch,
                    "no downgrade measured since the daemon");
  // A path reported twice, once guarding nothing and once at its strongest mechanism: which one
  // holds is not for the verifier to pick (before, the last one counted: PASS).
  expect_mechanisms("mechanism-twice", verify::kReasonMechanismReportedTwice, "storage-network");
  // A measured downgrade whose detail is not the daemon's JSON is not read as anything.
  expect_mechanisms("odd-mechanism-event", verify::kReasonMechanismLogMismatch,
                    "mechanism_downgraded detail is not");
  // JSON report carries the new checks and their reason codes.
  auto j = nlohmann::json::parse(verify::RenderJson(verify::Verify(world->ecc, strict)));
  bool seen = false;
  for (const auto& c : j["checks"])
    if (c["name"] == "snapshot.mechanisms")
      seen = c["status"] == "fail" && c["reason"] == verify::kReasonMechanismDowngraded;
  EXPECT_TRUE(seen) << j.dump(2);
}

// Genuine swtpm evidence with nothing but a nonce: nothing roots the AK, no manifest, swtpm.
// Each missing anchor fails with its own reason; the same evidence passes when each is waived
// by name, with the waivers in the report and an EAR "warning".
TEST_F(VerifyTest, EvidenceWithoutAnchorsFailsWithNamedReasons) {
  const auto& w = *world;
  verify::Options bare;
  bare.nonce = w.nonce;
  auto r = verify::Verify(w.ecc, bare);
  ExpectFail(r, "trust.root", verify::kReasonRootOfTrustMissing);
  ExpectFail(r, "manifest.components", verify::kReasonManifestMissing);
  ExpectFail(r, "policy.bundle", verify::kReasonExpectedPolicyMissing);
  // Its EK certificate (swtpm's, even unchained) names a software TPM.
  ExpectFail(r, "tpm.hardware", verify::kReasonSoftwareTpm);
  // Without any EK certificate, which TPM signed is unknown.
  auto no_ek = w.ecc;
  no_ek.clear_ek_certificates();
  ExpectFail(verify::Verify(no_ek, bare), "tpm.hardware", verify::kReasonHardwareTpmUnproven);
  // Its boot log removed (swtpm has none of its own): BOOT_LOG_MISSING.
  auto no_uefi = w.ecc;
  no_uefi.mutable_logs()->clear_uefi_tcg2();
  ExpectFail(verify::Verify(no_uefi, bare), "eventlog.uefi", verify::kReasonBootLogMissing);
  auto waived = bare;
  waived.waivers = {"root-of-trust", "manifest", "software-tpm", "boot-log", "policy"};
  r = verify::Verify(no_uefi, waived);
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  for (const char* c :
       {"trust.root", "manifest.signature", "tpm.hardware", "eventlog.uefi", "policy.bundle"})
    EXPECT_EQ(r.Find(c)->status, Status::kWaived) << c;
  EXPECT_EQ(r.waivers, waived.waivers);
  EXPECT_EQ(verify::EarStatus(r), "warning");
  const auto j = nlohmann::json::parse(verify::EarClaimsJson(r, {1, w.nonce}));
  const auto& sub = j["submods"]["verify-node"];
  EXPECT_EQ(sub["ear.status"], "warning");
  EXPECT_EQ(sub["sovguard.waivers"], nlohmann::json(waived.waivers));
  EXPECT_EQ(sub["sovguard.checks"]["trust.root"], "waived:ROOT_OF_TRUST_MISSING");
}

// All boot PCRs 0-9 are quoted, or the boot chain is unverified.
TEST_F(VerifyTest, BootPcrsMustAllBeQuoted) {
  auto r = Run(world->no_boot_pcrs);
  ExpectFail(r, "eventlog.uefi", verify::kReasonBootPcrNotQuoted);
  EXPECT_NE(r.Find("eventlog.uefi")->detail.find("0,1,2,3,4,5,6,7,8,9"), std::string::npos);
}

// Every file IMA measured (quoted PCR 10) is a file the manifest approves.
TEST_F(VerifyTest, ImaMeasuredFilesMustBeInTheManifest) {
  const auto& w = *world;
  auto r = Run(w.ecc);
  EXPECT_EQ(r.Find("manifest.ima")->status, Status::kPass) << r.Find("manifest.ima")->detail;
  auto m = w.manifest;
  m.components.pop_back();  // the host's files
  auto o = Opts(w.ecc);
  o.manifest_envelope = w.Sign(m);
  r = verify::Verify(w.ecc, o);
  ExpectFail(r, "manifest.ima", verify::kReasonImaUnapprovedFile);
  EXPECT_NE(r.Find("manifest.ima")->detail.find("/data"), std::string::npos)
      << r.Find("manifest.ima")->detail;
  o.waivers.push_back("ima");
  EXPECT_TRUE(verify::Verify(w.ecc, o).passed());
  // An IMA list that does not verify cannot be compared.
  auto bad = w.ecc;
  bad.mutable_logs()->set_ima_ascii("");
  ExpectFail(Run(bad), "manifest.ima", verify::kReasonDependencyFailed);
  // A manifest approving nothing never passes.
  m.components.clear();
  o = Opts(w.ecc);
  o.manifest_envelope = w.Sign(m);
  ExpectFail(verify::Verify(w.ecc, o), "manifest.components", verify::kReasonManifestEmpty);
  // A log that measured no component has nothing the manifest could approve.
  auto none = Opts(w.no_policy);
  none.sovguard_pcr = 12;
  ExpectFail(verify::Verify(w.no_policy, none), "manifest.components",
             verify::kReasonNoComponentMeasured);
}

// Tamper findings, downgrades and restarts while guests ran, forced releases: each fails
// continuity with its CEL record, since boot or since the last passing verdict (--state).
TEST_F(VerifyTest, EnforcementMustBeUninterrupted) {
  const auto& w = *world;
  auto opts = [&](const v1::Evidence& ev) {
    auto o = Opts(ev);
    o.sovguard_pcr = 11;
    return o;
  };
  auto r = verify::Verify(w.cont.at("clean"), opts(w.cont.at("clean")));
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  r = verify::Verify(w.cont.at("tamper"), opts(w.cont.at("tamper")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_NE(r.Find("enforcement.continuity")->detail.find("tamper finding net-filter-missing"),
            std::string::npos)
      << r.Find("enforcement.continuity")->detail;
  EXPECT_NE(r.Find("enforcement.continuity")->detail.find("logs.cel record "), std::string::npos);
  r = verify::Verify(w.cont.at("downgrade"), opts(w.cont.at("downgrade")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_NE(r.Find("enforcement.continuity")
                ->detail.find("mechanism downgraded for storage-network while 1 guest(s) ran"),
            std::string::npos)
      << r.Find("enforcement.continuity")->detail;
  r = verify::Verify(w.cont.at("restart"), opts(w.cont.at("restart")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_NE(r.Find("enforcement.continuity")->detail.find("daemon (re)started (continued) while 1"),
            std::string::npos)
      << r.Find("enforcement.continuity")->detail;
  r = verify::Verify(w.cont.at("forced-release"), opts(w.cont.at("forced-release")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_NE(r.Find("enforcement.continuity")->detail.find("forced release"), std::string::npos);
  // A plain release is counted with its record; the daemon start before it, with no guest
  // running, is not (the only restart listed is the one while vm1 ran).
  r = verify::Verify(w.cont.at("plain-release"), opts(w.cont.at("plain-release")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  const std::string plain = r.Find("enforcement.continuity")->detail;
  EXPECT_NE(plain.find(": release (released: 0 taps/cgroups covered)"), std::string::npos) << plain;
  const auto count = [&](std::string_view what) {
    size_t n = 0;
    for (size_t p = plain.find(what); p != std::string::npos; p = plain.find(what, p + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("daemon (re)started"), 1u) << plain;
  EXPECT_EQ(count("forced release"), 1u) << plain;
  // A crash with vm1 running, adopted by the next daemon: counted with its record.
  r = verify::Verify(w.cont.at("crash"), opts(w.cont.at("crash")));
  ExpectFail(r, "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  EXPECT_NE(r.Find("enforcement.continuity")
                ->detail.find("daemon (re)started (recovered: the last daemon crashed "
                              "mid-measurement) while 1 guest(s) ran"),
            std::string::npos)
      << r.Find("enforcement.continuity")->detail;

  // Since the last passing verdict: the tamper finding accepted once by name moves the state;
  // a later quote with nothing new then passes without the waiver. Without the state file the
  // finding counts again (since boot).
  const auto state = w.tmp.path() / "state-continuity.json";
  std::filesystem::remove(state);
  auto with_state = opts(w.cont.at("clean"));
  with_state.state_file = state;
  ASSERT_TRUE(verify::Verify(w.cont.at("clean"), with_state).passed());
  ExpectFail(verify::Verify(w.cont.at("tamper"), with_state), "enforcement.continuity",
             verify::kReasonEnforcementInterrupted);
  auto accept = with_state;
  accept.waivers.push_back("interruptions");
  r = verify::Verify(w.cont.at("tamper"), accept);
  ASSERT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_EQ(r.Find("enforcement.continuity")->status, Status::kWaived);
  EXPECT_EQ(verify::EarStatus(r), "warning");
  r = verify::Verify(w.cont.at("after-tamper"), with_state);
  EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  EXPECT_NE(r.Find("enforcement.continuity")->detail.find("since the last passing verdict"),
            std::string::npos);
  ExpectFail(verify::Verify(w.cont.at("after-tamper"), opts(w.cont.at("after-tamper"))),
             "enforcement.continuity", verify::kReasonEnforcementInterrupted);
  std::filesystem::remove(state);
}

// The node's own statement that its TPM is swtpm fails tpm.hardware even without an EK
// certificate to read it from.
TEST_F(VerifyTest, NodeStatingASoftwareTpmFails) {
  auto ev = world->coverage.at("software-tpm");
  ev.clear_ek_certificates();
  auto o = Opts(ev);
  o.waivers.clear();
  auto r = verify::Verify(ev, o);
  ExpectFail(r, "tpm.hardware", verify::kReasonSoftwareTpm);
  EXPECT_NE(r.Find("tpm.hardware")->detail.find("software_tpm"), std::string::npos);
}

// An EK certificate that chains to the auditor's CA but is not a TCG EK certificate fails
// EK_PROFILE_INVALID naming each missing part: no EK extended key usage, a TPM attribute missing
// from the subject alternative name, a CA certificate, a key usage an EK's key does not have, a
// certificate policy the auditor did not pin. A well-formed one passes, with and without a pin.
TEST_F(VerifyTest, EkCertificateMustFollowTheTcgProfile) {
  const auto& w = *world;
  const auto dir = w.tmp.path() / "ek-profile";
  std::filesystem::create_directories(dir / "ca");
  auto run = [](const std::vector<std::string>& a) {
    auto r = ts::Run(a);
    ASSERT_EQ(r.exit_code, 0) << r.output;
  };
  run({"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-subj", "/CN=Test TPM CA", "-days", "2", "-keyout", (dir / "ca.key").string(), "-out",
       (dir / "ca/ca.pem").string()});
  run({"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj",
       "/CN=tpm ek", "-keyout", (dir / "leaf.key").string(), "-out", (dir / "leaf.csr").string()});
  // The CA issues the leaf with these extension lines (openssl x509v3_config); "x." is stripped
  // from a DN field name, which keeps the OID whole.
  const std::map<std::string, std::string> well_formed = {
      {"extendedKeyUsage", "2.23.133.8.1"},       {"subjectAltName", "critical, dirName:tpm"},
      {"basicConstraints", "critical, CA:FALSE"}, {"keyUsage", "critical, keyAgreement"},
      {"certificatePolicies", "2.25.1"},
  };
  const std::map<std::string, std::string> tpm = {{"x.2.23.133.2.1", "id:54455354"},
                                                  {"x.2.23.133.2.2", "TESTTPM"},
                                                  {"x.2.23.133.2.3", "id:00010002"}};
  int serial = 0;
  auto issue = [&](std::map<std::string, std::string> ext,
                   std::map<std::string, std::string> attrs) {
    std::string cnf = "[ek]\n";
    for (const auto& [k, v] : ext)
      if (!v.empty()) cnf += k + " = " + v + "\n";
    cnf += "[tpm]\n";
    for (const auto& [k, v] : attrs) cnf += k + " = " + v + "\n";
    const auto n = std::to_string(++serial);
    WriteFileAtomic(dir / ("ext" + n + ".cnf"), cnf);
    run({"openssl",
         "x509",
         "-req",
         "-in",
         (dir / "leaf.csr").string(),
         "-CA",
         (dir / "ca/ca.pem").string(),
         "-CAkey",
         (dir / "ca.key").string(),
         "-set_serial",
         n,
         "-days",
         "2",
         "-extfile",
         (dir / ("ext" + n + ".cnf")).string(),
         "-extensions",
         "ek",
         "-outform",
         "DER",
         "-out",
         (dir / ("leaf" + n + ".der")).string()});
    auto ev = w.ecc;
    ev.mutable_ek_certificates(0)->set_der(S(ReadFileBytes(dir / ("leaf" + n + ".der"))));
    ev.mutable_ek_certificates()->DeleteSubrange(1, ev.ek_certificates_size() - 1);
    return ev;
  };
  auto verdict = [&](const v1::Evidence& ev, std::vector<std::string> policies) {
    auto o = Opts(ev);
    o.ek_ca_dir = dir / "ca";
    o.ek_policies = std::move(policies);
    return verify::Verify(ev, o);
  };
  auto expect_invalid = [&](const v1::Evidence& ev, std::vector<std::string> policies,
                            const std::vector<std::string>& named) {
    const auto r = verdict(ev, std::move(policies));
    ExpectFail(r, "ek.chain", verify::kReasonEkProfileInvalid);
    for (const auto& what : named)
      EXPECT_NE(r.Find("ek.chain")->detail.find(what), std::string::npos)
          << what << " in: " << r.Find("ek.chain")->detail;
  };
  auto without = [](std::map<std::string, std::string> m, const std::string& key) {
    m.erase(key);
    return m;
  };
  auto with = [](std::map<std::string, std::string> m, const std::string& key, std::string v) {
    m[key] = std::move(v);
    return m;
  };

  // Well-formed: passes, without a pinned policy and with its own policy pinned.
  const auto good = issue(well_formed, tpm);
  for (const auto& pin :
       {std::vector<std::string>{}, std::vector<std::string>{"2.25.9", "2.25.1"}}) {
    const auto r = verdict(good, pin);
    ASSERT_EQ(r.Find("ek.chain")->status, Status::kPass) << r.Find("ek.chain")->detail;
    EXPECT_NE(r.Find("ek.chain")->detail.find("policy 2.25.1"), std::string::npos);
  }
  // The attack: root on a swtpm node whose AK the auditor enrolled carries a hardware TPM's EK
  // certificate (any, they are not secret) beside the quote. It chains and has the profile, but
  // nothing binds that EK to the AK that signed: it says which TPM could have, not which did.
  // The auditor did not accept a software TPM. (Before: tpm.hardware passed, verdict PASS.)
  {
    auto o = Opts(good);
    o.waivers.clear();
    o.ek_ca_dir = dir / "ca";
    const auto r = verify::Verify(good, o);
    ExpectFail(r, "tpm.hardware", verify::kReasonEkNotBoundToAk);
    EXPECT_EQ(r.Find("ek.chain")->status, Status::kPass) << verify::RenderText(r);
    EXPECT_EQ(r.Find("trust.root")->status, Status::kPass) << verify::RenderText(r);
  }
  // The same attributes on certificates of the node's own EKs, with credential activation for
  // the AK that signed (the EK it was encrypted to has one of them): hardware is proven.
  {
    auto bound = w.ecc;
    for (int i = 0; i < bound.ek_certificates_size(); ++i) {
      const auto n = "own-ek" + std::to_string(i);
      WriteFileAtomic(dir / (n + ".der"), bound.ek_certificates(i).der());
      run({"openssl", "x509", "-inform", "DER", "-in", (dir / (n + ".der")).string(), "-pubkey",
           "-noout", "-out", (dir / (n + ".pub")).string()});
      WriteFileAtomic(dir / (n + ".cnf"),
                      "[ek]\nextendedKeyUsage = 2.23.133.8.1\n"
                      "subjectAltName = critical, dirName:tpm\n"
                      "basicConstraints = critical, CA:FALSE\n"
                      "keyUsage = critical, keyEncipherment, keyAgreement\n[tpm]\n"
                      "x.2.23.133.2.1 = id:54455354\nx.2.23.133.2.2 = TESTTPM\n"
                      "x.2.23.133.2.3 = id:00010002\n");
      run({"openssl",
           "x509",
           "-req",
           "-in",
           (dir / "leaf.csr").string(),
           "-force_pubkey",
           (dir / (n + ".pub")).string(),
           "-CA",
           (dir / "ca/ca.pem").string(),
           "-CAkey",
           (dir / "ca.key").string(),
           "-set_serial",
           std::to_string(100 + i),
           "-days",
           "2",
           "-extfile",
           (dir / (n + ".cnf")).string(),
           "-extensions",
           "ek",
           "-outform",
           "DER",
           "-out",
           (dir / (n + ".cert.der")).string()});
      bound.mutable_ek_certificates(i)->set_der(S(ReadFileBytes(dir / (n + ".cert.der"))));
    }
    auto o = Opts(bound);
    o.waivers.clear();
    o.ek_ca_dir = dir / "ca";
    o.ak_ek_binding = w.bind_ok;
    const auto r = verify::Verify(bound, o);
    EXPECT_EQ(r.Find("ak.ek_binding")->status, Status::kPass) << verify::RenderText(r);
    EXPECT_EQ(r.Find("tpm.hardware")->status, Status::kPass) << verify::RenderText(r);
    EXPECT_TRUE(r.passed()) << verify::RenderText(r);
  }
  // Each part missing is named.
  expect_invalid(issue(without(well_formed, "extendedKeyUsage"), tpm), {}, {"2.23.133.8.1"});
  expect_invalid(issue(with(well_formed, "extendedKeyUsage", "clientAuth"), tpm), {},
                 {"2.23.133.8.1"});
  expect_invalid(issue(well_formed, without(tpm, "x.2.23.133.2.2")), {},
                 {"TPM model 2.23.133.2.2"});
  expect_invalid(issue(well_formed, without(tpm, "x.2.23.133.2.1")), {},
                 {"TPM manufacturer 2.23.133.2.1"});
  expect_invalid(issue(well_formed, without(tpm, "x.2.23.133.2.3")), {},
                 {"TPM version 2.23.133.2.3"});
  expect_invalid(issue(with(well_formed, "basicConstraints", "critical, CA:TRUE"), tpm), {},
                 {"CA certificate"});
  expect_invalid(issue(with(well_formed, "keyUsage", "critical, digitalSignature"), tpm), {},
                 {"keyAgreement"});
  expect_invalid(issue(without(well_formed, "keyUsage"), tpm), {}, {"no key usage"});
  expect_invalid(good, {"2.25.7"},
                 {"certificate policy (2.5.29.32) of --ek-policy 2.25.7", "it has 2.25.1"});
  const auto no_policy = issue(without(well_formed, "certificatePolicies"), tpm);
  EXPECT_EQ(verdict(no_policy, {}).Find("ek.chain")->status, Status::kPass);
  expect_invalid(no_policy, {"2.25.1"}, {"it has none"});
  // A certificate issued for another purpose altogether: every part named.
  expect_invalid(issue({{"basicConstraints", "CA:FALSE"}}, tpm), {},
                 {"2.23.133.8.1", "TPM manufacturer", "TPM model", "TPM version", "no key usage"});
}

// The carried clock must be the signed one.
TEST_F(VerifyTest, CarriedClockMustBeTheSignedOne) {
  auto ev = world->ecc;
  ev.mutable_clock()->set_reset_count(ev.clock().reset_count() + 1);
  ExpectFail(Run(ev), "quote.clock", verify::kReasonClockMismatch);
}

}  // namespace
}  // namespace sovguard::attestation
