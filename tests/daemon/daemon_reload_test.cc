// A policy reload is applied whole or not at all. A running sovguardd enforces policy A on a real
// guest; the operator replaces the bundle with one whose network part is valid (it would allow the
// guest's forbidden destination) but whose storage part cannot be compiled, and sends SIGHUP. The
// reload must be refused with its reason, and both paths must stay on A: the forbidden destination
// receives nothing, neither path's kernel tables switched, the bundle store did not advance, and
// the measured log does not claim the new policy. A valid bundle of the same version is then
// accepted and does open the destination (the traffic check can see a switch).
// An accepted reload moves every running guest to the datasets the new policy gives it.
#include <signal.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "attestation/common/bytes.h"
#include "attestation/eventlog/cel.h"
#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
namespace cel = sovguard::attestation::cel;
using namespace std::chrono_literals;

namespace {

// kZonePolicy with the forbidden zone allowed too.
std::string OpenPolicy() {
  std::string p = st::kZonePolicy;
  const std::string from = "zones: [\"test-eu\"]";
  p.replace(p.find(from), from.size(), "zones: [\"test-eu\", \"test-us\"]");
  return p;
}

// OpenPolicy plus 13 datasets listing network-storage endpoints: endpoint k is listed by the
// datasets of the bits of k, so 4,200 endpoints need 4,200 distinct storage classes, more than
// the kernel's SG_MAX_CLASSES (4,096). The network part compiles; the storage part cannot.
std::string StorageInvalidPolicy() {
  constexpr int kDatasets = 13, kEndpoints = 4200;
  std::string p = OpenPolicy();
  for (int i = 0; i < kDatasets; ++i) {
    p += "datasets {\n  id: \"ep-" + std::to_string(i) +
         "\"\n  owner: \"test\"\n  mode: AUDIT\n  residency { allow: [\"EU\"] }\n  storage {\n";
    for (int k = 1; k <= kEndpoints; ++k) {
      if ((k >> i & 1) == 0) continue;
      char endpoint[64];
      std::snprintf(endpoint, sizeof endpoint, "[2001:db8:5::%x]:10809", k);
      p += std::string("    network { endpoint: \"") + endpoint + "\" protocol: \"nbd\" }\n";
    }
    p += "  }\n}\n";
  }
  return p;
}

// kZonePolicy's zones, then `datasets` (protobuf text), then its unlabelled default.
std::string ZonesWith(const std::string& datasets) {
  const std::string p = st::kZonePolicy;
  const auto at = p.find("datasets {");
  return p.substr(0, at) + datasets + p.substr(at);
}

// An ENFORCE dataset held by the guest named `guest`; `forbidden` adds the test's forbidden zone.
std::string Dataset(const std::string& id, const std::string& guest, bool forbidden) {
  return "datasets {\n  id: \"" + id +
         "\"\n  owner: \"test\"\n  mode: ENFORCE\n  residency { allow: [\"EU\", \"EEA\"] zones: " +
         (forbidden ? "[\"test-eu\", \"test-us\"]" : "[\"test-eu\"]") +
         " }\n  usage { guests { name: \"" + guest + "\" } }\n}\n";
}

class DaemonReload : public st::DaemonWithLibvirt {
 protected:
  std::string PolicyText() const override { return st::kZonePolicy; }

  // Signs `text` as bundle `version` and puts it where the daemon's policy_bundle points.
  void DeployBundle(const std::string& text, int version) {
    const fs::path src = dir_ / ("policy-v" + std::to_string(version) + ".textproto");
    st::WriteTestFile(src, text);
    std::string out;
    ASSERT_EQ(
        st::RunShell(st::DaemonProcess::Ctl() + " policy bundle --key " +
                         (dir_ / "signer.pem").string() + " --version " + std::to_string(version) +
                         " " + src.string() + " -o " + (dir_ / "next.bundle").string() + " 2>&1",
                     &out),
        0)
        << out;
    fs::rename(dir_ / "next.bundle", dir_ / "policy.bundle");
  }

  // The daemon's reload counter for `result`, 0 when absent.
  double Reloads(const std::string& result) const {
    const double v = Metric("sovguard_policy_reloads_total{result=\"" + result + "\"}");
    return v < 0 ? 0 : v;
  }

