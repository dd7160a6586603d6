// Shared set-up of the sovguardd end-to-end tests with a real libvirtd: a signed policy bundle
// (as an operator deploys it), the hook script libvirt's dispatcher runs, and a daemon started on
// the harness's libvirtd with that bundle.
#pragma once

#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"

namespace sovguard::test {

// Documentation ranges as operator zones: the guest's gateway and allowed destination (harness
// kAllowedDestination) in "DE" ("test-eu"), its forbidden destination in "US" ("test-us").
inline constexpr const char* kTestZones = R"(zones {
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
)";

// kTestZones and the dataset every unlabelled guest holds: enforced, allowing only "test-eu".
// Tests append their own datasets.
inline const std::string kZonePolicy = std::string(kTestZones) + R"(datasets {
  id: "guest-default"
  owner: "test"
  classification: "confidential"
  description: "held by unlabelled guests; enforced"
  mode: ENFORCE
  residency { allow: ["EU", "EEA"] zones: ["test-eu"] }
  default_for_unlabelled: true
}
)";

// A dataset (protobuf text) enforced in the residency zones `zones` (a protobuf list body) whose
// volumes live in `pool`; `usage` (e.g. "usage { read_only: true }") goes before its storage.
inline std::string PoolDataset(const std::string& id, const std::string& classification,
                               const std::string& description, const std::filesystem::path& pool,
                               const std::string& zones = R"("test-eu")",
                               const std::string& usage = "") {
  return "datasets {\n  id: \"" + id + "\"\n  owner: \"test\"\n  classification: \"" +
         classification + "\"\n  description: \"" + description +
         "\"\n  mode: ENFORCE\n  residency { allow: [\"EU\", \"EEA\"] zones: [" + zones + "] }\n" +
         (usage.empty() ? "" : "  " + usage + "\n") + "  storage { pools { path: \"" +
         pool.string() + "\" } }\n}\n";
}

// True when the kernel has the residency program on the tap's clsact ingress.
inline bool TcFilterOn(const std::string& tap) {
  std::string out;
  if (RunShell("tc filter show dev " + tap + " ingress 2>/dev/null", &out) != 0) return false;
  return out.find("sg_net_egress") != std::string::npos;
}

inline void WriteTestFile(const std::filesystem::path& p, const std::string& content,
                          std::filesystem::perms perms = std::filesystem::perms::owner_read |
                                                         std::filesystem::perms::owner_write) {
  std::ofstream(p) << content;
  std::filesystem::permissions(p, perms);
}

