// No enforcement gap across the daemon's own life: `kill -9` and `systemctl stop` (SIGTERM) of
// sovguardd leave the kernel enforcing the last policy on a running guest's tap (zero forbidden
// packets, allowed ones keep flowing), a guest started while the daemon is down is refused by the
// hook (fail closed), and a restarted daemon covers the running guest again.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <iostream>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace st = sovguard::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

class DaemonRestart : public st::DaemonWithLibvirt {
 protected:
  std::string PolicyText() const override { return st::kZonePolicy; }
};

TEST_F(DaemonRestart, KillAndStopLeaveEnforcementInForceAndRestartCoversAgain) {
  StartDaemonWithHook();
  st::TestNetwork net("rk");
  st::TestGuest guest(st::MakeGuestSpec("sgt-rk", "sgtrk0"));
  ASSERT_NO_FATAL_FAILURE(BootGuestAndFlow(guest, net, 5));
  st::ZoneCounts counts;

  // Allowed traffic keeps flowing and nothing forbidden passes while no daemon runs.
  auto still_enforced_without_daemon = [&](const char* what) {
    EXPECT_TRUE(st::TcFilterOn(guest.Tap())) << what << ": filter gone with the daemon";
    const std::uint64_t allowed = net.Counts().allowed;
    EXPECT_TRUE(AllowedArrived(net, allowed + 10, &counts, 10s))
        << what << ": allowed traffic stopped";
    EXPECT_EQ(net.Counts().forbidden, 0u) << what << ": forbidden packets passed";
  };

  const std::string passed =
      "sovguard_guest_packets_total{guest=\"sgt-rk\",dataset=\"guest-default\",verdict=\"pass\"}";
  const std::string dropped =
      "sovguard_guest_packets_total{guest=\"sgt-rk\",dataset=\"guest-default\",verdict=\"drop\"}";
  const double passed_before = Metric(passed), dropped_before = Metric(dropped);
  ASSERT_GT(passed_before, 0) << "no counters before the crash";
  ASSERT_GT(dropped_before, 0) << "no drops counted before the crash";

  // 1. kill -9.
  daemon_->Kill();
  still_enforced_without_daemon("after kill -9");

  // 2. A guest started while the daemon is down is refused by the hook: nothing could cover it.
  {
    auto other = st::MakeGuestSpec("sgt-rk2", "sgtrk2");
    other.mac = "52:54:00:5e:00:12";
    st::TestGuest second(other);
    const auto r = second.TryStart();
    EXPECT_NE(r.exit_code, 0) << "a guest started with no daemon to cover it";
    EXPECT_NE(r.err.find("sovguard"), std::string::npos) << r.err;
    EXPECT_FALSE(second.Running());
  }

  // 3. The restarted daemon covers the running guest again (reconcile at start).
  const auto t0 = Clock::now();
  daemon_->Restart();
  std::string why;
  ASSERT_TRUE(daemon_->WaitReady(120s, &why)) << why;
  ASSERT_TRUE(st::PollUntil(
      10s, [&] { return Attached(guest.Name(), guest.Tap()); }, 50ms))
      << daemon_->Status().dump(2);
  std::cout << "restart after kill -9 -> guest covered again: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()
            << " ms (includes start-up)\n";
  EXPECT_TRUE(st::TcFilterOn(guest.Tap()));
  EXPECT_EQ(net.Counts().forbidden, 0u);
  // It adopted the pinned state: counters go on from where they were (and grew meanwhile).
  EXPECT_NE(daemon_->Log().find("counters and quotas kept"), std::string::npos) << daemon_->Log();
  EXPECT_NE(daemon_->Log().find("tap sgtrk0 adopted with its counters"), std::string::npos);
  EXPECT_GT(Metric(passed), passed_before) << "packet counters restarted from zero";
  EXPECT_GT(Metric(dropped), dropped_before) << "drop counters restarted from zero";

  // 4. systemctl stop (SIGTERM): the documented default keeps enforcing.
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
  EXPECT_NE(daemon_->Log().find("kernel enforcement stays in force"), std::string::npos);
  still_enforced_without_daemon("after SIGTERM");

  // 5. Releasing enforcement while the guest runs is refused, changing nothing.
  std::string out;
  EXPECT_EQ(daemon_->RunOnce({"--release-enforcement"}, &out), 1) << out;
  EXPECT_NE(out.find("refusing to release enforcement"), std::string::npos) << out;
  EXPECT_NE(out.find("sgt-rk"), std::string::npos) << out;
  still_enforced_without_daemon("after a refused release");

  // 6. Forced: the filter goes and the guest's forbidden traffic really flows (what the operator
  //    asked for); a daemon started again covers the guest again and stops it.
  ASSERT_EQ(daemon_->RunOnce({"--release-enforcement", "--force"}, &out), 0) << out;
  std::cout << out;
  EXPECT_NE(out.find("enforcement released (forced):"), std::string::npos) << out;
  EXPECT_NE(out.find("released: sgt-rk (tap ifindex"), std::string::npos) << out;
  EXPECT_FALSE(st::TcFilterOn(guest.Tap()));
  EXPECT_TRUE(st::PollUntil(
      10s, [&] { return net.Counts().forbidden > 0; }, 50ms))
      << "no forbidden packet passed after the release: was anything released?";

  daemon_->Restart();
  ASSERT_TRUE(daemon_->WaitReady(120s, &why)) << why;
  EXPECT_TRUE(st::PollUntil(
      10s, [&] { return Attached(guest.Name(), guest.Tap()); }, 50ms));
  EXPECT_TRUE(st::TcFilterOn(guest.Tap()));
  const std::uint64_t forbidden_released = net.Counts().forbidden;
  const std::uint64_t allowed_now = net.Counts().allowed;
  EXPECT_TRUE(AllowedArrived(net, allowed_now + 10, &counts, 10s));
  EXPECT_EQ(net.Counts().forbidden, forbidden_released)
      << "forbidden packets passed once the daemon covered the guest again";
  guest.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

// Tamper detection: a filter deleted behind the daemon's back is found within the check interval,
// re-attached, counted in the metrics and measured into the TPM-backed log.
TEST_F(DaemonRestart, DeletedFilterIsRepairedCountedAndMeasured) {
  StartDaemonWithHook({"--set", "tamper_check_seconds=1"});
  st::TestGuest guest(st::MakeGuestSpec("sgt-tp", "sgttp0"));
  guest.Start();
  ASSERT_TRUE(st::TcFilterOn(guest.Tap()));
  ASSERT_TRUE(st::PollUntil(
      10s, [&] { return Attached(guest.Name(), guest.Tap()); }, 50ms));

  std::string out;
  ASSERT_EQ(st::RunShell("tc filter del dev " + guest.Tap() + " ingress 2>&1", &out), 0) << out;
  ASSERT_FALSE(st::TcFilterOn(guest.Tap()));
  const auto t0 = Clock::now();
  // Checked every 1 s; the bound is for a loaded CI (Debug+ASan, -j2), not a speed.
  ASSERT_TRUE(st::PollUntil(
      30s, [&] { return st::TcFilterOn(guest.Tap()); }, 20ms))
      << "the deleted filter was not re-attached\n"
      << daemon_->Log();
  const auto repaired_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count();
  std::cout << "filter deleted -> re-attached in " << repaired_ms << " ms (check every 1 s)\n";
  EXPECT_NE(daemon_->Log().find("tamper: "), std::string::npos) << daemon_->Log();
  EXPECT_TRUE(st::PollUntil(
      5s, [&] { return Metric("sovguard_tamper_findings_total{kind=\"filter-missing\"}") >= 1; },
      200ms))
      << daemon_->Log();
  // Auditors see it: the measurement log has the finding and the re-attachment.
  std::string log_text;
  for (const auto& e :
       std::filesystem::recursive_directory_iterator(daemon_->StateDir() / "measurements")) {
    if (e.is_regular_file()) log_text += st::ReadTextFile(e.path());
  }
  EXPECT_NE(log_text.find("tamper:filter-missing"), std::string::npos);
  guest.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
