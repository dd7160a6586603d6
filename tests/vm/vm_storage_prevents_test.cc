// Runs only inside the vm tier's guests (vm_test boots them; ctest never runs this binary on the
// host). There the storage path must select a rung that judges at the VFS: lsm/file_open & co. in
// the boot with BPF LSM, fmod_ret on security_file_open & co. in the boot whose lsm= lacks bpf
// (SOVGUARD_EXPECT_STORAGE_OPEN names it). This asserts prevention strictly, as an attacking QEMU
// would probe it: refused opens return EPERM and the process keeps running, every way of opening
// the volume is seen, a descriptor passed in is neither read nor mapped, and a write past the
// quota is refused with EDQUOT, not killed.
#include <fcntl.h>
#include <linux/openat2.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "enforcer/storage/storage_ladder.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT

constexpr std::uint8_t kHealth = 0, kArchive = 1, kOther = 2, kMetered = 3;
constexpr std::uint64_t kQuota = 1 << 20;
// A child's exit code beside the fixture's (kOk, kEperm, kOtherError): refused with EDQUOT.
constexpr int kEdquot = 14;

policy::CompiledStorage Policy(const fs::path& approved) {
  policy::CompiledStorage s;
  auto ds = [&](std::string id, std::uint8_t index) {
    return TestDataset(std::move(id), index, policy::Mode::kEnforce, approved);
  };
  s.datasets.push_back(ds("health", kHealth));
  s.datasets.push_back(ds("archive", kArchive));
  s.datasets.back().read_only = true;
  s.datasets.push_back(ds("other", kOther));
  s.datasets.push_back(ds("metered", kMetered));
  s.datasets.back().write = policy::Quota{kQuota, 3600};
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  return s;
}

int ErrnoCode() {
  return errno == EPERM ? kEperm : errno == EDQUOT ? kEdquot : kOtherError;
}

class VmStoragePreventsTest : public StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    MakeApprovedImage(1 << 20);
    Start(Policy(approved_));
    const PathStatus* open = sp_->Status().Find("storage-open");
    const PathStatus* quota = sp_->Status().Find("storage-io-quota");
    const char* want = std::getenv("SOVGUARD_EXPECT_STORAGE_OPEN");
    const LadderRung* rung = RungNamed(want ? want : "bpf-lsm:file_open");
    ASSERT_NE(rung, nullptr) << want;
    ASSERT_TRUE(rung->vfs_hooks) << want;
    ASSERT_EQ(open->mechanism, rung->mechanism)
        << (open->unavailable.empty() ? "" : open->unavailable.front());
    ASSERT_EQ(open->guarantee, Guarantee::kPrevents);
    ASSERT_EQ(quota->mechanism, rung->quota_mechanism);
    ASSERT_EQ(quota->guarantee, Guarantee::kPrevents);
  }

  // A guest holding only "other": every open of the health image must be refused.
  fs::path Intruder() {
    StartGuest("owner", 1ULL << kHealth, {{.source = image_, .dataset = "health"}});
    return StartGuest("intruder", 1ULL << kOther);
  }
};

TEST_F(VmStoragePreventsTest, RefusedOpenReturnsEpermAndTheProcessKeepsRunning) {
  const auto cg = Intruder();
  const auto own = tmp_.path() / "scratch";
  const auto r = RunInCgroup(cg, [&] {
    if (::open(image_.c_str(), O_RDONLY | O_CLOEXEC) >= 0 || errno != EPERM) return kOtherError;
    // Still alive and still able to do its own I/O after the refusal.
    const int fd = ::open(own.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, "alive", 5) != 5) return 30;
    ::close(fd);
    return kEperm;
  });
  ASSERT_TRUE(r.exited) << "killed by signal " << r.signal << ": the LSM must refuse, not kill";
  EXPECT_EQ(r.exit_code, kEperm);
  EXPECT_EQ(fs::file_size(own), 5u);
}

