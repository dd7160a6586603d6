// The vm tier (ctest -L vm): each test boots the distribution kernel once (tests/vm/run-in-vm.sh,
// QEMU TCG, the host's / read-only with a tmpfs overlay), runs kernel-tier binaries of this build
// tree there as root, and judges on the host what they wrote into the shared run directory: each
// binary's exit status and gtest JSON report (no failure and no skip allowed), the lsm list the
// guest booted with, and `sovguardctl probe --json`.
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/harness/require.h"

namespace {

namespace fs = std::filesystem;

struct Binary {
  std::string path;    // relative to the build tree
  std::string filter;  // --gtest_filter, "" for all
  std::string env;     // VAR=value ... set for this binary only
};

std::string ReadText(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
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

  // One boot with lsm=`lsm` ("" keeps the kernel's built-in list): writes the probe's JSON, then
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
    std::string cmd = std::string(SOVGUARD_VM_RUNNER) + " --kernel " + SOVGUARD_VM_KERNEL +
                      " --initramfs " + SOVGUARD_VM_INITRAMFS + " --io " + Quote(io.string()) +
                      " --timeout " + std::to_string(timeout_s);
    if (!lsm.empty()) cmd += " --lsm " + lsm;
    cmd += " -- bash " + Quote((io / "script.sh").string()) + " 2>&1";
    std::fflush(stdout);
    const int status = std::system(cmd.c_str());  // output goes to the test's own log
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
        << "run-in-vm.sh status " << status << " (124: bound hit, 125: no status from the guest)";
    return io;
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
  const auto io = Boot("bpf-lsm", "",
                       {{"tests/probe/probe_test",
                         "ProbeTest.StorageOpenPreventsWithFanotifyWithoutBpfLsm:"
                         "ProbeTest.CgroupMechanismsPreventOnThisKernel"},
                        {"tests/vm/vm_storage_prevents_test", ""},
                        {"tests/storage/storage_kernel_test", std::string("-") + kTcgTooSlow},
                        {"tests/storage/storage_systemd_test", ""},
                        {"tests/storage/storage_volume_id_test", "VolumeIdTest.ImageInABtrfs*"},
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
  ExpectPassedWithoutSkips(io, "probe_test",
                           {"ProbeTest.StorageOpenPreventsWithFanotifyWithoutBpfLsm"});
  ExpectPassedWithoutSkips(
      io, "vm_storage_prevents_test",
      {"VmStoragePreventsTest.RefusedOpenReturnsEpermAndTheProcessKeepsRunning",
       "VmStoragePreventsTest.EveryWayOfOpeningTheVolumeIsRefused",
       "VmStoragePreventsTest.ReadOnlyVolumeOpenedForWritingIsEpermAndReadingStillWorks",
       "VmStoragePreventsTest.WriteQuotaIsRefusedWithEdquotAndTheProcessLives",
       "VmStoragePreventsTest.WriteThatWouldCrossTheQuotaIsRefusedWhole"});
  ExpectPassedWithoutSkips(io, "storage_kernel_test",
                           {"StorageKernelTest.BpfLsmRefusesTheOpenWithEperm",
                            "StorageKernelTest.ReadOnlyVolumeOpenedForWritingIsRefused",
                            "StorageKernelTest.WriteQuotaStopsWrites"});
  ExpectPassedWithoutSkips(io, "storage_systemd_test",
                           {"StorageSystemdTest.GuestWithoutTheDatasetInLibvirtEmulatorIsRefused"});
  // btrfs is a module here, loaded by the test's mount after the programs: its files are still
  // refused by the LSM (keyed by file system and inode number, as the programs key them then).
  ExpectPassedWithoutSkips(
      io, "storage_volume_id_test",
      {"VolumeIdTest.ImageInABtrfsSubvolumeIsGuardedAndOnlyThatSubvolumesInode"});
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
// why, and the storage tier passes on it, with the volume aliases this kernel has (dm, SCSI). Only the test that exists to exercise the LSM is left
// out (it would skip with kernel-feature:bpf-lsm, which is this boot's point).
TEST_F(VmTest, WithoutBpfLsmTheFallbackLadderIsSelectedAndPasses) {
  const auto io =
      Boot("no-bpf-lsm", "lockdown,capability,landlock,yama,apparmor",
           {{"tests/probe/probe_test", "ProbeTest.StorageOpenPreventsWithFanotifyWithoutBpfLsm"},
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
  // The ladder's next rung: fanotify permission events still refuse the open (EPERM).
  EXPECT_EQ(mech, "fanotify:open_perm") << open.dump();
  EXPECT_EQ(open.value("guarantee", ""), "prevents") << open.dump();
  ASSERT_TRUE(open.contains("attempts") && !open.at("attempts").empty()) << open.dump();
  const auto& first = open.at("attempts").front();
  EXPECT_EQ(first.value("mechanism", ""), "bpf-lsm:file_open");
  EXPECT_FALSE(first.value("ok", true)) << "the LSM attempt must fail without bpf in lsm=";
  EXPECT_FALSE(first.value("error", "").empty()) << "the downgrade must say why";
  ExpectPassedWithoutSkips(io, "probe_test",
                           {"ProbeTest.StorageOpenPreventsWithFanotifyWithoutBpfLsm"});
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
  // Block-device aliases on a kernel with device-mapper and SCSI (cgroup/dev judges them alike
  // with or without BPF LSM): dm targets over and under a protected device, and a protected SCSI
  // disk's sg and bsg pass-through nodes.
  ExpectPassedWithoutSkips(io, "storage_volume_id_test",
                           {"VolumeIdTest.DeviceMapperAliasesOfAProtectedDeviceAreRefused",
                            "VolumeIdTest.ScsiGenericAndBsgNodesOfAProtectedDiskAreRefused",
                            "VolumeIdTest.ImageInABtrfsSubvolumeIsGuardedAndOnlyThatSubvolumesInode"});
}

}  // namespace
