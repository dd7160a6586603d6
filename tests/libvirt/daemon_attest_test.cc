// What an auditor's quote says about guests, against a real sovguardd, libvirtd and TCG guest:
// the snapshot lists a running guest with the attachments the kernel shows right now, and the
// quoted measurement log says which guests the node runs (guest:<uuid> covered / released),
// including a guest that went away while no daemon ran.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "attestation/eventlog/cel.h"
#include "attestation/evidence/evidence.pb.h"
#include "attestation/evidence/format.h"
#include "tests/harness/guest.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"
#include "tests/support/reference_manifest.h"

namespace {

namespace st = sovguard::test;
namespace cel = sovguard::attestation::cel;
using sovguard::attestation::v1::Evidence;
using namespace std::chrono_literals;

class DaemonAttest : public st::DaemonWithLibvirt {
 protected:
  std::string PolicyText() const override { return st::kZonePolicy; }

  // A fresh quote through the local API, parsed.
  Evidence Quote() {
    const auto file = dir_ / ("evidence-" + std::to_string(++quotes_) + ".json");
    Evidence ev;
    sovguard::attestation::evidence::FromJson(QuoteJson(file), ev);
    last_file_ = file;
    return ev;
  }
  // The auditor's anchors for this node, from its first quote: the AK enrolled, and a reference
  // manifest (signed with a certifier key made here) approving the components and the kernel
  // command line that quote measured, as a certifier reviewing that node would.
  void Enrol(const Evidence& ev) {
    st::WriteTestFile(dir_ / "ak.pem", ev.ak().public_pem());
    manifest_ = st::WriteReferenceManifest({&ev}, dir_, "daemon-attest");
  }
  // sovguard-verify on the last quote with the enrolled AK and the manifest; swtpm (software TPM,
  // no UEFI log) accepted by name. The exit code, and the JSON report in `report`.
  int Verify(nlohmann::json& report) {
    return st::VerifyAsAuditor(last_file_, dir_ / "ak.pem", manifest_, dir_ / "policy.bundle",
                               "0011223344556677", "", report);
  }
  static std::string Reason(const nlohmann::json& report, const std::string& check) {
    if (!report.is_object()) return "(no report)";
    for (const auto& c : report["checks"])
      if (c["name"] == check)
        return c["status"].get<std::string>() + ":" + c["reason"].get<std::string>();
    return "(no check)";
  }
  std::filesystem::path last_file_;
  st::ReferenceManifest manifest_;
  static std::set<std::string> MeasuredGuests(const Evidence& ev) {
    return cel::MeasuredGuests(cel::DecodeLog(std::span(
        reinterpret_cast<const std::uint8_t*>(ev.logs().cel().data()), ev.logs().cel().size())));
  }
  static bool SnapshotHasTap(const Evidence& ev, const std::string& tap) {
    for (const auto& p : ev.snapshot().programs())
      if (p.attach_point() == tap && p.attach_type() == "tc/ingress" && p.name() == "sg_net" &&
          !p.tag().empty())
        return true;
    return false;
  }
  int quotes_ = 0;
};

TEST_F(DaemonAttest, QuoteCoversRunningGuestsAndTheLogTracksThemAcrossRestarts) {
  st::TestNetwork net("da");
  // No tamper repair during the test: it must see what the kernel shows, not what was repaired.
  StartDaemonWithHook({"--set", "tamper_check_seconds=3600"});
  st::TestGuest guest(st::MakeGuestSpec("sgt-da", "sgtda0"));
  guest.Start();
  net.AttachTap(guest.Tap());
  std::string uuid = guest.Virsh({"domuuid", guest.Name()});
  while (!uuid.empty() && (uuid.back() == '\n' || uuid.back() == ' ')) uuid.pop_back();
  ASSERT_EQ(uuid.size(), 36u) << uuid;

  // The hook covers the guest before QEMU exists (no cgroup yet); the watcher's "up" then adds
  // QEMU's cgroup. Poll the quote until the guest is in it with its cgroup: a quote taken in
  // between fails the verdict (the storage paths cannot cover a guest without one).
  Evidence ev;
  ASSERT_TRUE(st::PollUntil(
      60s,
      [&] {
        ev = Quote();
        return ev.snapshot().guests_size() == 1 && SnapshotHasTap(ev, guest.Tap()) &&
               !ev.snapshot().guests(0).cgroup().empty();
      },
      200ms))
      << ev.snapshot().DebugString() << daemon_->Log();
  EXPECT_EQ(ev.snapshot().guests(0).name(), guest.Name());
  EXPECT_EQ(ev.snapshot().guests(0).uuid(), uuid);
  EXPECT_FALSE(ev.snapshot().guests(0).cgroup().empty());
  EXPECT_EQ(MeasuredGuests(ev), std::set<std::string>{uuid}) << daemon_->Log();
  // Network paths from the probe and storage paths from the running storage datapath.
  std::set<std::string> paths;
  for (const auto& m : ev.snapshot().mechanisms()) paths.insert(m.path());
  for (const char* p : {"guest-network-egress", "storage-open", "storage-network",
                        "storage-block-devices", "storage-io-accounting"})
    EXPECT_EQ(paths.count(p), 1u) << p << "\n" << ev.snapshot().DebugString();
  // The storage programs with their kernel identities, attached at libvirt's machine cgroup,
  // which holds the guest's cgroup.
  bool connect_guarded = false;
  for (const auto& p : ev.snapshot().programs()) {
    if (p.attach_type() != "cgroup/connect4") continue;
    connect_guarded = !p.tag().empty() && p.prog_id() != 0 &&
                      ev.snapshot().guests(0).cgroup().rfind(p.attach_point(), 0) == 0;
  }
  EXPECT_TRUE(connect_guarded) << ev.snapshot().DebugString() << daemon_->Log();

  // The auditor's verdict on this quote, anchored: PASS (exit 0).
  Enrol(ev);
  nlohmann::json report;
  EXPECT_EQ(Verify(report), 0) << report.dump(2) << daemon_->Log();
  EXPECT_EQ(Reason(report, "snapshot.coverage"), "pass:OK") << report.dump(2);
  EXPECT_EQ(Reason(report, "trust.root"), "pass:OK") << report.dump(2);

  // The snapshot reports what the kernel shows: a deleted filter is not claimed. The daemon's
  // first tamper round runs right after start (the next in an hour): once it is over, nothing
  // repairs the filter behind the test's back.
  ASSERT_TRUE(st::PollUntil(
      60s, [&] { return Metric("sovguard_tamper_checks_total") >= 1; }, 100ms))
      << daemon_->Log();
  std::string out;
  ASSERT_EQ(st::RunShell("tc filter del dev " + guest.Tap() + " ingress 2>&1", &out), 0) << out;
  ev = Quote();
  EXPECT_FALSE(SnapshotHasTap(ev, guest.Tap())) << ev.snapshot().DebugString() << daemon_->Log();
  EXPECT_EQ(ev.snapshot().guests_size(), 1);
  // The same auditor, the same anchors: the guest's tap is no longer covered, and says so.
  EXPECT_EQ(Verify(report), 1) << report.dump(2);
  EXPECT_EQ(Reason(report, "snapshot.coverage"), "fail:GUEST_NOT_COVERED") << report.dump(2);

  // The guest goes away while no daemon runs; the successor settles the log after reconciling.
  daemon_->Kill();
  guest.Destroy();
  daemon_->Restart();
  std::string why;
  ASSERT_TRUE(daemon_->WaitReady(120s, &why)) << why;
  ev = Quote();
  EXPECT_EQ(ev.snapshot().guests_size(), 0) << ev.snapshot().DebugString();
  EXPECT_TRUE(MeasuredGuests(ev).empty()) << daemon_->Log();
  EXPECT_NE(daemon_->Log().find("guest " + uuid + " went away while no daemon ran"),
            std::string::npos)
      << daemon_->Log();

  // A guest started and stopped under a running daemon: covered, then released.
  guest.Start();
  ASSERT_TRUE(st::PollUntil(
      60s, [&] { return MeasuredGuests(Quote()).count(uuid) == 1; }, 200ms))
      << daemon_->Log();
  guest.Destroy();
  ASSERT_TRUE(st::PollUntil(
      30s, [&] { return MeasuredGuests(Quote()).empty(); }, 200ms))
      << daemon_->Log();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
