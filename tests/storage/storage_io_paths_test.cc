// Kernel tier: every way a guest's process can open a volume or move its bytes, beyond open(at)
// and p{read,write}*. Forked children in a guest cgroup act as an attacking QEMU would: creat,
// open_by_handle_at, io_uring openat, a 32-bit syscall, an fd passed over a Unix socket and used
// by read/readv/pread/sendfile/splice/copy_file_range/io_submit/io_uring/mmap; and each I/O path
// is counted exactly and trips the read and the write budget.
#include <linux/aio_abi.h>
#include <linux/io_uring.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <utility>
#include <vector>

#include "tests/harness/require.h"
#include "tests/storage/storage_test_util.h"

namespace sovguard::storage {
namespace {

using namespace testing;  // NOLINT
using std::chrono::steady_clock;

constexpr std::uint8_t kHealth = 0, kAudited = 1, kWriteMetered = 2, kReadMetered = 3;
constexpr std::uint64_t kQuota = 1 << 20;
constexpr std::size_t kChunk = 64 << 10;  // the default pipe capacity: one splice moves it whole
constexpr int kFailed = kOtherError;

policy::CompiledStorage TestPolicy() {
  policy::CompiledStorage s;
  s.datasets.push_back(TestDataset("health", kHealth));
  s.datasets.push_back(TestDataset("audited", kAudited, policy::Mode::kAudit));
  s.datasets.push_back(TestDataset("wmetered", kWriteMetered));
  s.datasets.back().write = policy::Quota{kQuota, 3600};
  s.datasets.push_back(TestDataset("rmetered", kReadMetered));
  s.datasets.back().read = policy::Quota{kQuota, 3600};
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  return s;
}

// ---- io_uring and Linux AIO by raw syscalls (no liburing/libaio on the build host) -------------

// One ring, one request at a time: Run() submits an SQE and waits for its completion.
class Uring {
 public:
  bool Init() {
    io_uring_params p{};
    fd_ = static_cast<int>(::syscall(__NR_io_uring_setup, 4, &p));
    if (fd_ < 0) return false;
    sq_size_ = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    cq_size_ = p.cq_off.cqes + p.cq_entries * sizeof(io_uring_cqe);
    sq_ = Map(sq_size_, IORING_OFF_SQ_RING);
    cq_ = Map(cq_size_, IORING_OFF_CQ_RING);
    sqes_ = static_cast<io_uring_sqe*>(Map(p.sq_entries * sizeof(io_uring_sqe), IORING_OFF_SQES));
    if (!sq_ || !cq_ || !sqes_) return false;
    sq_tail_ = At<unsigned>(sq_, p.sq_off.tail);
    sq_mask_ = *At<unsigned>(sq_, p.sq_off.ring_mask);
    sq_array_ = At<unsigned>(sq_, p.sq_off.array);
    cq_head_ = At<unsigned>(cq_, p.cq_off.head);
    cq_tail_ = At<unsigned>(cq_, p.cq_off.tail);
    cq_mask_ = *At<unsigned>(cq_, p.cq_off.ring_mask);
    cqes_ = At<io_uring_cqe>(cq_, p.cq_off.cqes);
    return true;
  }
  // The completion's result, or -errno of io_uring_enter.
  int Run(const io_uring_sqe& sqe) {
    const unsigned tail = *sq_tail_;
    const unsigned idx = tail & sq_mask_;
    sqes_[idx] = sqe;
    sq_array_[idx] = idx;
    __atomic_store_n(sq_tail_, tail + 1, __ATOMIC_RELEASE);
    if (::syscall(__NR_io_uring_enter, fd_, 1, 1, IORING_ENTER_GETEVENTS, nullptr, 0) < 0)
      return -errno;
    const unsigned head = *cq_head_;
    if (head == __atomic_load_n(cq_tail_, __ATOMIC_ACQUIRE)) return -EAGAIN;
    const int res = cqes_[head & cq_mask_].res;
    __atomic_store_n(cq_head_, head + 1, __ATOMIC_RELEASE);
    return res;
  }

