// Never silently off, with a real sovguardd: a storage path that could not start (pinned state
// of another machine cgroup that still exists) keeps every guest holding a dataset from starting
// through libvirt's hook, with the reason, and status, `sovguardctl status`, the metrics and the
// quoted enforcement snapshot say so; a machine cgroup replaced while no daemon ran is measured,
// released and guarded again at the next start (a guest cgroup without the dataset is refused a
// labelled volume).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "attestation/eventlog/cel.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/mounts.h"
#include "tests/harness/process.h"
#include "tests/storage/storage_test_util.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
namespace sg = sovguard::storage;

namespace {

constexpr int kOk = 0, kEperm = 13;

// The daemon takes a hardware TPM where there is one: nothing here depends on which.
class DaemonFailClosed : public st::HostDaemonTest {
 protected:
  DaemonFailClosed() : HostDaemonTest("failclosed", /*needs_swtpm=*/false) {}

  // libvirt's qemu hook at "start begin" for a guest without interfaces or sovguard metadata (it
  // holds the shipped policy's default dataset): its exit code, and what libvirt would show.
  // `partition`: the domain's <resource><partition>, none when empty.
  int HookStartBegin(const st::DaemonProcess& daemon, const std::string& name, std::string* out,
                     const std::string& partition = "") {
    const fs::path config = dir_ / "hook.conf";
    std::ofstream(config) << "socket = " << (daemon.RuntimeDir() / "libvirt-hook.sock").string()
                          << "\ntimeout_ms = 30000\n";
    const fs::path xml = dir_ / (name + ".xml");
    std::ofstream(xml) << "<domain type='qemu' id='91'><name>" << name
                       << "</name><uuid>6f1c3a52-0d7e-4c1b-9a51-3c2d7e0f9a91</uuid>"
                       << (partition.empty()
                               ? ""
                               : "<resource><partition>" + partition + "</partition></resource>")
                       << "<devices></devices></domain>";
    return st::RunShell(std::string(SOVGUARD_LIBVIRT_HOOK) + " --config " + config.string() + " " +
                            name + " start begin - < " + xml.string() + " 2>&1",
                        out);
  }

  static double Metric(const st::DaemonProcess& daemon, const std::string& series) {
    std::string out;
    if (st::RunShell("curl -sf " + daemon.Status().at("metrics").get<std::string>(), &out) != 0)
      return -1;
    const auto at = out.find("\n" + series + " ");
    if (at == std::string::npos) return -1;
    return std::stod(out.substr(at + series.size() + 2));
  }

