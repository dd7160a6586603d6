// The vm tier (ctest -L vm): each test boots the distribution kernel once (tests/vm/run-in-vm.sh,
// QEMU TCG, the host's / read-only with a tmpfs overlay), runs kernel-tier binaries of this build
// tree there as root, and judges on the host what they wrote into the shared run directory: each
// binary's exit status and gtest JSON report (no failure and no skip allowed), the lsm list the
// guest booted with, and `sovguardctl probe --json`.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "base/file.h"
#include "tests/harness/require.h"

namespace {

namespace fs = std::filesystem;

// Every case of vm_storage_prevents_test: both VFS rungs (BPF LSM, fmod_ret) must pass them all.
const std::vector<std::string> kEveryPreventsCase = {
    "VmStoragePreventsTest.RefusedOpenReturnsEpermAndTheProcessKeepsRunning",
    "VmStoragePreventsTest.EveryWayOfOpeningTheVolumeIsRefused",
    "VmStoragePreventsTest.ReadOnlyVolumeOpenedForWritingIsEpermAndReadingStillWorks",
    "VmStoragePreventsTest.PassedInVolumeIsNeitherReadNorCopiedNorMapped",
    "VmStoragePreventsTest.PassedInVolumeTruncatedIsKilledAndNamed",
    "VmStoragePreventsTest.MappingAVolumeOfABudgetedDatasetIsRefused",
    "VmStoragePreventsTest.WriteQuotaIsRefusedWithEdquotAndTheProcessLives",
    "VmStoragePreventsTest.WriteThatWouldCrossTheQuotaIsRefusedWhole"};

struct Binary {
  std::string path;    // relative to the build tree
  std::string filter;  // --gtest_filter, "" for all
  std::string env;     // VAR=value ... set for this binary only
};

std::string ReadText(const fs::path& p) {
  return sovguard::base::TryReadFileText(p, nullptr).value_or("");
}

std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Left out in the guest: a bound on loading a world-sized address table (60 s) that TCG cannot meet
// (load + reload took 108 s there, the test 158 s); it tests table loading, not the open/quota
// hooks, and runs on the host's kernel tier.
constexpr const char* kTcgTooSlow =
    "StorageKernelTest.WorldSizedAddressTablesLoadAndReloadInBoundedTime";

// Left out in the guest: 100 policy swaps under lock-step traffic expects traffic during every
// swap; under TCG 67 of 100 swaps saw traffic (0 forbidden delivered, 0 allowed lost), 193 s.
constexpr const char* kTcgTooSlowNet =
    "-NetnsTest.HundredSwapsUnderTrafficLeakNothingAndDropNothingAllowed";

class VmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (the guest runs the kernel tier as root)");
    SOVGUARD_REQUIRE(fs::exists(SOVGUARD_VM_KERNEL),
                     "the distribution kernel (linux-image-amd64) at " << SOVGUARD_VM_KERNEL);
    SOVGUARD_REQUIRE(fs::exists(SOVGUARD_VM_INITRAMFS),
                     "the vm initramfs at " << SOVGUARD_VM_INITRAMFS);
    SOVGUARD_REQUIRE(std::system("command -v qemu-system-x86_64 >/dev/null") == 0,
                     "qemu-system-x86_64 (qemu-system-x86)");
  }

  // One boot with lsm=`lsm` ("" keeps the kernel's built-in list) and an emulated NVMe disk
  // (run-in-vm.sh --nvme, an 8 MiB image in the run directory): writes the probe's JSON, then
  // runs each binary with its filter; returns the run directory. Fails the test when the guest
  // did not finish (bounded by `timeout_s`) or its script failed.
  fs::path Boot(const std::string& name, const std::string& lsm, const std::vector<Binary>& bins,
                int timeout_s) {
    const fs::path io = fs::path(SOVGUARD_VM_RUN_DIR) / name;
    fs::remove_all(io);
    fs::create_directories(io);
    std::ofstream script(io / "script.sh");
    const std::string b = Quote(SOVGUARD_BINARY_DIR), d = Quote(io.string());
    script << "cd " << d << "\n"
           << b << "/enforcer/ctl/sovguardctl probe --json >probe.json; echo $? >probe.rc\n"
           << b << "/enforcer/ctl/sovguardctl probe\n";
    for (const auto& bin : bins) {
      const std::string base = fs::path(bin.path).filename();
      script << "echo \"== " << base << "\"\n"
             << (bin.env.empty() ? "" : "env " + bin.env + " ") << b << "/" << bin.path
             << " --gtest_color=no --gtest_output=json:" << base << ".json"
             << (bin.filter.empty() ? "" : " --gtest_filter=" + Quote(bin.filter)) << "; echo $? >"
             << base << ".rc\n";
    }
    script.close();
    const fs::path nvme = io / "nvme.img";
    std::ofstream(nvme).close();
    fs::resize_file(nvme, 8 << 20);
    Run(io, lsm, false, timeout_s, nvme);
    return io;
  }

  // Boots once (lsm= `lsm`, "" for the built-in list; systemd as PID 1 when `systemd`; the raw
  // image `nvme`, when given, as an NVMe disk) and runs io/script.sh; fails the test when the
  // guest did not finish within `timeout_s` or the script failed.
  static void Run(const fs::path& io, const std::string& lsm, bool systemd, int timeout_s,
                  const fs::path& nvme = {}) {
    std::string cmd = std::string(SOVGUARD_VM_RUNNER) + " --kernel " + SOVGUARD_VM_KERNEL +
                      " --initramfs " + SOVGUARD_VM_INITRAMFS + " --io " + Quote(io.string()) +
                      " --timeout " + std::to_string(timeout_s);
    if (!lsm.empty()) cmd += " --lsm " + lsm;
    if (systemd) cmd += " --systemd";
    if (!nvme.empty()) cmd += " --nvme " + Quote(nvme.string());
    cmd += " -- bash " + Quote((io / "script.sh").string()) + " 2>&1";
    std::fflush(stdout);
    const int status = std::system(cmd.c_str());  // output goes to the test's own log
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "run-in-vm.sh status " << status << " (124: bound hit, 125: no status from the guest)";
  }

  static std::string Lsm(const fs::path& io) {
    std::string s = ReadText(io / "lsm");
    while (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }

  static nlohmann::json Probe(const fs::path& io, const std::string& path) {
    EXPECT_EQ(ReadText(io / "probe.rc"), "0\n");
    const auto j = nlohmann::json::parse(ReadText(io / "probe.json"));
    for (const auto& p : j.at("paths")) {
      if (p.at("path") == path) return p;
    }
    ADD_FAILURE() << "probe lists no " << path;
    return nlohmann::json::object();
  }

  // Every test in `bin`'s report ran and passed (none skipped), and each of `must` is among them.
  static void ExpectPassedWithoutSkips(const fs::path& io, const std::string& bin,
                                       const std::vector<std::string>& must) {
    EXPECT_EQ(ReadText(io / (bin + ".rc")), "0\n") << bin << " exit status";
    const fs::path report = io / (bin + ".json");
    ASSERT_TRUE(fs::exists(report)) << bin << " wrote no report";
    const auto j = nlohmann::json::parse(ReadText(report));
    std::set<std::string> passed;
    int tests = 0;
    for (const auto& suite : j.at("testsuites")) {
      for (const auto& t : suite.at("testsuite")) {
        ++tests;
        const std::string name =
            suite.at("name").get<std::string>() + "." + t.at("name").get<std::string>();
        const bool failed = t.contains("failures") && !t.at("failures").empty();
        EXPECT_EQ(t.at("result"), "COMPLETED") << name << ": a skip inside the VM is a failure";
        EXPECT_FALSE(failed) << name << " failed in the VM";
        if (!failed && t.at("result") == "COMPLETED") passed.insert(name);
      }
    }
    EXPECT_GT(tests, 0) << bin << " ran no test";
    for (const auto& m : must) EXPECT_TRUE(passed.count(m)) << m << " did not pass in the VM";
    std::printf("%s: %d tests, %zu passed in the VM\n", bin.c_str(), tests, passed.size());
  }
};

