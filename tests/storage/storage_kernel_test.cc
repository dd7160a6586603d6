// Kernel tier: the storage-path programs on the real kernel. A stand-in libvirt "machine" cgroup
// holds one cgroup per guest; forked children join a guest cgroup and open, read, write, and
// connect there, as QEMU would.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using std::chrono::steady_clock;

constexpr std::uint8_t kHealth = 0, kArchive = 1, kAudited = 2, kMetered = 3;
constexpr std::uint64_t kQuota = 1 << 20;

policy::CompiledStorage TestPolicy(const fs::path& approved) {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth, policy::Mode::kEnforce, approved));
  s.datasets.push_back(TestDataset("archive", kArchive));
  s.datasets.back().read_only = true;
  s.datasets.push_back(TestDataset("audited", kAudited, policy::Mode::kAudit));
  s.datasets.push_back(TestDataset("metered", kMetered));
  s.datasets.back().write = policy::Quota{kQuota, 3600};
  AddTestZones(s, 1ULL << kHealth);
  return s;
}

class StorageKernelTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    MakeApprovedImage(4 << 20);
    unapproved_ = tmp_.path() / "unapproved";
    fs::create_directories(unapproved_);
    Start(TestPolicy(approved_));
  }

  fs::path unapproved_;
};

TEST_F(StorageKernelTest, StatusNamesMechanismAndGuaranteePerPath) {
  const auto& st = sp_->Status();
  for (const char* path : {"storage-open", "storage-io-quota", "storage-io-accounting",
                           "storage-block-devices", "storage-network"}) {
    const PathStatus* p = st.Find(path);
    ASSERT_NE(p, nullptr) << path;
    EXPECT_NE(p->guarantee, Guarantee::kNone) << path << ": " << p->mechanism;
    std::printf("%-24s %-60s %s\n", path, p->mechanism.c_str(), ToString(p->guarantee).c_str());
    for (const auto& u : p->unavailable) std::printf("%-24s   unavailable: %s\n", "", u.c_str());
  }
  EXPECT_EQ(st.guest_discovery, "tp_btf:cgroup_mkdir");
  EXPECT_EQ(st.machine_cgroup_id, StorageDatapath::CgroupId(cgroups_.machine()));
  const PathStatus* open = st.Find("storage-open");
  if (open->guarantee == Guarantee::kDetectsAndKills) {
    EXPECT_NE(open->mechanism.find("SIGKILL"), std::string::npos);
    EXPECT_FALSE(open->unavailable.empty()) << "a downgrade must say why the LSM is not used";
  }
  // Without the LSM the quotas detect and kill instead of refusing: a downgrade too, named.
  const PathStatus* quota = st.Find("storage-io-quota");
  if (quota->guarantee != Guarantee::kPrevents) {
    ASSERT_FALSE(quota->unavailable.empty()) << quota->mechanism << " reported as the strongest";
    EXPECT_TRUE(quota->unavailable.front().starts_with("bpf-lsm:file_permission: "))
        << quota->unavailable.front();
  }
}

TEST_F(StorageKernelTest, AllowedGuestOpensReadsAndWritesAndIsCountedExactly) {
  const auto cg = StartGuest("alpha", 1ULL << kHealth,
                             {{.source = image_, .dataset = "health", .readonly = false}});
  EXPECT_EQ(sp_->Status().guests, 1u) << "cgroup_mkdir did not register the announced guest";
  constexpr std::size_t kChunk = 64 << 10, kChunks = 24;  // 1.5 MiB each way
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open(image_.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
    std::vector<char> buf(kChunk, 'a');
    for (std::size_t i = 0; i < kChunks; ++i) {
      if (::pwrite(fd, buf.data(), kChunk, static_cast<off_t>(i * kChunk)) != kChunk) return 30;
    }
    iovec iov[2] = {{buf.data(), kChunk / 2}, {buf.data() + kChunk / 2, kChunk / 2}};
    for (std::size_t i = 0; i < kChunks; ++i) {
      if (::preadv(fd, iov, 2, static_cast<off_t>(i * kChunk)) != kChunk) return 31;
    }
    ::close(fd);
    return kOk;
  });
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  ASSERT_EQ(r.exit_code, kOk);
  const auto counters = sp_->ReadCounters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].guest, "alpha");
  EXPECT_EQ(counters[0].dataset, "health");
  EXPECT_EQ(counters[0].write_bytes, kChunk * kChunks);
  EXPECT_EQ(counters[0].read_bytes, kChunk * kChunks);
  EXPECT_EQ(counters[0].denied, 0u);
}