  static std::vector<std::string> MeasuredNames(const st::DaemonProcess& daemon) {
    const auto log = st::ReadTextFile(daemon.StateDir() / "measurements/cel.bin");
    std::vector<std::string> names;
    for (const auto& r : sovguard::attestation::cel::DecodeLog(
             std::span(reinterpret_cast<const std::uint8_t*>(log.data()), log.size()))) {
      if (r.content_type != sovguard::attestation::cel::kContentSovguard) continue;
      names.push_back(sovguard::attestation::cel::DecodeSovguardContent(r.content).name);
    }
    return names;
  }
};

TEST_F(DaemonFailClosed, StorageStateItCannotAdoptKeepsGuestsHoldingADatasetFromStarting) {
  // Pinned storage state of another machine cgroup that still exists, where this daemon's
  // storage path pins (bpf_pin_dir/storage): the daemon must not adopt nor release it.
  sg::testing::TestCgroups other;
  const fs::path pins = fs::path("/sys/fs/bpf/sovguard-test") /
                        std::to_string(std::hash<std::string>{}(dir_.string())) / "storage";
  sovguard::enforcer::EnsureBpffs();
  {
    sg::StorageDatapath stale(
        sg::StorageOptions{.machine_cgroup = other.machine(), .pin_dir = pins});
  }

  st::DaemonProcess daemon(dir_, ShippedDataArgs());
  ASSERT_EQ(daemon.PinDir() / "storage", pins);
  std::string why, out;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const auto status = daemon.Status();
  EXPECT_FALSE(status.at("storage").at("enforced").get<bool>()) << status.dump(2);
  const std::string unguarded = status.value("not_enforced", "");
  EXPECT_NE(unguarded.find("storage-open"), std::string::npos) << unguarded;
  EXPECT_NE(unguarded.find("still exists"), std::string::npos) << unguarded;
  const auto paths = status.value("enforcement", nlohmann::json::array());
  EXPECT_EQ(paths.size(), 7u) << status.dump(2);
  for (const auto& p : paths) {
    const bool storage = p.at("path").get<std::string>().starts_with("storage-");
    EXPECT_EQ(p.at("enforced").get<bool>(), !storage) << p.dump();
  }
  EXPECT_NE(daemon.Log().find("NOT ENFORCED"), std::string::npos) << daemon.Log();

  // libvirt's hook refuses a guest that holds a dataset, naming why.
  EXPECT_NE(HookStartBegin(daemon, "sgt-fc-refused", &out), 0) << out;
  EXPECT_NE(out.find("not enforced"), std::string::npos) << out;
  EXPECT_NE(out.find("storage-open"), std::string::npos) << out;

  ASSERT_EQ(
      st::RunShell(
          st::DaemonProcess::Ctl() + " status --runtime-dir " + daemon.RuntimeDir().string(), &out),
      0)
      << out;
  EXPECT_NE(out.find("enforced: NOT ENFORCED: "), std::string::npos) << out;
  EXPECT_NE(out.find("guests holding a dataset are refused"), std::string::npos) << out;

  EXPECT_EQ(Metric(daemon, "sovguard_path_enforced{path=\"storage-open\"}"), 0) << daemon.Log();
  EXPECT_EQ(Metric(daemon, "sovguard_path_enforced{path=\"storage-network\"}"), 0);
  EXPECT_EQ(Metric(daemon, "sovguard_path_enforced{path=\"guest-network-egress\"}"), 1);

  // The quoted enforcement snapshot says so, with the reason.
  const std::string evidence = (dir_ / "evidence.json").string();
  const std::string socket = status.at("api_socket").get<std::string>().substr(5);  // "unix:"
  ASSERT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " attest quote --nonce 0011223344556677 " +
                             "--socket " + socket + " -o " + evidence + " 2>&1",
                         &out),
            0)
      << out;
  const auto snapshot = nlohmann::json::parse(st::ReadTextFile(evidence)).at("snapshot");
  int storage_paths = 0;
  for (const auto& m : snapshot.at("mechanisms")) {
    if (!m.at("path").get<std::string>().starts_with("storage-")) {
      EXPECT_FALSE(m.value("not_enforced", false)) << m.dump();
      continue;
    }
    ++storage_paths;
    EXPECT_TRUE(m.value("not_enforced", false)) << m.dump();
    EXPECT_NE(m.value("reason", "").find("still exists"), std::string::npos) << m.dump();
  }
  EXPECT_EQ(storage_paths, 5) << snapshot.dump(2);
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

