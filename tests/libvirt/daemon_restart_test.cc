// No enforcement gap across the daemon's own life: `kill -9` and `systemctl stop` (SIGTERM) of
// sovguardd leave the kernel enforcing the last policy on a running guest's tap (zero forbidden
// packets, allowed ones keep flowing), a guest started while the daemon is down is refused by the
// hook (fail closed), and a restarted daemon covers the running guest again.
#include <gtest/gtest.h>

#include <chrono>
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
  StartDaemon();
  st::TestNetwork net("rk");
  st::ScopedHookTarget hook(HookPath());
  st::GuestSpec spec;
  spec.name = "sgt-rk";
  spec.tap = "sgtrk0";
  st::TestGuest guest(spec);
  guest.Start();
  net.AttachTap(spec.tap);
  ASSERT_TRUE(guest.WaitReady(120s)) << st::ReadTextFile(guest.ConsoleLog());
  ASSERT_TRUE(st::PollUntil(
      60s, [&] { return net.Counts().allowed >= 5; }, 50ms));
  ASSERT_EQ(net.Counts().forbidden, 0u);

  // Allowed traffic keeps flowing and nothing forbidden passes while no daemon runs.
  auto still_enforced_without_daemon = [&](const char* what) {
    EXPECT_TRUE(st::TcFilterOn(spec.tap)) << what << ": filter gone with the daemon";
    const std::uint64_t allowed = net.Counts().allowed;
    EXPECT_TRUE(st::PollUntil(
        10s, [&] { return net.Counts().allowed >= allowed + 10; }, 50ms))
        << what << ": allowed traffic stopped";
    EXPECT_EQ(net.Counts().forbidden, 0u) << what << ": forbidden packets passed";
  };

  // 1. kill -9.
  daemon_->Kill();
  still_enforced_without_daemon("after kill -9");

  // 2. A guest started while the daemon is down is refused by the hook: nothing could cover it.
  {
    st::GuestSpec other;
    other.name = "sgt-rk2";
    other.tap = "sgtrk2";
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
      10s, [&] { return Attached(spec.name, spec.tap); }, 50ms))
      << daemon_->Status().dump(2);
  std::cout << "restart after kill -9 -> guest covered again: "
            << std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count()
            << " ms (includes start-up)\n";
  EXPECT_TRUE(st::TcFilterOn(spec.tap));
  EXPECT_EQ(net.Counts().forbidden, 0u);

  // 4. systemctl stop (SIGTERM): the documented default keeps enforcing.
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
  EXPECT_NE(daemon_->Log().find("kernel enforcement stays in force"), std::string::npos);
  still_enforced_without_daemon("after SIGTERM");

  daemon_->Restart();
  ASSERT_TRUE(daemon_->WaitReady(120s, &why)) << why;
  EXPECT_TRUE(st::PollUntil(
      10s, [&] { return Attached(spec.name, spec.tap); }, 50ms));
  guest.Destroy();
  EXPECT_EQ(net.Counts().forbidden, 0u) << "forbidden packets reached the destination";
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