TEST_F(StorageKernelTest, GuestWithoutTheDatasetIsRefusedOrKilledAndTheEventNamesIt) {
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto cg = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(image_, O_RDONLY); });
  const auto e = ExpectStoppedAndReported(r, Prevents(), "open-denied", "bravo");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->dataset, "health");
  EXPECT_EQ(e->path, fs::canonical(image_).string());
  EXPECT_EQ(e->verdict, Prevents() ? Verdict::kPrevented : Verdict::kKilled);
}

TEST_F(StorageKernelTest, BpfLsmRefusesTheOpenWithEperm) {
  const PathStatus* open = sp_->Status().Find("storage-open");
  if (open->mechanism != "bpf-lsm:file_open") {  // fanotify prevents too: StorageFanotifyTest
    SOVGUARD_SKIP_KERNEL_FEATURE("bpf-lsm",
                                 (open->unavailable.empty() ? "?" : open->unavailable.front()));
  }
  EXPECT_EQ(open->mechanism, "bpf-lsm:file_open");
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto cg = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(image_, O_RDONLY); });
  EXPECT_TRUE(r.exited);
  EXPECT_EQ(r.exit_code, kEperm);
}

TEST_F(StorageKernelTest, ForcedTracepointFallbackKillsAndSaysSo) {
  sp_.reset();
  sp_ = std::make_unique<StorageDatapath>(
      StorageOptions{.machine_cgroup = cgroups_.machine(), .force_tracepoint_fallback = true});
  sp_->ApplyPolicy(TestPolicy(approved_));
  const PathStatus* open = sp_->Status().Find("storage-open");
  EXPECT_EQ(open->guarantee, Guarantee::kDetectsAndKills);
  EXPECT_NE(open->mechanism.find("tracepoint:sys_exit_openat"), std::string::npos);
  StartGuest("alpha", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
  const auto cg = StartGuest("bravo", 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(image_, O_RDONLY); });
  EXPECT_EQ(r.signal, SIGKILL);
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "open-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->verdict, Verdict::kKilled);
}

TEST_F(StorageKernelTest, UnregisteredCgroupUnderMachineIsFailClosed) {
  sp_->ProtectVolume(image_, "health", false);
  const auto cg = cgroups_.Make("qemu-9-stranger.libvirt-qemu");
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(image_, O_RDONLY); });
  ExpectStoppedAndReported(r, Prevents(), "open-denied",
                           "cgroup:" + std::to_string(StorageDatapath::CgroupId(cg)));
}

TEST_F(StorageKernelTest, ProcessesOutsideTheMachineCgroupAreNotJudged) {
  sp_->ProtectVolume(image_, "health", false);
  EXPECT_EQ(OpenAndClose(image_, O_RDWR), kOk);  // this test process: not a guest
}

TEST_F(StorageKernelTest, RunningGuestRegisteredByIdIsJudgedToo) {
  sp_->ProtectVolume(image_, "health", false);
  const auto allowed = cgroups_.Make("qemu-3-charlie.libvirt-qemu");
  sp_->RegisterGuestCgroup(StorageDatapath::CgroupId(allowed),
                           GuestStorage{.name = "charlie", .datasets = 1ULL << kHealth});
  EXPECT_EQ(RunInCgroup(allowed / "", [&] { return OpenAndClose(image_, O_RDWR); }).exit_code, kOk);
  // Threads of QEMU live in sub-cgroups (emulator, vcpuN): they are the same guest.
  const auto vcpu = allowed / "vcpu0";
  fs::create_directory(vcpu);
  EXPECT_EQ(RunInCgroup(vcpu, [&] { return OpenAndClose(image_, O_RDWR); }).exit_code, kOk);
  ::rmdir(vcpu.c_str());
  sp_->RemoveGuest("charlie");
  const auto r = RunInCgroup(allowed, [&] { return OpenAndClose(image_, O_RDONLY); });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == kEperm)
      << "a removed guest holds no dataset any more";
}