 private:
  void* Map(std::size_t size, off_t what) const {
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd_, what);
    return p == MAP_FAILED ? nullptr : p;
  }
  template <class T>
  static T* At(void* base, std::uint32_t off) {
    return reinterpret_cast<T*>(static_cast<char*>(base) + off);
  }
  int fd_ = -1;
  std::size_t sq_size_ = 0, cq_size_ = 0;
  void *sq_ = nullptr, *cq_ = nullptr;
  io_uring_sqe* sqes_ = nullptr;
  io_uring_cqe* cqes_ = nullptr;
  unsigned *sq_tail_ = nullptr, *sq_array_ = nullptr, *cq_head_ = nullptr, *cq_tail_ = nullptr;
  unsigned sq_mask_ = 0, cq_mask_ = 0;
};

long AioRun(int fd, char* buf, std::size_t n, off_t off, bool write) {
  aio_context_t ctx = 0;
  if (::syscall(__NR_io_setup, 4, &ctx) < 0) return -errno;
  iocb cb{};
  cb.aio_lio_opcode = write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
  cb.aio_fildes = static_cast<std::uint32_t>(fd);
  cb.aio_buf = reinterpret_cast<std::uint64_t>(buf);
  cb.aio_nbytes = n;
  cb.aio_offset = off;
  iocb* list[1] = {&cb};
  long r = ::syscall(__NR_io_submit, ctx, 1, list);
  if (r == 1) {
    io_event ev{};
    r = ::syscall(__NR_io_getevents, ctx, 1, 1, &ev, nullptr);
    r = r == 1 ? static_cast<long>(ev.res) : -errno;
  } else {
    r = -errno;
  }
  ::syscall(__NR_io_destroy, ctx);
  return r;
}

// ---- The I/O paths --------------------------------------------------------------------------

enum class Path {
  kReadWrite,
  kVectored,
  kPositional,
  kSendfile,
  kSplice,
  kCopyFileRange,
  kAio,
  kIoUring
};

// Each path's name in the test names.
constexpr std::pair<Path, const char*> kPathNames[] = {
    {Path::kReadWrite, "ReadWrite"},   {Path::kVectored, "Vectored"},
    {Path::kPositional, "Positional"}, {Path::kSendfile, "Sendfile"},
    {Path::kSplice, "Splice"},         {Path::kCopyFileRange, "CopyFileRange"},
    {Path::kAio, "LinuxAio"},          {Path::kIoUring, "IoUring"}};

const char* Name(Path p) {
  for (const auto& [path, name] : kPathNames) {
    if (path == p) return name;
  }
  return "?";
}

// Moves n bytes between the volume `fd` at `off` and `buf` (through `scratch`, a file that is not a
// volume, for the fd-to-fd copies). Returns the bytes moved or -errno.
long MoveBytes(Path p, int fd, int scratch, Uring& ring, char* buf, std::size_t n, off_t off,
               bool write) {
  switch (p) {
    case Path::kReadWrite:
      if (::lseek(fd, off, SEEK_SET) < 0) return -errno;
      return write ? ::write(fd, buf, n) : ::read(fd, buf, n);
    case Path::kVectored: {
      if (::lseek(fd, off, SEEK_SET) < 0) return -errno;
      iovec iov[2] = {{buf, n / 2}, {buf + n / 2, n - n / 2}};
      return write ? ::writev(fd, iov, 2) : ::readv(fd, iov, 2);
    }
    case Path::kPositional:
      return write ? ::pwrite(fd, buf, n, off) : ::pread(fd, buf, n, off);
    case Path::kSendfile: {
      if (write) {
        if (::pwrite(scratch, buf, n, 0) != static_cast<ssize_t>(n)) return -EIO;
        if (::lseek(fd, off, SEEK_SET) < 0) return -errno;
        off_t from = 0;
        return ::sendfile(fd, scratch, &from, n);
      }
      off_t from = off;
      if (::lseek(scratch, 0, SEEK_SET) < 0) return -errno;
      const long r = ::sendfile(scratch, fd, &from, n);
      return r > 0 ? ::pread(scratch, buf, static_cast<std::size_t>(r), 0) : r;
    }
    case Path::kSplice: {
      int pipefd[2];
      if (::pipe(pipefd) != 0) return -errno;
      long r;
      loff_t o = off;
      if (write) {
        r = ::write(pipefd[1], buf, n) == static_cast<ssize_t>(n)
                ? ::splice(pipefd[0], nullptr, fd, &o, n, 0)
                : -EIO;
      } else {
        r = ::splice(fd, &o, pipefd[1], nullptr, n, 0);
        if (r > 0) r = ::read(pipefd[0], buf, static_cast<std::size_t>(r));
      }
      ::close(pipefd[0]);
      ::close(pipefd[1]);
      return r;
    }
    case Path::kCopyFileRange: {
      loff_t o = off, s = 0;
      if (write) {
        if (::pwrite(scratch, buf, n, 0) != static_cast<ssize_t>(n)) return -EIO;
        return ::copy_file_range(scratch, &s, fd, &o, n, 0);
      }
      const long r = ::copy_file_range(fd, &o, scratch, &s, n, 0);
      return r > 0 ? ::pread(scratch, buf, static_cast<std::size_t>(r), 0) : r;
    }
    case Path::kAio:
      return AioRun(fd, buf, n, off, write);
    case Path::kIoUring: {
      io_uring_sqe sqe{};
      sqe.opcode = write ? IORING_OP_WRITE : IORING_OP_READ;
      sqe.fd = fd;
      sqe.addr = reinterpret_cast<std::uint64_t>(buf);
      sqe.len = static_cast<std::uint32_t>(n);
      sqe.off = static_cast<std::uint64_t>(off);
      return ring.Run(sqe);
    }
  }
  return -EINVAL;
}

// What a child in a guest cgroup moves through one path: the volume `fd`, the `scratch` file and
// the ring; Move() moves `count` whole chunks from offset 0 on, false at the first short one.
struct Chunks {
  Path path;
  int fd, scratch;
  Uring& ring;
  bool Move(char* buf, std::size_t count, bool write) {
    for (std::size_t i = 0; i < count; ++i) {
      if (MoveBytes(path, fd, scratch, ring, buf, kChunk, static_cast<off_t>(i * kChunk), write) !=
          static_cast<long>(kChunk))
        return false;
    }
    return true;
  }
};

// In a child: sets up `path` (a ring for io_uring: else 30), opens the volume `img` with `flags`
// and `scratch` (else 31), then returns what `body` returns.
int MoveChunks(Path path, const fs::path& img, int flags, const fs::path& scratch,
               const std::function<int(Chunks&)>& body) {
  Uring ring;
  if (path == Path::kIoUring && !ring.Init()) return 30;
  const int fd = ::open(img.c_str(), flags | O_CLOEXEC);
  const int scratch_fd = ::open(scratch.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0 || scratch_fd < 0) return 31;
  Chunks chunks{path, fd, scratch_fd, ring};
  return body(chunks);
}

// One byte with room for one descriptor (SCM_RIGHTS): the message SendFd and ReceiveFd pass.
struct FdMessage {
  char byte = 'f';
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  FdMessage() {
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
  }
  FdMessage(const FdMessage&) = delete;
  FdMessage& operator=(const FdMessage&) = delete;
};

// Sends `fd` over a connected Unix socket (SCM_RIGHTS); the receiver never opens the file.
bool SendFd(int sock, int fd) {
  FdMessage m;
  cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  return ::sendmsg(sock, &m.msg, 0) == 1;
}

int ReceiveFd(int sock) {
  FdMessage m;
  if (::recvmsg(sock, &m.msg, 0) != 1) return -1;
  const cmsghdr* c = CMSG_FIRSTHDR(&m.msg);
  if (!c || c->cmsg_type != SCM_RIGHTS) return -1;
  int fd = -1;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  return fd;
}

// One datapath for the suite (loading it takes seconds); each test has its own guests and files.
class StorageIoPathsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    tmp_ = new TempDir();
    cgroups_ = new TestCgroups();
    // The tracepoint rung these tests judge, also where fanotify would take the opens.
    sp_ = new StorageDatapath(
        StorageOptions{.machine_cgroup = cgroups_->machine(), .force_tracepoint_fallback = true});
    sp_->ApplyPolicy(TestPolicy());
  }
  static void TearDownTestSuite() {
    delete sp_;
    delete cgroups_;
    delete tmp_;
    sp_ = nullptr;
  }
  void SetUp() override {
    SOVGUARD_REQUIRE(::geteuid() == 0, "root (kernel tier)");
    ASSERT_NE(sp_, nullptr);
    if (sp_->Status().Find("storage-open")->guarantee == Guarantee::kPrevents) {
      // Under BPF LSM, file_open/file_permission see every path at the VFS (storage_kernel_test).
      SOVGUARD_SKIP_KERNEL_FEATURE("no-bpf-lsm", "these tests exercise the tracepoint fallback");
    }
    static std::atomic<int> n{0};
    tag_ = "g" + std::to_string(++n);
  }

  // A guest announced before its cgroup exists, as at libvirt's `start begin`.
  fs::path StartGuest(const std::string& name, std::uint64_t datasets,
                      std::vector<GuestDisk> disks = {}) {
    return testing::StartGuest(*sp_, *cgroups_, name, datasets, std::move(disks));
  }

  fs::path Volume(const std::string& name, std::size_t bytes) const {
    const auto p = tmp_->path() / (tag_ + "-" + name + ".img");
    WriteFile(p, bytes);
    return p;
  }
  fs::path Scratch() const { return tmp_->path() / (tag_ + "-scratch"); }
  // A 1 MiB volume of "health" (filled with 'x'), protected.
  fs::path ProtectedHealthVolume() const {
    const auto img = Volume("health", 1 << 20);
    sp_->ProtectVolume(img, "health", false);
    return img;
  }

  std::optional<StorageEvent> WaitEvent(const std::string& guest, const std::string& kind) {
    return testing::WaitEvent(
        *sp_, [&](const StorageEvent& e) { return e.guest == guest && e.kind == kind; });
  }
  // This test's guest gets a `kind` event; it names `dataset` and `verdict` when they are given.
  void ExpectEvent(const std::string& kind, const std::string& dataset = "",
                   std::optional<Verdict> verdict = std::nullopt) {
    const auto e = WaitEvent(tag_, kind);
    ASSERT_TRUE(e.has_value()) << "no " << kind << " event";
    if (!dataset.empty()) {
      EXPECT_EQ(e->dataset, dataset);
    }
    if (verdict) {
      EXPECT_EQ(e->verdict, *verdict);
    }
  }

  IoCounters CountersOf(const std::string& guest, const std::string& dataset) const {
    for (const auto& c : sp_->ReadCounters()) {
      if (c.guest == guest && c.dataset == dataset) return c;
    }
    return IoCounters{};
  }

  static TempDir* tmp_;
  static TestCgroups* cgroups_;
  static StorageDatapath* sp_;
  std::string tag_;
};
TempDir* StorageIoPathsTest::tmp_ = nullptr;
TestCgroups* StorageIoPathsTest::cgroups_ = nullptr;
StorageDatapath* StorageIoPathsTest::sp_ = nullptr;