TEST_F(VmStoragePreventsTest, EveryWayOfOpeningTheVolumeIsRefused) {
  const auto cg = Intruder();
  const auto link = tmp_.path() / "hardlink.img";  // same inode, from outside the approved pool
  fs::create_hard_link(image_, link);
  const auto sym = tmp_.path() / "symlink.img";
  fs::create_symlink(image_, sym);
  struct Way {
    const char* name;
    std::function<int()> open;
  };
  const std::vector<Way> ways = {
      {"open O_RDONLY", [&] { return ::open(image_.c_str(), O_RDONLY | O_CLOEXEC); }},
      {"open O_WRONLY", [&] { return ::open(image_.c_str(), O_WRONLY | O_CLOEXEC); }},
      {"open O_RDWR|O_DIRECT",
       [&] { return ::open(image_.c_str(), O_RDWR | O_DIRECT | O_CLOEXEC); }},
      {"openat2",
       [&] {
         open_how how{.flags = O_RDONLY | O_CLOEXEC};
         return static_cast<int>(
             ::syscall(SYS_openat2, AT_FDCWD, image_.c_str(), &how, sizeof how));
       }},
      {"hard link elsewhere", [&] { return ::open(link.c_str(), O_RDONLY | O_CLOEXEC); }},
      {"symlink", [&] { return ::open(sym.c_str(), O_RDONLY | O_CLOEXEC); }},
      {"reopen of an O_PATH fd through /proc/self/fd",
       [&] {
         const int p = ::open(image_.c_str(), O_PATH | O_CLOEXEC);  // no file_open for O_PATH
         if (p < 0) return -2;
         const std::string proc = "/proc/self/fd/" + std::to_string(p);
         return ::open(proc.c_str(), O_RDWR | O_CLOEXEC);
       }},
  };
  for (const auto& way : ways) {
    const auto r = RunInCgroup(cg, [&] {
      const int fd = way.open();
      return fd >= 0 ? kOk : ErrnoCode();
    });
    EXPECT_TRUE(r.exited) << way.name << ": signal " << r.signal;
    EXPECT_EQ(r.exit_code, kEperm) << way.name;
  }
}

TEST_F(VmStoragePreventsTest, ReadOnlyVolumeOpenedForWritingIsEpermAndReadingStillWorks) {
  const auto archive = approved_ / "archive.img";
  WriteFile(archive, 1 << 20);
  const auto cg =
      StartGuest("reader", 1ULL << kArchive, {{.source = archive, .dataset = "archive"}});
  const auto r = RunInCgroup(cg, [&] {
    if (::open(archive.c_str(), O_RDWR | O_CLOEXEC) >= 0 || errno != EPERM) return kOtherError;
    if (::open(archive.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC) >= 0 || errno != EPERM) return 31;
    const int fd = ::open(archive.c_str(), O_RDONLY | O_CLOEXEC);
    char b[4096];
    if (fd < 0 || ::read(fd, b, sizeof b) != sizeof b) return 32;
    ::close(fd);
    return kEperm;
  });
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  EXPECT_EQ(r.exit_code, kEperm);
}