TEST_F(StorageKernelTest, ReadOnlyVolumeOpenedForWritingIsRefused) {
  const auto archive = approved_ / "archive.img";
  WriteFile(archive, 1 << 20);
  const auto cg =
      StartGuest("delta", 1ULL << kArchive, {{.source = archive, .dataset = "archive"}});
  EXPECT_EQ(RunInCgroup(cg, [&] { return OpenAndClose(archive, O_RDONLY); }).exit_code, kOk);
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(archive, O_RDWR); });
  // fanotify does not tell the access mode: its tracepoint backstop kills the writer.
  const auto e = ExpectStoppedAndReported(r, VfsHooks(), "read-only", "delta");
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->dataset, "archive");
}

TEST_F(StorageKernelTest, DiskFlaggedReadOnlyInTheDomainIsReadOnlyToo) {
  const auto cg = StartGuest("echo", 1ULL << kHealth,
                             {{.source = image_, .dataset = "health", .readonly = true}});
  const auto r = RunInCgroup(cg, [&] { return OpenAndClose(image_, O_WRONLY); });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == kEperm);
}

TEST_F(StorageKernelTest, ImageCopiedOntoUnapprovedDirectoryIsRefused) {
  const auto copy = unapproved_ / "health-copy.img";
  fs::copy_file(image_, copy);
  try {
    StartGuest("foxtrot", 1ULL << kHealth, {{.source = copy, .dataset = "health"}});
    FAIL() << "a dataset volume outside the dataset's pools was accepted";
  } catch (const StorageRefused& e) {
    EXPECT_NE(std::string(e.what()).find("not on approved storage"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(copy.filename().string()), std::string::npos);
  }
  // The same through a symlink from the approved directory: the real location decides.
  fs::create_symlink(copy, approved_ / "sneaky.img");
  EXPECT_THROW(StartGuest("golf", 1ULL << kHealth,
                          {{.source = approved_ / "sneaky.img", .dataset = "health"}}),
               StorageRefused);
  // A dataset the policy does not know is refused as well (fail closed).
  EXPECT_THROW(StartGuest("hotel", 1ULL << kHealth, {{.source = image_, .dataset = "nope"}}),
               StorageRefused);
}

// RAII loop device over a file.
class LoopDevice {
 public:
  explicit LoopDevice(const fs::path& file) {
    const std::string cmd = "losetup -f --show " + file.string() + " 2>/dev/null";
    FILE* p = ::popen(cmd.c_str(), "r");
    if (!p) return;
    char buf[128] = {};
    if (std::fgets(buf, sizeof buf, p)) dev_ = std::string(buf);
    ::pclose(p);
    while (!dev_.empty() && (dev_.back() == '\n')) dev_.pop_back();
  }
  ~LoopDevice() {
    if (!dev_.empty()) std::system(("losetup -d " + dev_).c_str());  // NOLINT
  }
  LoopDevice(const LoopDevice&) = delete;
  LoopDevice& operator=(const LoopDevice&) = delete;
  const std::string& dev() const { return dev_; }

 private:
  std::string dev_;
};

TEST_F(StorageKernelTest, BlockDeviceOfADatasetIsDeniedByCgroupDevice) {
  const auto backing = tmp_.path() / "block-backing.img";
  WriteFile(backing, 1 << 20);
  LoopDevice loop(backing);
  SOVGUARD_REQUIRE(!loop.dev().empty(), "a loop device (losetup -f failed)");
  policy::CompiledStorage p = TestPolicy(approved_);
  p.datasets[kHealth].pools.push_back({policy::StoragePool::Kind::kDevice, loop.dev()});
  sp_->ApplyPolicy(p);
  const auto allowed =
      StartGuest("india", 1ULL << kHealth, {{.source = loop.dev(), .dataset = "health"}});
  const auto denied = StartGuest("juliett", 1ULL << kAudited);
  EXPECT_EQ(RunInCgroup(allowed, [&] { return OpenAndClose(loop.dev(), O_RDWR); }).exit_code, kOk);
  // cgroup/dev answers before the file is opened: EPERM on every kernel.
  EXPECT_EQ(RunInCgroup(denied, [&] { return OpenAndClose(loop.dev(), O_RDONLY); }).exit_code,
            kEperm);
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "device-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, "juliett");
  EXPECT_EQ(e->dataset, "health");
  EXPECT_EQ(e->path, loop.dev());
  EXPECT_EQ(e->verdict, Verdict::kPrevented);
}

// A network namespace with two documentation addresses on lo and a TCP listener on each.
class ListenerNetns {
 public:
  ListenerNetns() : name_("sgt-st-" + UniqueSuffix()) {
    if (std::system(("ip netns add " + name_).c_str()) != 0)
      throw std::runtime_error("ip netns add");
    const std::string ex = "ip -n " + name_ + " ";
    if (std::system((ex + "link set lo up").c_str()) != 0 ||
        std::system((ex + "addr add 198.51.100.7/32 dev lo").c_str()) != 0 ||
        std::system((ex + "addr add 203.0.113.7/32 dev lo").c_str()) != 0) {
      throw std::runtime_error("configure netns " + name_);
    }
    std::thread([&] {
      const int ns = ::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
      if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) return;
      ::close(ns);
      listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(10809);  // NBD's port
      if (::bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
          ::listen(listener_, 16) != 0) {
        ::close(listener_);
        listener_ = -1;
      }
    }).join();
    if (listener_ < 0) throw std::runtime_error("listener in " + name_);
  }
  ~ListenerNetns() {
    if (listener_ >= 0) ::close(listener_);
    std::system(("ip netns del " + name_).c_str());  // NOLINT
  }
  ListenerNetns(const ListenerNetns&) = delete;
  ListenerNetns& operator=(const ListenerNetns&) = delete;

  // In a child: enter the namespace and connect; kOk, kEperm or kOtherError.
  int Connect(const char* addr) const { return ConnectInNetns(name_, addr); }

 private:
  std::string name_;
  int listener_ = -1;
};

