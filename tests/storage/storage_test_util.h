// The storage-path tests' one fixture: a stand-in libvirt "machine" cgroup, guest cgroups
// announced as the daemon does, children that join a guest cgroup and open or connect there, and a
// test policy.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "enforcer/storage/storage_datapath.h"
#include "enforcer/storage/storage_ladder.h"
#include "enforcer/system/mounts.h"
#include "tests/harness/require.h"

namespace sovguard::storage::testing {

namespace fs = std::filesystem;

inline std::string UniqueSuffix() {
  std::random_device rd;
  return std::to_string(::getpid()) + "-" + std::to_string(rd() % 100000);
}

// A storage dataset of a test policy; `pool`, when not empty, is its one approved path pool.
inline policy::CompiledStorageDataset TestDataset(std::string id, std::uint8_t index,
                                                  policy::Mode mode = policy::Mode::kEnforce,
                                                  const fs::path& pool = {}) {
  policy::CompiledStorageDataset d;
  d.id = std::move(id);
  d.index = index;
  d.mode = mode;
  if (!pool.empty()) d.pools.push_back({policy::StoragePool::Kind::kPath, pool.string()});
  return d;
}

// The test jurisdiction zones of storage endpoints: 198.51.100.0/24 in DE (allowed for the
// datasets in `de_allowed`), 203.0.113.0/24 in US (allowed for none), class 0 unknown.
inline void AddTestZones(policy::CompiledStorage& s, std::uint64_t de_allowed) {
  s.classes.push_back({0, SG_COUNTRY_UNKNOWN, 0, 0});
  s.classes.push_back({de_allowed, 0x4445, 0, 0});  // DE
  s.classes.push_back({0, 0x5553, 0, 0});           // US
  s.ipv4.push_back({0xC6336400u, 24, 1});           // 198.51.100.0/24: DE
  s.ipv4.push_back({0xCB007100u, 24, 2});           // 203.0.113.0/24: US
}

// A unique pin directory on bpffs; whatever is left in it is unpinned on destruction (a failed
// test must not leave programs attached).
class PinDir {
 public:
  PinDir() : path_(fs::path("/sys/fs/bpf") / ("sgt-storage-" + UniqueSuffix())) {}
  ~PinDir() {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(path_, ec)) ::unlink(e.path().c_str());
    ::rmdir(path_.c_str());
  }
  PinDir(const PinDir&) = delete;
  PinDir& operator=(const PinDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// <cgroup2>/sgt-storage-<unique>/machine, removed (children first) on destruction.
class TestCgroups {
 public:
  TestCgroups() {
    const auto root = enforcer::FindCgroup2Mount();
    if (!root) throw std::runtime_error("no cgroup2 mount");
    top_ = *root / ("sgt-storage-" + UniqueSuffix());
    machine_ = top_ / "machine";
    fs::create_directories(machine_);
  }
  ~TestCgroups() {
    std::error_code ec;
    for (int pass = 0; pass < 2; ++pass) {
      if (!fs::exists(machine_, ec)) break;
      for (const auto& e : fs::directory_iterator(machine_, ec)) {
        if (e.is_directory(ec)) ::rmdir(e.path().c_str());
      }
    }
    ::rmdir(machine_.c_str());
    ::rmdir(top_.c_str());
  }
  TestCgroups(const TestCgroups&) = delete;
  TestCgroups& operator=(const TestCgroups&) = delete;
  const fs::path& machine() const { return machine_; }
  fs::path Make(const std::string& name) const {
    const auto p = machine_ / name;
    fs::create_directory(p);
    return p;
  }

 private:
  fs::path top_, machine_;
};

// A scratch directory removed on destruction.
class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("sgt-storage-" + UniqueSuffix());
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void WriteFile(const fs::path& p, std::size_t bytes) {
  std::ofstream out(p, std::ios::binary);
  std::string chunk(4096, 'x');
  for (std::size_t done = 0; done < bytes; done += chunk.size()) out << chunk;
}

// <dir>/approved (a test policy's approved pool) holding health.img of `bytes`; the image's path.
inline fs::path MakeApprovedImage(const fs::path& dir, std::size_t bytes) {
  const fs::path approved = dir / "approved";
  fs::create_directories(approved);
  const fs::path image = approved / "health.img";
  WriteFile(image, bytes);
  return image;
}

struct ChildResult {
  bool exited = false;
  int exit_code = -1;
  int signal = 0;  // terminating signal, 0 when it exited
};

// The child ran to its end (no signal) and exited with `code`.
inline void ExpectExited(const ChildResult& r, int code) {
  EXPECT_TRUE(r.exited) << "signal " << r.signal;
  EXPECT_EQ(r.exit_code, code);
}

// Moves the calling process into `cgroup` (cgroup.procs); false when it cannot.
inline bool JoinCgroup(const fs::path& cgroup) {
  const int fd = ::open((cgroup / "cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC);
  const bool joined = fd >= 0 && ::write(fd, "0", 1) == 1;
  if (fd >= 0) ::close(fd);
  return joined;
}

// Forks a child that moves itself into `cgroup`, then runs `body` and exits with its return value
// (bodies use only syscalls). The parent waits, bounded by `timeout`.
inline ChildResult RunInCgroup(const fs::path& cgroup, const std::function<int()>& body,
                               std::chrono::seconds timeout = std::chrono::seconds(20)) {
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (!JoinCgroup(cgroup)) ::_exit(100);
    ::_exit(body());
  }
  ChildResult r;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) {
      r.exited = WIFEXITED(status);
      r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
      r.signal = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
      return r;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      ADD_FAILURE() << "child in " << cgroup << " did not finish in time";
      return r;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling waitpid, not a sync sleep
  }
}

// A child process standing in for a daemon that dies by SIGKILL: `body` runs in the child, builds
// its datapath and calls `serve()` once it is ready; serve() reports "ok" to the parent and blocks
// until the child is killed. What `body` throws is reported instead (and the child exits 1).
// The parent's ForkedDaemon::report is "ok" or that text; Kill() kills the child and returns
// its wait status.
class ForkedDaemon {
 public:
  explicit ForkedDaemon(const std::function<void(const std::function<void()>& serve)>& body) {
    int ready[2], hold[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold, O_CLOEXEC) != 0)
      throw std::runtime_error("pipe2 failed");
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      std::string msg = "ok";
      try {
        body([&] {
          if (::write(ready[1], msg.data(), msg.size()) < 0) ::_exit(2);
          char c;
          while (::read(hold[0], &c, 1) != 0) {
          }  // until SIGKILL (the parent never writes)
          ::_exit(0);
        });
        msg = "the daemon body returned without serving";
      } catch (const std::exception& e) {
        msg = e.what();
      }
      if (::write(ready[1], msg.data(), msg.size()) < 0) ::_exit(3);
      ::_exit(1);
    }
    ::close(ready[1]);
    ::close(hold[0]);
    hold_ = hold[1];
    char buf[512] = {};
    const ssize_t n = ::read(ready[0], buf, sizeof buf - 1);
    ::close(ready[0]);
    report = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "no report from the child";
    if (report != "ok") Wait();  // it exits after reporting
  }
  ~ForkedDaemon() {
    if (pid_ > 0) Kill();
    if (hold_ >= 0) ::close(hold_);
  }
  ForkedDaemon(const ForkedDaemon&) = delete;
  ForkedDaemon& operator=(const ForkedDaemon&) = delete;