// The distribution kernel with its built-in lsm= (bpf included): the prevents path.
TEST_F(VmTest, BpfLsmStorageTierPrevents) {
  const auto io = Boot(
      "bpf-lsm", "",
      {{"tests/probe/probe_test",
        "ProbeTest.StorageOpenPreventsWithoutBpfLsm:"
        "ProbeTest.CgroupMechanismsPreventOnThisKernel"},
       {"tests/vm/vm_storage_prevents_test", ""},
       {"tests/storage/storage_kernel_test", std::string("-") + kTcgTooSlow},
       {"tests/storage/storage_systemd_test", ""},
       {"tests/storage/storage_volume_id_test", "VolumeIdTest.ImageInABtrfs*:VolumeIdTest.Nvme*"},
       {"tests/datapath/datapath_netns_test", kTcgTooSlowNet},
       {"tests/datapath/datapath_escape_test", ""},
       {"tests/daemon/daemon_strongest_test", "",
        "SOVGUARD_EXPECT_STORAGE_OPEN=bpf-lsm:file_open "
        "SOVGUARD_EXPECT_DOWNGRADED=''"}},
      1500);
  const std::string lsm = Lsm(io);
  std::printf("guest lsm=%s\n", lsm.c_str());
  EXPECT_NE(("," + lsm + ",").find(",bpf,"), std::string::npos) << lsm;
  const auto open = Probe(io, "storage-open");
  EXPECT_EQ(open.value("mechanism", ""), "bpf-lsm:file_open") << open.dump();
  EXPECT_EQ(open.value("guarantee", ""), "prevents") << open.dump();
  ExpectPassedWithoutSkips(io, "probe_test", {"ProbeTest.StorageOpenPreventsWithoutBpfLsm"});
  ExpectPassedWithoutSkips(io, "vm_storage_prevents_test", kEveryPreventsCase);
  ExpectPassedWithoutSkips(io, "storage_kernel_test",
                           {"StorageKernelTest.BpfLsmRefusesTheOpenWithEperm",
                            "StorageKernelTest.ReadOnlyVolumeOpenedForWritingIsRefused",
                            "StorageKernelTest.WriteQuotaStopsWrites"});
  ExpectPassedWithoutSkips(io, "storage_systemd_test",
                           {"StorageSystemdTest.GuestWithoutTheDatasetInLibvirtEmulatorIsRefused"});
  // btrfs is a module here, loaded by the test's mount after the programs: its files are still
  // refused by the LSM (keyed by file system and inode number, as the programs key them then).
  // A protected NVMe namespace's pass-through devices are refused with the LSM selected too.
  ExpectPassedWithoutSkips(
      io, "storage_volume_id_test",
      {"VolumeIdTest.ImageInABtrfsSubvolumeIsGuardedAndOnlyThatSubvolumesInode",
       "VolumeIdTest.NvmeGenericAndControllerNodesOfAProtectedNamespaceAreRefused"});
  // The network path on the distribution kernel: tc programs load, enforce, and the escape
  // corpus delivers nothing.
  for (const char* path : {"guest-network-egress", "guest-network-ingress"}) {
    EXPECT_EQ(Probe(io, path).value("guarantee", ""), "prevents") << Probe(io, path).dump();
  }
  ExpectPassedWithoutSkips(io, "datapath_netns_test",
                           {"NetnsTest.EnforceLetsAllowedThroughAndStopsForbidden"});
  ExpectPassedWithoutSkips(
      io, "datapath_escape_test",
      {"EscapeTest.NoAttackFrameReachesAForbiddenDestination", "EscapeTest.ControlsStillWork"});
  // The daemon selects the LSM for opens and quotas and 6.1's io_uring tracepoints for counting;
  // its quote measures no downgrade, and sovguard-verify --require-strongest passes.
  ExpectPassedWithoutSkips(
      io, "daemon_strongest_test",
      {"DaemonStrongest.RequireStrongestPassesOnlyWhenNoPathRunsBelowTheTopOfItsLadder"});
}