TEST_F(DaemonFailClosed, MachineCgroupReplacedWhileNoDaemonRanIsMeasuredAndGuardedAgain) {
  // The shipped policy switched to ENFORCE (as its comment tells operators to), so a refused
  // open is refused, not only audited.
  const fs::path data = dir_ / "data";
  fs::create_directories(data);
  fs::create_symlink(fs::path(SOVGUARD_SOURCE_DIR) / "policy/data/world.sgjt", data / "world.sgjt");
  std::string policy =
      st::ReadTextFile(fs::path(SOVGUARD_SOURCE_DIR) / "policy/data/default-eu-eea.textproto");
  const auto mode = policy.find("mode: AUDIT");
  ASSERT_NE(mode, std::string::npos);
  policy.replace(mode, 11, "mode: ENFORCE");
  std::ofstream(data / "default-eu-eea.textproto") << policy;
  // A volume of the shipped policy's dataset, labelled on a defined (never started) domain: the
  // daemon protects it from its first reconcile on.
  const fs::path volume = dir_ / "labelled.img";
  sg::testing::WriteFile(volume, 1 << 16);
  const std::string domain = "sgt-fc-" + std::to_string(::getpid());
  const fs::path xml = dir_ / "domain.xml";
  std::ofstream(xml) << "<domain type='qemu'><name>" << domain
                     << "</name><memory unit='MiB'>64</memory><os><type>hvm</type></os>"
                        "<metadata><sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/"
                        "1\"><disk target=\"vda\" dataset=\"default-eu-eea\"/></sovguard:guest>"
                        "</metadata><devices><disk type='file' device='disk'><source file='"
                     << volume.string() << "'/><target dev='vda' bus='virtio'/></disk></devices>"
                     << "</domain>";
  std::string why, out;
  // In a libvirt partition of its own (libvirt_partition): replacing the host's machine cgroup
  // would drop what a stopped node on this host keeps attached there.
  const st::LibvirtPartition partition("sgtfc");
  // On the harness's libvirtd, not the host's: a node left on this host keeps its own libvirtd,
  // whose state (its QEMU capabilities cache, written at the first define) stays untouched.
  struct HarnessLibvirt {
    bool started = st::LibvirtDaemons::Start();
    ~HarnessLibvirt() {
      if (started) st::LibvirtDaemons::Stop();
    }
  } libvirt;
  const std::string virsh = std::string("virsh -q -c '") + st::LibvirtDaemons::kUri + "' ";
  st::DaemonProcess daemon(
      dir_, {"--data-dir", data.string(), "--set", "libvirt_partition=/sgtfc", "--set",
             std::string("libvirt_uri=") + st::LibvirtDaemons::kUri, "--set",
             std::string("libvirt_qemu_run_dir=") + st::LibvirtDaemons::kQemuRunDir, "--set",
             "start_libvirtd=false"});
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  ASSERT_EQ(st::RunShell(virsh + "define " + xml.string() + " 2>&1", &out), 0) << out;
  struct Undefine {
    std::string command;
    ~Undefine() { st::RunShell(command); }
  } undefine{virsh + "undefine " + domain + " >/dev/null 2>&1"};
  auto protected_volumes = [&] { return daemon.Status().at("storage").value("volumes", 0); };
  ASSERT_TRUE(st::PollUntil(
      std::chrono::seconds(20), [&] { return protected_volumes() >= 1; },
      std::chrono::milliseconds(100)))
      << daemon.Status().dump(2);
  const fs::path machine = daemon.Status().at("storage").at("machine_cgroup").get<std::string>();
  ASSERT_EQ(machine.filename(), "sgtfc.partition") << daemon.Status().dump(2);
  ASSERT_EQ(daemon.Terminate(), 0) << daemon.Log();

  // Replaced while no daemon runs (emptied cgroups of earlier guests go first).
  st::ReplaceCgroup(machine);

  daemon.Restart();
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const auto status = daemon.Status();
  EXPECT_TRUE(status.at("storage").at("enforced").get<bool>()) << status.dump(2);
  EXPECT_EQ(status.value("not_enforced", "?"), "") << status.dump(2);
  ASSERT_EQ(st::RunShell("bpftool cgroup show " + machine.string(), &out), 0) << out;
  EXPECT_NE(out.find("connect4"), std::string::npos) << out;
  // Measured into the TPM log (the quote shows it) and counted, before it was released.
  const auto names = MeasuredNames(daemon);
  EXPECT_NE(std::find(names.begin(), names.end(), "tamper:storage-machine-cgroup-replaced"),
            names.end())
      << daemon.Log();
  EXPECT_EQ(
      Metric(daemon, "sovguard_tamper_findings_total{kind=\"storage-machine-cgroup-replaced\"}"),
      1);
  EXPECT_EQ(Metric(daemon, "sovguard_path_enforced{path=\"storage-open\"}"), 1);

  // A guest cgroup without the dataset is refused the labelled volume.
  ASSERT_TRUE(st::PollUntil(
      std::chrono::seconds(20), [&] { return protected_volumes() >= 1; },
      std::chrono::milliseconds(100)))
      << daemon.Status().dump(2);
  const fs::path intruder = machine / "qemu-92-sgt-fc-intruder.libvirt-qemu";
  ASSERT_EQ(::mkdir(intruder.c_str(), 0755), 0) << strerror(errno);
  const auto r = sg::testing::RunInCgroup(intruder, [&] {
    return ::open(volume.c_str(), O_RDONLY) >= 0 ? kOk : (errno == EPERM ? kEperm : 21);
  });
  ::rmdir(intruder.c_str());
  EXPECT_TRUE(r.signal == SIGKILL || (r.exited && r.exit_code == kEperm))
      << "exit " << r.exit_code << " signal " << r.signal << "\n"
      << daemon.Log();
  // With every path enforced, the hook lets a guest holding a dataset start in the partition;
  // libvirt's default partition is outside it now.
  EXPECT_EQ(HookStartBegin(daemon, "sgt-fc-allowed", &out, "/sgtfc"), 0) << out << daemon.Log();
  EXPECT_NE(HookStartBegin(daemon, "sgt-fc-default", &out), 0) << out;
  EXPECT_NE(out.find("cgroup partition /machine is outside"), std::string::npos) << out;
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

}  // namespace