  // SIGKILL and reap; the wait status (-1 when it was already reaped).
  int Kill() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGKILL);
    return Wait();
  }

  std::string report;

 private:
  int Wait() {
    int status = 0;
    const pid_t w = ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return w > 0 ? status : -1;
  }

  pid_t pid_ = -1;
  int hold_ = -1;
};

// Exit codes of children: the operation worked, failed with EPERM, failed otherwise; the child
// could not enter its network namespace.
constexpr int kOk = 0, kEperm = 13, kOtherError = 20, kNoNetns = 40;

// Opens and closes `p`: kOk, kEperm or kOtherError.
inline int OpenAndClose(const fs::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return errno == EPERM ? kEperm : kOtherError;
  ::close(fd);
  return kOk;
}

// `addr` (IPv4 text) on NBD's port, the destination of the tests' storage connects.
inline sockaddr_in NbdAddress(const char* addr) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(10809);
  ::inet_pton(AF_INET, addr, &a.sin_addr);
  return a;
}

// One TCP connect to `addr` in the caller's network namespace: kOk, kEperm or kOtherError.
inline int ConnectTo(const char* addr) {
  const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const sockaddr_in a = NbdAddress(addr);
  const int rc = ::connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof a);
  const int err = errno;
  ::close(s);
  return rc == 0 ? kOk : err == EPERM ? kEperm : kOtherError;
}