// The same kernel booted with an lsm= list without bpf: the fallback ladder is selected and says
// why, and the storage tier passes on it, with the volume aliases this kernel has (dm, SCSI). Only
// the test that exists to exercise the LSM is left out (it would skip with kernel-feature:bpf-lsm,
// which is this boot's point).
TEST_F(VmTest, WithoutBpfLsmTheFallbackLadderIsSelectedAndPasses) {
  const auto io =
      Boot("no-bpf-lsm", "lockdown,capability,landlock,yama,apparmor",
           {{"tests/probe/probe_test", "ProbeTest.StorageOpenPreventsWithoutBpfLsm"},
            {"tests/vm/vm_storage_prevents_test", "",
             "SOVGUARD_EXPECT_STORAGE_OPEN=fmod_ret:security_file_open"},
            {"tests/storage/storage_kernel_test",
             std::string("-StorageKernelTest.BpfLsmRefusesTheOpenWithEperm:") + kTcgTooSlow},
            {"tests/storage/storage_systemd_test", ""},
            {"tests/storage/storage_io_paths_test", "*IoUring*"},
            {"tests/storage/storage_volume_id_test", ""}},
           1500);
  const std::string lsm = Lsm(io);
  std::printf("guest lsm=%s\n", lsm.c_str());
  EXPECT_EQ(("," + lsm + ",").find(",bpf,"), std::string::npos) << lsm;
  EXPECT_FALSE(lsm.empty());
  const auto open = Probe(io, "storage-open");
  const std::string mech = open.value("mechanism", "");
  std::printf("storage-open without bpf in lsm=: %s (%s)\n", mech.c_str(),
              open.value("guarantee", "").c_str());
  // The ladder's next rung: the same programs' judgement as fmod_ret in front of the kernel's
  // security_*() functions (this kernel has BPF trampolines) still refuses the open (EPERM).
  EXPECT_EQ(mech, "fmod_ret:security_file_open") << open.dump();
  EXPECT_EQ(open.value("guarantee", ""), "prevents") << open.dump();
  ASSERT_TRUE(open.contains("attempts") && !open.at("attempts").empty()) << open.dump();
  const auto& first = open.at("attempts").front();
  EXPECT_EQ(first.value("mechanism", ""), "bpf-lsm:file_open");
  EXPECT_FALSE(first.value("ok", true)) << "the LSM attempt must fail without bpf in lsm=";
  EXPECT_FALSE(first.value("error", "").empty()) << "the downgrade must say why";
  ExpectPassedWithoutSkips(io, "probe_test", {"ProbeTest.StorageOpenPreventsWithoutBpfLsm"});
  // Prevention asserted as strictly as under the LSM, descriptors passed in included.
  ExpectPassedWithoutSkips(io, "vm_storage_prevents_test", kEveryPreventsCase);
  ExpectPassedWithoutSkips(
      io, "storage_kernel_test",
      {"StorageKernelTest.GuestWithoutTheDatasetIsRefusedOrKilledAndTheEventNamesIt",
       "StorageKernelTest.StatusNamesMechanismAndGuaranteePerPath",
       "StorageKernelTest.ReadOnlyVolumeOpenedForWritingIsRefused",
       "StorageKernelTest.WriteQuotaStopsWrites"});
  ExpectPassedWithoutSkips(io, "storage_systemd_test", {});
  // 6.1's io_uring tracepoints (result as an argument, io_uring_submit_sqe): io_uring opens of
  // another dataset's volume killed, its reads and writes counted exactly and held to budgets.
  ExpectPassedWithoutSkips(
      io, "storage_io_paths_test",
      {"StorageIoPathsTest.IoUringOpenatOfAnotherDatasetsVolumeIsKilled",
       "Paths/IoPathTest.BytesAreCountedExactly/IoUring",
       "Paths/IoPathTest.WriteBudgetKills/IoUring", "Paths/IoPathTest.ReadBudgetKills/IoUring",
       "Paths/PassedFdTest.ReadOfAPassedInVolumeIsKilledBeforeTheDataArrives/IoUring"});
  // Block-device aliases on a kernel with device-mapper, SCSI and NVMe (cgroup/dev judges them
  // alike with or without BPF LSM): dm targets over and under a protected device, a protected
  // SCSI disk's sg and bsg pass-through nodes, a protected NVMe namespace's ngXnY and nvmeX; the
  // kernel's NVMe target serving a protected device or image, disabled; an overlay file copied up
  // at protection (guarded in its upper layer at once; refused where the copy-up fails).
  ExpectPassedWithoutSkips(
      io, "storage_volume_id_test",
      {"VolumeIdTest.DeviceMapperAliasesOfAProtectedDeviceAreRefused",
       "VolumeIdTest.ScsiGenericAndBsgNodesOfAProtectedDiskAreRefused",
       "VolumeIdTest.NvmeGenericAndControllerNodesOfAProtectedNamespaceAreRefused",
       "VolumeIdTest.ImageInABtrfsSubvolumeIsGuardedAndOnlyThatSubvolumesInode",
       "VolumeIdTest.NvmetNamespaceServingAProtectedVolumeIsDisabled",
       "VolumeIdTest.OverlayFileCopiedUpAfterProtectionIsGuardedInItsUpperLayerAtOnce",
       "VolumeIdTest.OverlayFileThatCannotBeCopiedUpIsRefusedProtection",
       "VolumeIdTest.OverlayFileTheDaemonCannotCopyUpIsProtectedAndNamed"});
}