// ---- Opens no open{,at,at2} tracepoint sees -----------------------------------------------------

TEST_F(StorageIoPathsTest, CreatOfAnotherDatasetsVolumeIsKilled) {
  const auto img = ProtectedHealthVolume();
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::creat(img.c_str(), 0600);
    return fd >= 0 ? kOk : kFailed;
  });
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("open-denied", "health", Verdict::kKilled);
}

TEST_F(StorageIoPathsTest, OpenByHandleOfAnotherDatasetsVolumeIsKilled) {
  const auto img = ProtectedHealthVolume();
  // The handle is made outside the guest (it could come from anywhere: it is just bytes).
  std::vector<char> storage(sizeof(file_handle) + MAX_HANDLE_SZ);
  auto* fh = reinterpret_cast<file_handle*>(storage.data());
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(AT_FDCWD, img.c_str(), fh, &mount_id, 0) != 0) {
    SOVGUARD_SKIP_KERNEL_FEATURE(
        "exportfs", "name_to_handle_at on " << tmp_->path() << ": " << std::strerror(errno));
  }
  const int dir = ::open(tmp_->path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dir, 0);
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open_by_handle_at(dir, fh, O_RDONLY);
    return fd >= 0 ? kOk : kFailed;
  });
  ::close(dir);
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("open-denied", "health");
}