TEST_F(StorageKernelTest, NetworkStorageConnectOnlyToAllowedJurisdictions) {
  ListenerNetns ns;
  const auto cg = StartGuest("kilo", 1ULL << kHealth);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("198.51.100.7"); }).exit_code, kOk);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("203.0.113.7"); }).exit_code, kEperm);
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "connect-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, "kilo");
  EXPECT_EQ(e->dataset, "health");
  EXPECT_EQ(e->address, "203.0.113.7:10809");
  EXPECT_EQ(e->verdict, Verdict::kPrevented);
  // A guest holding only an audited dataset is let through, with an audit event.
  const auto audited = StartGuest("lima", 1ULL << kAudited);
  EXPECT_EQ(RunInCgroup(audited, [&] { return ns.Connect("203.0.113.7"); }).exit_code, kOk);
  const auto a = WaitEvent([](const StorageEvent& ev) { return ev.guest == "lima"; });
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->verdict, Verdict::kAudited);
}

TEST_F(StorageKernelTest, ReappliedPolicyReplacesTheAddressTables) {
  ListenerNetns ns;
  const auto cg = StartGuest("oscar", 1ULL << kHealth);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("203.0.113.7"); }).exit_code, kEperm);
  auto p = TestPolicy(approved_);
  p.ipv4.back().class_id = 1;  // 203.0.113.0/24 now in the allowed class
  sp_->ApplyPolicy(p);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("203.0.113.7"); }).exit_code, kOk);
  p.ipv4.pop_back();  // no table covers it any more: class 0, allowed for no dataset
  sp_->ApplyPolicy(p);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("203.0.113.7"); }).exit_code, kEperm);
  EXPECT_EQ(RunInCgroup(cg, [&] { return ns.Connect("198.51.100.7"); }).exit_code, kOk);
}