// In a child: a new, empty network namespace (lo down, no routes: nothing leaves it), then
// connect. cgroup/connect4 runs before routing, so a refused connect fails with EPERM and an
// allowed one with ENETUNREACH (kOtherError).
inline int ConnectInEmptyNetns(const char* addr) {
  if (::unshare(CLONE_NEWNET) != 0) return kNoNetns;
  return ConnectTo(addr);
}

// In a child: enter the named network namespace (/run/netns/<name>), then connect.
inline int ConnectInNetns(const std::string& netns, const char* addr) {
  const int ns = ::open(("/run/netns/" + netns).c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0 || ::setns(ns, CLONE_NEWNET) != 0) return kNoNetns;
  ::close(ns);
  return ConnectTo(addr);
}

// A T in memory shared with the children forked after it (anonymous MAP_SHARED), so what a child
// counts there the parent reads; unmapped on destruction.
template <class T>
class SharedWithChildren {
 public:
  SharedWithChildren() {
    void* mem =
        ::mmap(nullptr, sizeof(T), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw std::runtime_error("mmap of memory shared with children failed");
    value_ = new (mem) T;
  }
  ~SharedWithChildren() {
    value_->~T();
    ::munmap(value_, sizeof(T));
  }
  SharedWithChildren(const SharedWithChildren&) = delete;
  SharedWithChildren& operator=(const SharedWithChildren&) = delete;
  T* operator->() const { return value_; }
  T& operator*() const { return *value_; }

 private:
  T* value_ = nullptr;
};

// A guest's connect() loop in the background: a child in `cgroup`, in a new empty network
// namespace, connects one socket to `addr` (NBD's port) until Stop() or `max_attempts` (bounded
// in count, and in time by `timeout`). Every attempt is counted, as refused (EPERM) or other.
class ConnectLoop {
 public:
  ConnectLoop(const fs::path& cgroup, const char* addr, int max_attempts,
              std::chrono::seconds timeout)
      : thread_([this, cgroup, addr, max_attempts, timeout] {
          RunInCgroup(
              cgroup,
              [&] {
                if (::unshare(CLONE_NEWNET) != 0) return kNoNetns;
                const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                const sockaddr_in a = NbdAddress(addr);
                for (int i = 0; i < max_attempts && !counts_->stop.load(); ++i) {
                  const int rc = ::connect(s, reinterpret_cast<const sockaddr*>(&a), sizeof a);
                  counts_->attempts.fetch_add(1);
                  (rc != 0 && errno == EPERM ? counts_->eperm : counts_->other).fetch_add(1);
                }
                ::close(s);
                return kOk;
              },
              timeout);
        }) {}
  ~ConnectLoop() { Stop(); }
  ConnectLoop(const ConnectLoop&) = delete;
  ConnectLoop& operator=(const ConnectLoop&) = delete;

  // Returns once `n` attempts were made, or after 20 s.
  void WaitAttempts(std::uint64_t n) const {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (attempts() < n && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling a counter, bounded
  }
  // Tells the child to stop and waits for it.
  void Stop() {
    counts_->stop.store(1);
    if (thread_.joinable()) thread_.join();
  }
  std::uint64_t attempts() const { return counts_->attempts.load(); }
  std::uint64_t eperm() const { return counts_->eperm.load(); }
  std::uint64_t other() const { return counts_->other.load(); }

 private:
  struct Counts {
    std::atomic<std::uint64_t> attempts{0}, eperm{0}, other{0};
    std::atomic<int> stop{0};
  };
  SharedWithChildren<Counts> counts_;  // before thread_: the child uses it
  std::thread thread_;
};

// Every event delivered until none arrives within 100 ms.
inline std::vector<StorageEvent> DrainEvents(StorageDatapath& sp) {
  std::vector<StorageEvent> out;
  while (sp.PollEvents([&](const StorageEvent& e) { out.push_back(e); }, 100) > 0) {
  }
  return out;
}

// Polls events until `want` matches one (returned) or 5 s pass; every event delivered meanwhile
// is appended to `seen` when given.
inline std::optional<StorageEvent> WaitEvent(StorageDatapath& sp,
                                             const std::function<bool(const StorageEvent&)>& want,
                                             std::vector<StorageEvent>* seen = nullptr) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    std::optional<StorageEvent> found;
    sp.PollEvents(
        [&](const StorageEvent& e) {
          if (seen) seen->push_back(e);
          if (!found && want(e)) found = e;
        },
        100);
    if (found) return found;
  }
  return std::nullopt;
}

