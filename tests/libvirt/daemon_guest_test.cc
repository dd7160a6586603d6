// sovguardd end to end with a real libvirtd and a QEMU (TCG) guest whose init sends to an allowed
// and a forbidden destination from its first moment. The daemon covers the tap from libvirt's
// qemu hook, before QEMU runs: not one forbidden packet may ever reach the destination namespace,
// from boot to shutdown, while the allowed ones do.
#include <gtest/gtest.h>

#include <chrono>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace st = sovguard::test;
using namespace std::chrono_literals;

namespace {

class DaemonGuest : public st::DaemonWithLibvirt {
 protected:
  std::string PolicyText() const override { return st::kZonePolicy; }
};

TEST_F(DaemonGuest, NoForbiddenPacketFromBootToShutdownAllowedOnesFlow) {
  st::TestNetwork net("dg");
  StartDaemon();
  // The signed bundle (version 1) is what is in force.
  ASSERT_EQ(daemon_->Status().at("policy").at("bundle_version").get<int>(), 1) << daemon_->Log();

  InstallHook();
  st::TestGuest guest(st::MakeGuestSpec("sgt-dg", "sgtdg0"));
  guest.Start();  // returns after the hook: the tap is filtered before QEMU runs
  net.AttachTap(guest.Tap());
  EXPECT_NE(daemon_->Log().find("hook: guest sgt-dg covered before QEMU starts"), std::string::npos)
      << daemon_->Log();

  ASSERT_TRUE(guest.WaitReady(120s)) << st::ReadTextFile(guest.ConsoleLog());
  st::ZoneCounts counts;
  std::uint64_t max_forbidden = 0;
  const bool flowed = st::PollUntil(
      60s,
      [&] {
        counts = net.Counts();
        max_forbidden = std::max(max_forbidden, counts.forbidden);
        return counts.allowed >= 10;
      },
      100ms);
  EXPECT_TRUE(flowed) << "allowed=" << counts.allowed << "\n" << daemon_->Log();
  EXPECT_EQ(max_forbidden, 0u) << "forbidden packets reached the destination";

  // Status names the guest, its tap and the enforced dataset.
  std::string out;
  ASSERT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " status --runtime-dir " +
                             daemon_->RuntimeDir().string(),
                         &out),
            0)
      << out;
  EXPECT_NE(out.find("sgt-dg"), std::string::npos) << out;
  EXPECT_NE(out.find("sgtdg0"), std::string::npos) << out;
  EXPECT_NE(out.find("mode enforce"), std::string::npos) << out;

  guest.Destroy();
  EXPECT_EQ(net.Counts().forbidden, 0u) << "forbidden packets reached the destination by shutdown";
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