// A descriptor the intruder never opened (a host process opened it; fork passes it on as libvirt
// passes disks to QEMU): reading it in every way, copying from it and mapping it are refused
// before anything moves, into a buffer the host shares with the intruder.
TEST_F(VmStoragePreventsTest, PassedInVolumeIsNeitherReadNorCopiedNorMapped) {
  const auto cg = Intruder();
  const int volume = ::open(image_.c_str(), O_RDONLY | O_CLOEXEC);  // kept across fork
  ASSERT_GE(volume, 0);
  constexpr std::size_t kLen = 256 << 10;
  auto* shared = static_cast<char*>(
      ::mmap(nullptr, kLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  std::memset(shared, 'z', kLen);
  const auto own = tmp_.path() / "copy";
  const auto r = RunInCgroup(cg, [&] {
    const auto refused = [](long rc) { return rc < 0 && errno == EPERM; };
    if (!refused(::read(volume, shared, kLen))) return 40;
    if (!refused(::pread(volume, shared, kLen, 0))) return 41;
    iovec v{shared, kLen};
    if (!refused(::readv(volume, &v, 1))) return 42;
    const int out = ::open(own.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (out < 0) return 43;
    if (!refused(::copy_file_range(volume, nullptr, out, nullptr, kLen, 0))) return 44;
    for (const int flags : {MAP_PRIVATE, MAP_SHARED}) {
      void* map = ::mmap(nullptr, kLen, PROT_READ, flags, volume, 0);
      if (map != MAP_FAILED || errno != EPERM) return 45;
    }
    ::close(out);
    return kEperm;
  });
  ::close(volume);
  ASSERT_TRUE(r.exited) << "signal " << r.signal << ": must be refused, not killed";
  EXPECT_EQ(r.exit_code, kEperm);
  EXPECT_EQ(std::count(shared, shared + kLen, 'x'), 0) << "volume bytes reached the intruder";
  EXPECT_EQ(fs::file_size(own), 0u) << "volume bytes were copied";
  ::munmap(shared, kLen);
}

// ftruncate passes no hook the VFS rungs use: the syscall tracepoint kills the intruder (after the
// change: ftruncate does not check for a fatal signal) and names it.
TEST_F(VmStoragePreventsTest, PassedInVolumeTruncatedIsKilledAndNamed) {
  const auto cg = Intruder();
  const int volume = ::open(image_.c_str(), O_RDWR | O_CLOEXEC);
  ASSERT_GE(volume, 0);
  const auto r = RunInCgroup(cg, [&] { return ::ftruncate(volume, 0) == 0 ? kOk : ErrnoCode(); });
  ::close(volume);
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
}

// Writes `chunk` bytes at a time (bounded: 4x the budget) until one fails; the child's code.
int WriteUntilRefused(const fs::path& img, std::size_t chunk) {
  const int fd = ::open(img.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return kOtherError;
  std::vector<char> buf(chunk, 'q');
  for (std::size_t i = 0; i < 4 * kQuota / chunk; ++i) {
    if (::pwrite(fd, buf.data(), chunk, static_cast<off_t>(i * chunk)) !=
        static_cast<ssize_t>(chunk)) {
      return ErrnoCode();
    }
  }
  return kOk;
}

// 64 KiB chunks divide the 1 MiB budget: the sixteenth write uses it up exactly, the next one is
// refused with EDQUOT, and the process lives on.
TEST_F(VmStoragePreventsTest, WriteQuotaIsRefusedWithEdquotAndTheProcessLives) {
  const auto img = approved_ / "metered.img";
  WriteFile(img, 0);
  const auto cg = StartGuest("metered", 1ULL << kMetered, {{.source = img, .dataset = "metered"}});
  const auto r = RunInCgroup(cg, [&] { return WriteUntilRefused(img, 64 << 10); });
  ASSERT_TRUE(r.exited) << "signal " << r.signal << ": the LSM must refuse, not kill";
  EXPECT_EQ(r.exit_code, kEdquot);
  EXPECT_EQ(fs::file_size(img), kQuota);
  const auto counters = sp_->ReadCounters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].write_bytes, kQuota);
}

// The write that would cross the budget is refused too, whatever the chunk size: 100 KiB chunks do
// not divide 1 MiB, so after ten writes (1000 KiB used) the eleventh would end at 1100 KiB.
TEST_F(VmStoragePreventsTest, WriteThatWouldCrossTheQuotaIsRefusedWhole) {
  const auto img = approved_ / "metered.img";
  WriteFile(img, 0);
  const auto cg = StartGuest("metered", 1ULL << kMetered, {{.source = img, .dataset = "metered"}});
  constexpr std::size_t kChunk = 100 << 10;
  const auto r = RunInCgroup(cg, [&] { return WriteUntilRefused(img, kChunk); });
  ASSERT_TRUE(r.exited) << "signal " << r.signal << ": the LSM must refuse, not kill";
  EXPECT_EQ(r.exit_code, kEdquot);
  EXPECT_EQ(fs::file_size(img), 10 * kChunk) << "bytes past the budget reached the file";
  const auto counters = sp_->ReadCounters();
  ASSERT_EQ(counters.size(), 1u);
  EXPECT_EQ(counters[0].write_bytes, 10 * kChunk);
}

// A mapping moves bytes by page fault, which no budget sees: the holder of a budgeted dataset may
// not map its volume (refused), and still reads and writes it through the system calls.
TEST_F(VmStoragePreventsTest, MappingAVolumeOfABudgetedDatasetIsRefused) {
  const auto img = approved_ / "metered.img";
  WriteFile(img, 1 << 16);
  const auto cg = StartGuest("metered", 1ULL << kMetered, {{.source = img, .dataset = "metered"}});
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open(img.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return kOtherError;
    void* map = ::mmap(nullptr, 1 << 16, PROT_READ, MAP_SHARED, fd, 0);
    if (map != MAP_FAILED || errno != EPERM) return 50;
    char b[512];
    if (::pread(fd, b, sizeof b, 0) != sizeof b) return 51;
    return kEperm;
  });
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  EXPECT_EQ(r.exit_code, kEperm);
}

}  // namespace
}  // namespace sovguard::storage