  // What the kernel holds as the policy in force, read from the daemon's pinned maps: the
  // network path's generation state and inner table ids (fresh maps on every switch), the
  // storage path's active generation and its configuration.
  std::string KernelPolicyState() const {
    std::string all;
    for (const fs::path& pin :
         {daemon_->PinDir() / "sg_state", daemon_->PinDir() / "sg_classes_outer",
          daemon_->PinDir() / "sg_policy_outer", daemon_->PinDir() / "sg_v4_dir_outer",
          daemon_->PinDir() / "storage/sg_storage_active",
          daemon_->PinDir() / "storage/sg_storage_cfg"}) {
      std::string out;
      EXPECT_EQ(st::RunShell("bpftool map dump pinned " + pin.string() + " 2>&1", &out), 0)
          << pin << ": " << out;
      all += pin.filename().string() + ":\n" + out;
    }
    return all;
  }

  // Hex SHA-256 of the bundle the last policy-applied record of the measured log names.
  std::string LastMeasuredPolicy() const {
    const std::string log = st::ReadTextFile(daemon_->StateDir() / "measurements/cel.bin");
    std::string last;
    for (const auto& r :
         cel::DecodeLog(std::span(reinterpret_cast<const std::uint8_t*>(log.data()), log.size()))) {
      if (r.content_type != cel::kContentSovguard) continue;
      const auto ev = cel::DecodeSovguardContent(r.content);
      if (ev.kind == cel::EventKind::kPolicyApplied)
        last = sovguard::attestation::ToHex(ev.object_digest);
    }
    return last;
  }
};

TEST_F(DaemonReload, StorageInvalidBundleLeavesBothPathsOnTheLastGoodPolicy) {
  st::TestNetwork net("prl");
  StartDaemon();
  const nlohmann::json policy_a = daemon_->Status().at("policy");
  ASSERT_EQ(policy_a.at("bundle_version").get<int>(), 1) << daemon_->Log();
  ASSERT_EQ(LastMeasuredPolicy(), policy_a.at("sha256").get<std::string>());

  InstallHook();
  st::TestGuest guest(st::MakeGuestSpec("sgt-prl", "sgtprl0"));
  ASSERT_NO_FATAL_FAILURE(BootGuestAndFlow(guest, net, 10));
  st::ZoneCounts counts;
  const std::string kernel_a = KernelPolicyState();

  // The refused reload.
  DeployBundle(StorageInvalidPolicy(), 2);
  ASSERT_EQ(::kill(daemon_->Pid(), SIGHUP), 0);
  ASSERT_TRUE(st::PollUntil(
      120s, [&] { return Reloads("rejected") + Reloads("ok") >= 1; }, 200ms))
      << daemon_->Log();
  EXPECT_EQ(Reloads("rejected"), 1) << daemon_->Log();
  EXPECT_EQ(Reloads("ok"), 0) << daemon_->Log();
  // Traffic after the reload: allowed packets keep arriving, not one forbidden packet does.
  const std::uint64_t allowed_at_reload = net.Counts().allowed;
  EXPECT_TRUE(AllowedArrived(net, allowed_at_reload + 10, &counts));
  EXPECT_EQ(net.Counts().forbidden, 0u) << "the refused policy opened the forbidden destination";
  // Neither path's kernel tables switched.
  EXPECT_EQ(KernelPolicyState(), kernel_a);
  // Status names the policy in force (A) and why the reload was refused (status.json follows
  // the metrics within the daemon's loop: polled, bounded).
  const auto last_reload = [&] {
    return daemon_->Status().at("policy").at("last_reload").at("result").get<std::string>();
  };
  ASSERT_TRUE(st::PollUntil(
      30s, [&] { return last_reload() == "rejected"; }, 100ms))
      << daemon_->Status().dump(2);
  const nlohmann::json policy_now = daemon_->Status().at("policy");
  EXPECT_EQ(policy_now.at("bundle_version"), policy_a.at("bundle_version"));
  EXPECT_EQ(policy_now.at("compiled_digest"), policy_a.at("compiled_digest"));
  EXPECT_EQ(policy_now.at("last_reload").at("result").get<std::string>(), "rejected");
  const std::string why = policy_now.at("last_reload").at("error").get<std::string>();
  EXPECT_NE(why.find("storage policy: storage endpoints need more than 4096"), std::string::npos)
      << why;
  // The measured log does not claim the refused bundle, and the store did not advance to it.
  EXPECT_EQ(LastMeasuredPolicy(), policy_a.at("sha256").get<std::string>());
  EXPECT_NE(st::ReadTextFile(daemon_->StateDir() / "policy/state").find("version 1\n"),
            std::string::npos);

  // A valid bundle of the same version is accepted and does open the destination.
  DeployBundle(OpenPolicy(), 2);
  ASSERT_EQ(::kill(daemon_->Pid(), SIGHUP), 0);
  ASSERT_TRUE(st::PollUntil(
      120s, [&] { return Reloads("ok") >= 1; }, 200ms))
      << daemon_->Log();
  EXPECT_TRUE(st::PollUntil(
      60s, [&] { return net.Counts().forbidden > 0; }, 100ms))
      << daemon_->Log();
  ASSERT_TRUE(st::PollUntil(
      30s, [&] { return last_reload() == "ok"; }, 100ms))
      << daemon_->Status().dump(2);
  const nlohmann::json policy_b = daemon_->Status().at("policy");
  EXPECT_EQ(policy_b.at("bundle_version").get<int>(), 2);
  EXPECT_EQ(policy_b.at("last_reload").at("result").get<std::string>(), "ok");
  EXPECT_EQ(LastMeasuredPolicy(), policy_b.at("sha256").get<std::string>());
  EXPECT_NE(KernelPolicyState(), kernel_a);

  guest.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

// A dataset's bit in a guest's mask is its index in the policy. A reload that moves the guest's
// dataset to another index, or changes which datasets select the guest, must move every running
// guest's taps to the mask the new policy gives it: never leave the old bits, which may now name
// a dataset that allows the forbidden destination, nor keep a newly restricted guest open.
TEST_F(DaemonReload, ReloadThatReordersDatasetsKeepsRunningGuestsOnTheirOwnDataset) {
  const std::string kGuest = "sgt-prm";
  st::TestNetwork net("prm");
  // A: the guest holds "eu" (index 0).
  DeployBundle(ZonesWith(Dataset("eu", kGuest, false)), 1);
  StartDaemonWithHook();
  st::TestGuest guest(st::MakeGuestSpec(kGuest, "sgtprm0"));
  ASSERT_NO_FATAL_FAILURE(BootGuestAndFlow(guest, net, 10));
  st::ZoneCounts counts;

  // Reloads `text` as bundle `version` (must be accepted). Returns the forbidden count once a few
  // allowed packets sent after the switch have arrived.
  auto reload = [&](const std::string& text, int version) {
    DeployBundle(text, version);
    const double ok = Reloads("ok");
    EXPECT_EQ(::kill(daemon_->Pid(), SIGHUP), 0);
    EXPECT_TRUE(st::PollUntil(
        120s, [&] { return Reloads("ok") + Reloads("rejected") > ok; }, 200ms))
        << daemon_->Log();
    EXPECT_EQ(Reloads("ok"), ok + 1) << daemon_->Log();
    EXPECT_EQ(daemon_->Status().at("policy").at("bundle_version").get<int>(), version);
    // Packets that passed the filter before the switch have arrived once later ones have.
    const std::uint64_t allowed = net.Counts().allowed;
    EXPECT_TRUE(AllowedArrived(net, allowed + 3, &counts));
    return counts.forbidden;
  };
  // Forbidden packets that arrive while 10 more allowed ones do.
  auto forbidden_while_allowed_flows = [&] {
    const st::ZoneCounts start = net.Counts();
    EXPECT_TRUE(AllowedArrived(net, start.allowed + 10, &counts));
    return counts.forbidden - start.forbidden;
  };

  // B: an allow-everything dataset, held by another guest, takes index 0; "eu" moves to 1.
  EXPECT_EQ(reload(ZonesWith(Dataset("open", "sgt-other", true) + Dataset("eu", kGuest, false)), 2),
            0u)
      << "the guest kept index 0, now the open dataset\n"
      << daemon_->Log();
  EXPECT_EQ(forbidden_while_allowed_flows(), 0u) << "the guest kept index 0, now the open dataset\n"
                                                 << daemon_->Log();

  // C: the guest now holds only the open dataset: its forbidden traffic flows (the mask moved).
  const std::uint64_t forbidden_before_c = net.Counts().forbidden;
  reload(ZonesWith(Dataset("eu", "sgt-other", false) + Dataset("open", kGuest, true)), 3);
  EXPECT_TRUE(st::PollUntil(
      60s, [&] { return net.Counts().forbidden > forbidden_before_c; }, 100ms))
      << "the guest still holds eu\n"
      << daemon_->Log();

  // D: "eu" newly selects the running guest too: it holds both, so only what both allow.
  reload(ZonesWith(Dataset("eu", kGuest, false) + Dataset("open", kGuest, true)), 4);
  EXPECT_EQ(forbidden_while_allowed_flows(), 0u)
      << "a newly restricted guest kept sending to the forbidden destination\n"
      << daemon_->Log();

  guest.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
