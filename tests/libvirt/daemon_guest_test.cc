// sovguardd end to end with a real libvirtd and a QEMU (TCG) guest whose init sends to an allowed
// and a forbidden destination from its first moment. The daemon covers the tap from libvirt's
// qemu hook, before QEMU runs: not one forbidden packet may ever reach the destination namespace,
// from boot to shutdown, while the allowed ones do.
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/support/daemon_process.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
using namespace std::chrono_literals;

namespace {

// Documentation ranges as operator zones: the gateway and the allowed destination in "DE", the
// forbidden destination in "US". The dataset every unlabelled guest holds is enforced.
constexpr const char* kPolicy = R"(zones {
  name: "test-eu"
  jurisdiction: "DE"
  cidrs: ["192.0.2.0/24", "198.51.100.0/24"]
  description: "the test's gateway and allowed destination"
}
zones {
  name: "test-us"
  jurisdiction: "US"
  cidrs: ["203.0.113.0/24"]
  description: "the test's forbidden destination"
}
datasets {
  id: "guest-default"
  owner: "test"
  classification: "confidential"
  description: "held by unlabelled guests; enforced"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] zones: ["test-eu"] }
  default_for_unlabelled: true
}
)";

void WriteFile(const fs::path& p, const std::string& content,
               fs::perms perms = fs::perms::owner_read | fs::perms::owner_write) {
  std::ofstream(p) << content;
  fs::permissions(p, perms);
}

class DaemonGuest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "integration tier needs root";
    dir_ = fs::temp_directory_path() / ("sg-daemon-guest-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "keys");
    // A signed bundle, as an operator would deploy it.
    WriteFile(dir_ / "policy.textproto", kPolicy);
    std::string out;
    ASSERT_EQ(
        st::RunShell("openssl genpkey -algorithm ed25519 -out " + (dir_ / "signer.pem").string() +
                         " && openssl pkey -in " + (dir_ / "signer.pem").string() +
                         " -pubout -out " + (dir_ / "keys/signer.pem").string() + " 2>&1",
                     &out),
        0)
        << out;
    ASSERT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " policy bundle --key " +
                               (dir_ / "signer.pem").string() + " --version 1 " +
                               (dir_ / "policy.textproto").string() + " -o " +
                               (dir_ / "policy.bundle").string() + " 2>&1",
                           &out),
              0)
        << out;
    // libvirt's hook dispatcher (tests/harness) runs this, which asks our daemon.
    WriteFile(dir_ / "hook.conf",
              "socket = " + (dir_ / "daemon/run/libvirt-hook.sock").string() + "\n");
    WriteFile(dir_ / "hook",
              "#!/bin/sh\nexec " + std::string(SOVGUARD_LIBVIRT_HOOK) + " --config " +
                  (dir_ / "hook.conf").string() + " \"$@\"\n",
              fs::perms::owner_all);
  }
  void TearDown() override { fs::remove_all(dir_); }

  fs::path dir_;
};

TEST_F(DaemonGuest, NoForbiddenPacketFromBootToShutdownAllowedOnesFlow) {
  st::TestNetwork net("dg");
  st::DaemonProcess daemon(
      dir_ / "daemon", {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data", "--set",
                        "policy_bundle=" + (dir_ / "policy.bundle").string(), "--set",
                        "trusted_keys_dir=" + (dir_ / "keys").string(), "--set",
                        std::string("libvirt_uri=") + st::LibvirtDaemons::kUri, "--set",
                        std::string("libvirt_qemu_run_dir=") + st::LibvirtDaemons::kQemuRunDir,
                        "--set", "start_libvirtd=false"});
  std::string why;
  ASSERT_TRUE(daemon.WaitReady(120s, &why)) << why;
  ASSERT_EQ(daemon.Status().at("policy").at("bundle_version").get<int>(), 1) << daemon.Log();

  st::ScopedHookTarget hook((dir_ / "hook").string());
  st::GuestSpec spec;
  spec.name = "sgt-dg";
  spec.tap = "sgtdg0";
  st::TestGuest guest(spec);
  guest.Start();  // returns after the hook: the tap is filtered before QEMU runs
  net.AttachTap(spec.tap);
  EXPECT_NE(daemon.Log().find("hook: guest sgt-dg covered before QEMU starts"), std::string::npos)
      << daemon.Log();

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
  EXPECT_TRUE(flowed) << "allowed=" << counts.allowed << "\n" << daemon.Log();
  EXPECT_EQ(max_forbidden, 0u) << "forbidden packets reached the destination";

  // Status names the guest, its tap and the enforced dataset.
  std::string out;
  ASSERT_EQ(
      st::RunShell(
          st::DaemonProcess::Ctl() + " status --runtime-dir " + daemon.RuntimeDir().string(), &out),
      0)
      << out;
  EXPECT_NE(out.find("sgt-dg"), std::string::npos) << out;
  EXPECT_NE(out.find("sgtdg0"), std::string::npos) << out;
  EXPECT_NE(out.find("mode enforce"), std::string::npos) << out;

  guest.Destroy();
  EXPECT_EQ(net.Counts().forbidden, 0u) << "forbidden packets reached the destination by shutdown";
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

}  // namespace