TEST_F(StorageKernelTest, WorldSizedAddressTablesLoadAndReloadInBoundedTime) {
  // As many IPv4 prefixes as the registry world table (about 175,000): table entries only.
  auto p = TestPolicy(approved_);
  for (std::uint32_t i = 0; i < 175'000; ++i) p.ipv4.push_back({0x01000000u + (i << 8), 24, 1});
  std::sort(p.ipv4.begin(), p.ipv4.end(), [](const auto& a, const auto& b) {
    return std::tie(a.addr, a.len) < std::tie(b.addr, b.len);
  });
  const auto t0 = steady_clock::now();
  sp_->ApplyPolicy(p);
  const auto t1 = steady_clock::now();
  p.ipv4.resize(p.ipv4.size() / 2);  // half of them go away
  sp_->ApplyPolicy(p);
  const auto t2 = steady_clock::now();
  const auto ms = [](auto d) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
  };
  std::printf("load %zu prefixes: %lld ms, reload removing half: %lld ms\n", 2 * p.ipv4.size(),
              static_cast<long long>(ms(t1 - t0)), static_cast<long long>(ms(t2 - t1)));
  EXPECT_LT(t2 - t0, std::chrono::seconds(60));
}

TEST_F(StorageKernelTest, AuditedDatasetIsOpenedButReported) {
  const auto img = approved_ / "audited.img";
  WriteFile(img, 1 << 20);
  sp_->ProtectVolume(img, "audited", false);
  const auto cg = StartGuest("mike", 1ULL << kHealth);
  EXPECT_EQ(RunInCgroup(cg, [&] { return OpenAndClose(img, O_RDWR); }).exit_code, kOk);
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "open-denied"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, "mike");
  EXPECT_EQ(e->dataset, "audited");
  EXPECT_EQ(e->verdict, Verdict::kAudited);
}

TEST_F(StorageKernelTest, WriteQuotaStopsWrites) {
  const auto img = approved_ / "metered.img";
  WriteFile(img, 0);
  const auto cg = StartGuest("november", 1ULL << kMetered, {{.source = img, .dataset = "metered"}});
  constexpr std::size_t kChunk = 64 << 10;
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open(img.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return kOtherError;
    std::vector<char> buf(kChunk, 'q');
    for (std::size_t i = 0; i < 4 * kQuota / kChunk; ++i) {  // bounded: 4x the budget
      if (::pwrite(fd, buf.data(), kChunk, static_cast<off_t>(i * kChunk)) != kChunk) {
        return errno == EDQUOT ? 50 : 51;
      }
    }
    return kOk;
  });
  EXPECT_TRUE(r.signal == SIGKILL || r.exit_code == 50) << "exit " << r.exit_code;
  EXPECT_LE(fs::file_size(img), kQuota) << "bytes past the budget reached the file";
  EXPECT_GE(fs::file_size(img), kQuota - kChunk);
  const auto counters = sp_->ReadCounters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_LE(counters[0].write_bytes, kQuota);
  EXPECT_EQ(counters[0].dataset, "metered");
  const auto e = WaitEvent([](const StorageEvent& ev) { return ev.kind == "write-quota"; });
  ASSERT_TRUE(e.has_value());
  EXPECT_EQ(e->guest, "november");
  EXPECT_EQ(e->path, fs::canonical(img).string());
}

TEST(StorageNames, LibvirtCgroupNameFollowsLibvirt) {
  EXPECT_EQ(LibvirtCgroupName(3, "sgt-vm1"), "qemu-3-sgt-vm1.libvirt-qemu");
  EXPECT_EQ(LibvirtCgroupName(12, ".hidden_name!"), "qemu-12-hiddenname.libvirt-qemu");
  EXPECT_EQ(LibvirtCgroupName(1, "trailing--"), "qemu-1-trailing.libvirt-qemu");
}

}  // namespace
}  // namespace sovguard::storage