TEST_F(StorageIoPathsTest, IoUringOpenatOfAnotherDatasetsVolumeIsKilled) {
  const auto img = ProtectedHealthVolume();
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] {
    Uring ring;
    if (!ring.Init()) return 30;
    io_uring_sqe sqe{};
    sqe.opcode = IORING_OP_OPENAT;
    sqe.fd = AT_FDCWD;
    sqe.addr = reinterpret_cast<std::uint64_t>(img.c_str());
    sqe.open_flags = O_RDONLY;
    return ring.Run(sqe) >= 0 ? kOk : kFailed;
  });
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("open-denied", "health");
}

// int 0x80 from a 64-bit process runs the 32-bit syscall table, which no syscalls:* tracepoint
// sees: open(2) there is number 5, and its path must lie below 4 GiB. The kernel returns r8-r15
// zeroed from it.
long Int80(long nr, long a, long b, long c) {
  long ret;
  asm volatile("int $0x80"
               : "=a"(ret)
               : "a"(nr), "b"(a), "c"(b), "d"(c)
               : "memory", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15");
  return ret;
}

// Whether this kernel runs 32-bit syscalls at all: with ia32 emulation off (ia32_emulation=false,
// or a hypervisor kernel without the gate) int 0x80 raises #GP, i.e. SIGSEGV.
bool ThirtyTwoBitSyscallsRun() {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::signal(SIGSEGV, SIG_DFL);  // not the sanitizer's report: the plain signal is the answer
    ::_exit(Int80(20 /* getpid */, 0, 0, 0) > 0 ? 0 : 1);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

TEST_F(StorageIoPathsTest, ThirtyTwoBitOpenOfAnotherDatasetsVolumeIsKilled) {
#if !defined(__x86_64__)
  GTEST_SKIP() << "x86-64 only (int 0x80)";
#else
  const auto img = ProtectedHealthVolume();
  void* low =
      ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_32BIT, -1, 0);
  ASSERT_NE(low, MAP_FAILED);
  std::strncpy(static_cast<char*>(low), img.c_str(), 4095);
  const bool ia32 = ThirtyTwoBitSyscallsRun();
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] {
    ::signal(SIGSEGV, SIG_DFL);
    const long fd = Int80(5, static_cast<long>(reinterpret_cast<std::uintptr_t>(low)), O_RDONLY, 0);
    return fd >= 0 ? kOk : kFailed;
  });
  ::munmap(low, 4096);
  if (!ia32) {
    EXPECT_EQ(r.signal, SIGSEGV) << "exit " << r.exit_code;
    SOVGUARD_SKIP_KERNEL_FEATURE("ia32-emulation",
                                 "int 0x80 raises #GP on this kernel: it refuses every 32-bit "
                                 "syscall itself (the guest got SIGSEGV, no descriptor)");
  }
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("compat-syscall", "", Verdict::kKilled);
#endif
}