class DaemonWithLibvirt : public ::testing::Test {
 protected:
  // The policy each test deploys (protobuf text).
  virtual std::string PolicyText() const = 0;

  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (integration tier)");
    namespace fs = std::filesystem;
    dir_ = fs::temp_directory_path() /
           ("sg-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) +
            "-" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "keys");
    WriteTestFile(dir_ / "policy.textproto", PolicyText());
    std::string out;
    ASSERT_EQ(RunShell("openssl genpkey -algorithm ed25519 -out " + (dir_ / "signer.pem").string() +
                           " && openssl pkey -in " + (dir_ / "signer.pem").string() +
                           " -pubout -out " + (dir_ / "keys/signer.pem").string() + " 2>&1",
                       &out),
              0)
        << out;
    ASSERT_EQ(
        RunShell(DaemonProcess::Ctl() + " policy bundle --key " + (dir_ / "signer.pem").string() +
                     " --version 1 " + (dir_ / "policy.textproto").string() + " -o " +
                     (dir_ / "policy.bundle").string() + " 2>&1",
                 &out),
        0)
        << out;
    // libvirt's hook dispatcher (tests/harness) runs this, which asks our daemon.
    WriteTestFile(dir_ / "hook.conf",
                  "socket = " + (dir_ / "daemon/run/libvirt-hook.sock").string() + "\n");
    WriteTestFile(dir_ / "hook",
                  "#!/bin/sh\nexec " + std::string(SOVGUARD_LIBVIRT_HOOK) + " --config " +
                      (dir_ / "hook.conf").string() + " \"$@\"\n",
                  fs::perms::owner_all);
  }
  void TearDown() override {
    hook_.reset();
    daemon_.reset();
    std::filesystem::remove_all(dir_);
    for (const auto& d : scratch_) {
      std::error_code ec;
      std::filesystem::remove_all(d, ec);
    }
  }

  // A new directory /run/sovguard-test/<tag>-<pid> for the test's volumes (call before SetUp, so
  // the policy can name it); removed by TearDown once the daemon has stopped.
  std::filesystem::path MakeScratchDir(const std::string& tag) {
    const auto d =
        std::filesystem::path("/run/sovguard-test") / (tag + "-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    scratch_.push_back(d);
    return d;
  }
  // A 16 MiB ext4 file system image at `image`.
  static void MakeExt4Image(const std::filesystem::path& image) {
    ASSERT_EQ(RunShell("truncate -s 16M " + image.string() + " && mkfs.ext4 -q -F " +
                       image.string() + " >/dev/null 2>&1"),
              0);
  }

  // Starts sovguardd on the harness's libvirtd with the signed bundle; waits until ready.
  void StartDaemon(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args{
        "--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data",
        "--set",      "policy_bundle=" + (dir_ / "policy.bundle").string(),
        "--set",      "trusted_keys_dir=" + (dir_ / "keys").string(),
        "--set",      std::string("libvirt_uri=") + LibvirtDaemons::kUri,
        "--set",      std::string("libvirt_qemu_run_dir=") + LibvirtDaemons::kQemuRunDir,
        "--set",      "start_libvirtd=false"};
    args.insert(args.end(), extra.begin(), extra.end());
    daemon_ = std::make_unique<DaemonProcess>(dir_ / "daemon", args);
    std::string why;
    ASSERT_TRUE(daemon_->WaitReady(std::chrono::seconds(120), &why)) << why;
  }

  std::string HookPath() const { return (dir_ / "hook").string(); }

  // From now until TearDown, libvirt's hook dispatcher runs this test's hook (which asks the
  // daemon).
  void InstallHook() { hook_ = std::make_unique<ScopedHookTarget>(HookPath()); }
  // StartDaemon(extra), then InstallHook().
  void StartDaemonWithHook(const std::vector<std::string>& extra = {}) {
    ASSERT_NO_FATAL_FAILURE(StartDaemon(extra));
    InstallHook();
  }

  // Starts `guest`, bridges its tap into `net`, and waits (120 s) for the guest's "ready".
  static void BootGuest(TestGuest& guest, TestNetwork& net) {
    guest.Start();
    net.AttachTap(guest.Tap());
    ASSERT_TRUE(guest.WaitReady(std::chrono::seconds(120))) << ReadTextFile(guest.ConsoleLog());
  }

  // BootGuest, then `n` packets reached the allowed destination and none the forbidden one.
  void BootGuestAndFlow(TestGuest& guest, TestNetwork& net, std::uint64_t n) const {
    ASSERT_NO_FATAL_FAILURE(BootGuest(guest, net));
    ZoneCounts counts;
    ASSERT_TRUE(AllowedArrived(net, n, &counts));
    ASSERT_EQ(net.Counts().forbidden, 0u);
  }

  // Polls `net` until `n` packets in all reached the allowed destination, within `timeout`;
  // `counts` holds the last counts read. A failure names that count and the daemon's log.
  ::testing::AssertionResult AllowedArrived(
      const TestNetwork& net, std::uint64_t n, ZoneCounts* counts,
      std::chrono::milliseconds timeout = std::chrono::seconds(60)) const {
    if (PollUntil(
            timeout, [&] { return (*counts = net.Counts()).allowed >= n; },
            std::chrono::milliseconds(100))) {
      return ::testing::AssertionSuccess();
    }
    return ::testing::AssertionFailure() << "allowed=" << counts->allowed << "\n" << daemon_->Log();
  }

  // `virsh attach-device` of the device `xml` into `guest` (flag: --config or --live).
  void AttachDevice(TestGuest& guest, const std::string& xml,
                    const std::string& flag = "--config") const {
    const auto file = dir_ / (guest.Name() + "-device.xml");
    WriteTestFile(file, xml);
    guest.Virsh({"attach-device", guest.Name(), file.string(), flag});
  }

  // A fresh quote through the daemon's local API (sovguardctl attest quote), written to `file`;
  // its evidence JSON.
  std::string QuoteJson(const std::filesystem::path& file) const {
    const std::string socket =
        daemon_->Status().at("api_socket").get<std::string>().substr(5);  // "unix:"
    std::string out;
    EXPECT_EQ(RunShell(DaemonProcess::Ctl() + " attest quote --nonce 0011223344556677" +
                           " --socket " + socket + " -o " + file.string() + " 2>&1",
                       &out),
              0)
        << out;
    return ReadTextFile(file);
  }

  // The daemon's status entry for a guest, or null.
  nlohmann::json GuestStatus(const std::string& name) const {
    const nlohmann::json status = daemon_->Status();
    for (const auto& g : status.value("guests", nlohmann::json::array())) {
      if (g.value("name", "") == name) return g;
    }
    return nullptr;
  }

  // The tap's attachment as the daemon reports it (null when not listed).
  nlohmann::json Attachment(const std::string& guest, const std::string& tap) const {
    const auto g = GuestStatus(guest);
    if (g.is_null()) return nullptr;
    for (const auto& a : g.value("attachments", nlohmann::json::array())) {
      if (a.value("tap", "") == tap) return a;
    }
    return nullptr;
  }
  bool Attached(const std::string& guest, const std::string& tap) const {
    const auto a = Attachment(guest, tap);
    return !a.is_null() && a.value("attached", false);
  }
  // Guest entries in the network datapath (one per covered tap).
  size_t DatapathGuests() const { return daemon_->Status().at("datapath").at("guests"); }

  // A sample of the daemon's Prometheus metrics (the line's value), or -1 when absent.
  double Metric(const std::string& series) const {
    std::string out;
    if (RunShell("curl -sf " + daemon_->Status().at("metrics").get<std::string>(), &out) != 0) {
      return -1;
    }
    const auto at = out.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(out.substr(at + series.size() + 2));
  }

  // True once the daemon logged a storage violation line naming every one of `words` (guest,
  // dataset, volume...), within 10 s.
  bool StorageViolationLogged(const std::vector<std::string>& words) const {
    return PollUntil(
        std::chrono::seconds(10),
        [&] {
          const std::string log = daemon_->Log();
          for (auto at = log.find("storage violation"); at != std::string::npos;
               at = log.find("storage violation", at + 1)) {
            const std::string line = log.substr(at, log.find('\n', at) - at);
            if (std::all_of(words.begin(), words.end(), [&](const std::string& w) {
                  return line.find(w) != std::string::npos;
                })) {
              return true;
            }
          }
          return false;
        },
        std::chrono::milliseconds(200));
  }

  std::filesystem::path dir_;
  std::unique_ptr<DaemonProcess> daemon_;
  std::unique_ptr<ScopedHookTarget> hook_;      // StartDaemonWithHook's
  std::vector<std::filesystem::path> scratch_;  // MakeScratchDir's
};

}  // namespace sovguard::test