// Whether the datapath's storage-open path prevents (refuses opens with EPERM) rather than kills.
inline bool OpenPrevented(StorageDatapath& sp) {
  return sp.Status().Find("storage-open")->guarantee == Guarantee::kPrevents;
}

// A guest's attempt `r` was refused with EPERM (`refused`) or else killed, and the `kind` event
// that follows names `guest`. Returns that event; nullopt (a failure) when none came in 5 s.
inline std::optional<StorageEvent> ExpectStoppedAndReported(
    StorageDatapath& sp, const ChildResult& r, bool refused, const std::string& kind,
    const std::string& guest, std::vector<StorageEvent>* seen = nullptr) {
  if (refused) {
    EXPECT_EQ(r.exit_code, kEperm) << "signal " << r.signal;
  } else {
    EXPECT_EQ(r.signal, SIGKILL) << "exit code " << r.exit_code;
  }
  auto e = WaitEvent(
      sp, [&](const StorageEvent& ev) { return ev.kind == kind; }, seen);
  if (e) {
    EXPECT_EQ(e->guest, guest);
  } else {
    ADD_FAILURE() << "no " << kind << " event";
  }
  return e;
}

// Announces a guest the way the daemon does at libvirt's `start begin` (before its cgroup
// exists), then makes its cgroup below `cgroups`' machine cgroup, as libvirt does next.
inline fs::path StartGuest(StorageDatapath& sp, const TestCgroups& cgroups, const std::string& name,
                           std::uint64_t datasets, std::vector<GuestDisk> disks = {}) {
  const std::string dir = "qemu-1-" + name + ".libvirt-qemu";
  sp.ExpectGuest(dir, GuestStorage{.name = name, .datasets = datasets, .disks = disks});
  return cgroups.Make(dir);
}

// The fixture of the storage kernel tests: root, a scratch directory, a stand-in machine cgroup
// and a datapath on it (Start), guests announced as the daemon does (StartGuest).
class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override { SOVGUARD_REQUIRE(::geteuid() == 0, "root (kernel tier)"); }

  // <scratch>/approved (the approved pool, approved_) and in it health.img of `bytes` (image_).
  void MakeApprovedImage(std::size_t bytes) {
    image_ = testing::MakeApprovedImage(tmp_.path(), bytes);
    approved_ = image_.parent_path();
  }
  // A datapath on the test's machine cgroup with `policy` applied.
  void Start(const policy::CompiledStorage& policy, StorageOptions options = {}) {
    options.machine_cgroup = cgroups_.machine();
    sp_ = std::make_unique<StorageDatapath>(std::move(options));
    sp_->ApplyPolicy(policy);
  }
  bool Prevents() const { return OpenPrevented(*sp_); }
  // The selected rung judges every open, read/write and mmap at the VFS (BPF LSM or fmod_ret):
  // refusals are EPERM/EDQUOT and the process lives.
  bool VfsHooks() const {
    const LadderRung* rung =
        RungNamed(const_cast<StorageDatapath&>(*sp_).Status().Find("storage-open")->mechanism);
    return rung && rung->vfs_hooks;
  }
  fs::path StartGuest(const std::string& name, std::uint64_t datasets,
                      std::vector<GuestDisk> disks = {}) {
    return testing::StartGuest(*sp_, cgroups_, name, datasets, std::move(disks));
  }
  // The guest's attempt `r` was refused (`refused`) or killed; the `kind` event names `guest`.
  std::optional<StorageEvent> ExpectStoppedAndReported(const ChildResult& r, bool refused,
                                                       const std::string& kind,
                                                       const std::string& guest) {
    return testing::ExpectStoppedAndReported(*sp_, r, refused, kind, guest, &events_);
  }
  // Events until `want` matches one or 5 s pass; every event seen is kept in events_.
  std::optional<StorageEvent> WaitEvent(const std::function<bool(const StorageEvent&)>& want) {
    return testing::WaitEvent(*sp_, want, &events_);
  }

  TempDir tmp_;
  TestCgroups cgroups_;
  fs::path approved_, image_;
  std::unique_ptr<StorageDatapath> sp_;
  std::vector<StorageEvent> events_;
};

}  // namespace sovguard::storage::testing