// A systemd host: the same kernel booted with systemd as PID 1 (the host's systemd, machined,
// libvirt and swtpm). tests/vm/systemd-host.sh installs the .deb built here with apt, runs
// sovguardd.service and writes one line per check; each must say ok. What they cover: readiness
// through Type=notify and watchdog pings; libvirtd and swtpm, which sovguardd starts when they do
// not run, as units of their own (never in sovguardd.service's cgroup); the hardened unit pins
// and attaches its programs and quotes with the swtpm; a guest started by libvirt under machined
// runs in machine.slice/machine-qemu...scope with its tap filtered, and a guest without its
// dataset is refused the volume (journalctl SOVGUARD_EVENT=violation names it); a bad bundle on
// reload leaves the last good policy; `systemctl stop`, `start` (adopts) and a SIGKILL (Restart=)
// leave the guest, libvirtd and swtpm running with enforcement in place; no key in the journal.
TEST_F(VmTest, SystemdHostRunsThePackagedUnit) {
  SOVGUARD_REQUIRE(std::system("command -v cpack >/dev/null && command -v apt-get >/dev/null && "
                               "test -x /lib/systemd/systemd") == 0,
                   "cpack, apt-get and systemd (the systemd boot installs the .deb)");
  const fs::path io = fs::path(SOVGUARD_VM_RUN_DIR) / "systemd";
  fs::remove_all(io);
  fs::create_directories(io / "deb");
  // The package as the packaging test builds it (cpack in this build tree).
  const std::string cpack = "cd " + Quote(SOVGUARD_BINARY_DIR) + " && cpack -G DEB -B " +
                            Quote((io / "deb").string()) + " >" +
                            Quote((io / "cpack.log").string()) + " 2>&1";
  ASSERT_EQ(std::system(cpack.c_str()), 0) << ReadText(io / "cpack.log");
  fs::path deb;
  for (const auto& e : fs::directory_iterator(io / "deb"))
    if (e.path().extension() == ".deb") deb = e.path();
  ASSERT_FALSE(deb.empty()) << ReadText(io / "cpack.log");
  // A jurisdiction table of four countries from the shared data (systemd-host.sh says why).
  const fs::path countries = io / "table/country";
  fs::create_directories(countries);
  for (const char* cc : {"lu", "mt", "is", "li"}) {
    fs::copy(fs::path(SOVGUARD_SHARED_DATA_DIR) / "country-ip-blocks/country" / cc, countries / cc,
             fs::copy_options::recursive);
  }
  const std::string compile =
      std::string(SOVGUARD_BINARY_DIR) + "/enforcer/ctl/sovguardctl jurisdiction compile --from " +
      Quote((io / "table").string()) + " -o " + Quote((io / "world.sgjt").string()) + " >" +
      Quote((io / "table.log").string()) + " 2>&1";
  ASSERT_EQ(std::system(compile.c_str()), 0) << ReadText(io / "table.log");
  std::ofstream(io / "script.sh") << "exec bash " << Quote(SOVGUARD_VM_SYSTEMD_SCRIPT) << " "
                                  << Quote(deb.string()) << " " << Quote(io.string()) << " "
                                  << Quote(SOVGUARD_VM_KERNEL) << " "
                                  << Quote((io / "world.sgjt").string()) << "\n";
  const auto start = std::chrono::steady_clock::now();
  Run(io, "", true, 1800);
  std::printf("systemd boot: %lld s\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::seconds>(
                                         std::chrono::steady_clock::now() - start)
                                         .count()));
  const std::string checks = ReadText(io / "checks");
  std::printf("%s", checks.c_str());
  EXPECT_EQ(checks.find("FAIL "), std::string::npos) << checks;
  std::vector<std::string> must = {"systemd-is-pid-1",
                                   "dpkg-database-consistent",
                                   "deb-installed",
                                   "unit-enabled-by-postinst",
                                   "start-returned",
                                   "notify-ready",
                                   "libvirtd-started-as-its-unit",
                                   "libvirtd-in-own-cgroup",
                                   "swtpm-in-own-unit",
                                   "swtpm-sockets-0600-dir-0700",
                                   "only-daemon-in-its-cgroup",
                                   "modes-as-documented",
                                   "group-member-reads-status",
                                   "group-member-quotes",
                                   "non-member-refused-status",
                                   "non-member-refused-quote",
                                   "watchdog-pings",
                                   "bpf-pinned",
                                   "cgroup-programs-on-machine-slice",
                                   "tpm-quote",
                                   "plain-started",
                                   "plain-in-machined-scope",
                                   "plain-tap-filtered",
                                   "holder-started",
                                   "holder-in-machined-scope",
                                   "holder-tap-filtered",
                                   "intruder-refused",
                                   "violation-in-journal",
                                   "reload-rejected-in-journal",
                                   "reload-kept-policy",
                                   "reload-still-active",
                                   "stopped",
                                   "restart-active",
                                   "restart-adopted-storage",
                                   "restart-adopted-tap",
                                   "restart-swtpm-reused",
                                   "restart-only-daemon-in-its-cgroup",
                                   "crash-restarted",
                                   "no-private-key-in-journal",
                                   "no-signer-key-in-journal"};
  for (const char* when : {"stop", "start", "crash"}) {
    for (const char* what : {"guest-running", "guest-state", "libvirtd-running", "swtpm-running",
                             "tap-filtered", "pins", "cgroup-programs"})
      must.push_back(std::string(when) + "-" + what);
  }
  for (const auto& m : must)
    EXPECT_NE(("\n" + checks).find("\nok " + m + "\n"), std::string::npos) << m << " not ok";

  // The storage path saw machined's layout and the guest's scope.
  const auto status = nlohmann::json::parse(ReadText(io / "status-guest.json"));
  const auto& storage = status.at("storage");
  EXPECT_EQ(storage.value("layout", ""), "systemd") << storage.dump(2);
  EXPECT_TRUE(storage.value("machine_cgroup", "").ends_with("/machine.slice")) << storage.dump(2);
  // Both guests registered (a count), and the holder's QEMU, in its machined scope, counted as
  // the guest holding "health" when it read its disk.
  EXPECT_GE(storage.value("guests", 0), 2) << storage.dump(2);
  bool holder_counted = false;
  for (const auto& c : storage.value("counters", nlohmann::json::array())) {
    holder_counted |= c.value("guest", "") == "sgvm-holder" && c.value("dataset", "") == "health" &&
                      c.value("read_bytes", std::uint64_t{0}) > 0;
  }
  EXPECT_TRUE(holder_counted) << storage.dump(2);
  // The refusal in the journal, with its fields.
  bool found = false;
  std::istringstream violations(ReadText(io / "violations.json"));
  for (std::string line; std::getline(violations, line);) {
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line);
    if (j.value("SOVGUARD_GUEST", "") != "sgvm-intruder") continue;
    found = true;
    EXPECT_EQ(j.value("SOVGUARD_PATH", ""), "storage") << line;
    EXPECT_EQ(j.value("SOVGUARD_DATASET", ""), "health") << line;
    EXPECT_FALSE(j.value("SOVGUARD_VERDICT", "").empty()) << line;
    EXPECT_EQ(j.value("SYSLOG_IDENTIFIER", ""), "sovguardd") << line;
  }
  EXPECT_TRUE(found) << "no SOVGUARD_EVENT=violation record names sgvm-intruder:\n"
                     << ReadText(io / "violations.json");
}

}  // namespace