// ---- A descriptor the guest never opened: every I/O checks the volume's dataset ----------------

class PassedFdTest : public StorageIoPathsTest, public ::testing::WithParamInterface<Path> {};

TEST_P(PassedFdTest, ReadOfAPassedInVolumeIsKilledBeforeTheDataArrives) {
  const auto img = ProtectedHealthVolume();
  const int volume = ::open(img.c_str(), O_RDWR | O_CLOEXEC);  // opened by a host process
  ASSERT_GE(volume, 0);
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_TRUE(SendFd(sv[0], volume));  // queued: the guest receives it after it starts
  ::close(volume);
  // The guest's buffer is shared with this process: what the read copied is visible here even
  // though the guest dies.
  auto* shared = static_cast<char*>(
      ::mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(shared, MAP_FAILED);
  std::memset(shared, 'z', kChunk);
  const int scratch = ::open(Scratch().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  ASSERT_GE(scratch, 0);
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const Path path = GetParam();
  const auto r = RunInCgroup(cg, [&] {
    Uring ring;
    if (path == Path::kIoUring && !ring.Init()) return 30;
    const int fd = ReceiveFd(sv[1]);
    if (fd < 0) return 31;
    return MoveBytes(path, fd, scratch, ring, shared, kChunk, 0, false) > 0 ? kOk : kFailed;
  });
  ::close(sv[0]);
  ::close(sv[1]);
  ::close(scratch);
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  if (path != Path::kIoUring) {
    // io_uring is judged at completion: the first read has landed when the guest is killed.
    EXPECT_EQ(std::count(shared, shared + kChunk, 'x'), 0) << "volume bytes reached the guest";
  }
  ::munmap(shared, kChunk);
  ExpectEvent("open-denied", "health", Verdict::kKilled);
}

TEST_F(StorageIoPathsTest, MmapOfAPassedInVolumeIsKilled) {
  const auto img = ProtectedHealthVolume();
  const int volume = ::open(img.c_str(), O_RDONLY);  // inherited across fork, never opened there
  ASSERT_GE(volume, 0);
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto r = RunInCgroup(cg, [&] {
    void* p = ::mmap(nullptr, kChunk, PROT_READ, MAP_SHARED, volume, 0);
    return p != MAP_FAILED && static_cast<char*>(p)[0] == 'x' ? kOk : kFailed;
  });
  ::close(volume);
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("open-denied");
}

TEST_F(StorageIoPathsTest, TruncateOrPunchOfAPassedInVolumeIsKilled) {
  const auto img = ProtectedHealthVolume();
  const int volume = ::open(img.c_str(), O_RDWR);  // inherited across fork, never opened there
  ASSERT_GE(volume, 0);
  const auto cg = StartGuest(tag_, 1ULL << kAudited);
  const auto truncated =
      RunInCgroup(cg, [&] { return ::ftruncate(volume, 0) == 0 ? kOk : kFailed; });
  EXPECT_EQ(truncated.signal, SIGKILL) << "exit " << truncated.exit_code;
  // Detection only: truncate checks no signal, so the change is made before the guest dies.
  std::cout << "size after the killed ftruncate: " << fs::file_size(img) << "\n";
  const auto punched = RunInCgroup(cg, [&] {
    return ::fallocate(volume, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0
               ? kOk
               : kFailed;
  });
  EXPECT_EQ(punched.signal, SIGKILL) << "exit " << punched.exit_code;
  ::close(volume);
  ExpectEvent("open-denied");
}

TEST_F(StorageIoPathsTest, MmapOfAMeteredVolumeIsKilledSinceFaultsAreNotCounted) {
  const auto img = Volume("wmetered", 1 << 20);
  const auto cg = StartGuest(tag_, 1ULL << kWriteMetered, {{.source = img, .dataset = "wmetered"}});
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open(img.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return 30;
    void* p = ::mmap(nullptr, kChunk, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    return p != MAP_FAILED ? kOk : kFailed;
  });
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  ExpectEvent("uncounted-io", "wmetered");
}

// ---- Counting and budgets per path --------------------------------------------------------------

class IoPathTest : public StorageIoPathsTest, public ::testing::WithParamInterface<Path> {};

TEST_P(IoPathTest, BytesAreCountedExactly) {
  const auto img = Volume("health", 1 << 20);
  const auto cg = StartGuest(tag_, 1ULL << kHealth, {{.source = img, .dataset = "health"}});
  constexpr int kChunks = 8;
  const Path path = GetParam();
  const auto r = RunInCgroup(cg, [&] {
    return MoveChunks(path, img, O_RDWR, Scratch(), [&](Chunks& c) {
      std::vector<char> buf(kChunk, 'w');
      if (!c.Move(buf.data(), kChunks, true)) return 32;
      if (!c.Move(buf.data(), kChunks, false)) return 33;
      return kOk;
    });
  });
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  ASSERT_EQ(r.exit_code, kOk);
  const auto c = CountersOf(tag_, "health");
  EXPECT_EQ(c.write_bytes, kChunks * kChunk);
  EXPECT_EQ(c.read_bytes, kChunks * kChunk);
  EXPECT_EQ(c.denied, 0u);
}

TEST_P(IoPathTest, WriteBudgetKills) {
  const auto img = Volume("wmetered", 0);
  const auto cg = StartGuest(tag_, 1ULL << kWriteMetered, {{.source = img, .dataset = "wmetered"}});
  const Path path = GetParam();
  const auto r = RunInCgroup(cg, [&] {
    return MoveChunks(path, img, O_RDWR, Scratch(), [&](Chunks& c) {
      std::vector<char> buf(kChunk, 'q');
      return c.Move(buf.data(), 4 * kQuota / kChunk, true) ? kOk : kFailed;  // bounded: 4x
    });
  });
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  // Judged before the copy, except io_uring (at completion: the I/O crossing the budget is done).
  const std::uint64_t slack = path == Path::kIoUring ? kChunk : 0;
  EXPECT_LE(fs::file_size(img), kQuota + slack) << "bytes past the budget reached the file";
  EXPECT_GE(fs::file_size(img), kQuota - kChunk);
  EXPECT_LE(CountersOf(tag_, "wmetered").write_bytes, kQuota + slack);
  ExpectEvent("write-quota");
}

TEST_P(IoPathTest, ReadBudgetKills) {
  const auto img = Volume("rmetered", 4 * kQuota);
  const auto cg = StartGuest(tag_, 1ULL << kReadMetered, {{.source = img, .dataset = "rmetered"}});
  const Path path = GetParam();
  const auto r = RunInCgroup(cg, [&] {
    return MoveChunks(path, img, O_RDONLY, Scratch(), [&](Chunks& c) {
      std::vector<char> buf(kChunk);
      return c.Move(buf.data(), 4 * kQuota / kChunk, false) ? kOk : kFailed;  // the whole 4x
    });
  });
  EXPECT_EQ(r.signal, SIGKILL) << "exit " << r.exit_code;
  const std::uint64_t slack = path == Path::kIoUring ? kChunk : 0;
  EXPECT_LE(CountersOf(tag_, "rmetered").read_bytes, kQuota + slack);
  EXPECT_GE(CountersOf(tag_, "rmetered").read_bytes, kQuota - kChunk);
  ExpectEvent("read-quota");
}

// QEMU io='native' submits a guest request's scatter-gather list (often more than 16 pages) as one
// IOCB_CMD_PREADV/PWRITEV: every iovec is counted.
TEST_F(StorageIoPathsTest, LinuxAioVectorOfManyPagesIsCountedWhole) {
  const auto img = Volume("health", 1 << 20);
  const auto cg = StartGuest(tag_, 1ULL << kHealth, {{.source = img, .dataset = "health"}});
  constexpr std::size_t kPages = 200, kPage = 4096;
  const auto r = RunInCgroup(cg, [&] {
    const int fd = ::open(img.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return 30;
    std::vector<char> buf(kPages * kPage, 'v');
    std::vector<iovec> iov(kPages);
    for (std::size_t i = 0; i < kPages; ++i) iov[i] = {buf.data() + i * kPage, kPage};
    aio_context_t ctx = 0;
    if (::syscall(__NR_io_setup, 4, &ctx) < 0) return 31;
    for (const auto op : {IOCB_CMD_PWRITEV, IOCB_CMD_PREADV}) {
      iocb cb{};
      cb.aio_lio_opcode = op;
      cb.aio_fildes = static_cast<std::uint32_t>(fd);
      cb.aio_buf = reinterpret_cast<std::uint64_t>(iov.data());
      cb.aio_nbytes = kPages;
      iocb* list[1] = {&cb};
      io_event ev{};
      if (::syscall(__NR_io_submit, ctx, 1, list) != 1 ||
          ::syscall(__NR_io_getevents, ctx, 1, 1, &ev, nullptr) != 1 ||
          ev.res != static_cast<long>(kPages * kPage))
        return 32;
    }
    return kOk;
  });
  ASSERT_TRUE(r.exited) << "signal " << r.signal;
  ASSERT_EQ(r.exit_code, kOk);
  const auto c = CountersOf(tag_, "health");
  EXPECT_EQ(c.write_bytes, kPages * kPage);
  EXPECT_EQ(c.read_bytes, kPages * kPage);
}

const auto kAllPaths =
    ::testing::Values(Path::kReadWrite, Path::kVectored, Path::kPositional, Path::kSendfile,
                      Path::kSplice, Path::kCopyFileRange, Path::kAio, Path::kIoUring);
auto PathName = [](const ::testing::TestParamInfo<Path>& i) { return std::string(Name(i.param)); };
INSTANTIATE_TEST_SUITE_P(Paths, IoPathTest, kAllPaths, PathName);
INSTANTIATE_TEST_SUITE_P(Paths, PassedFdTest, kAllPaths, PathName);

}  // namespace
}  // namespace sovguard::storage
