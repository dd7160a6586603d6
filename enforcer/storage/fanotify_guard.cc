#include "enforcer/storage/fanotify_guard.h"
#include "enforcer/storage/storage_datapath.h"

#include <bpf/bpf.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>
#include <system_error>

#include "base/poll.h"

namespace sovguard::storage {
namespace {

namespace fs = std::filesystem;
using base::UniqueFd;

constexpr std::size_t kMaxQueuedEvents = 4096;
constexpr std::uint64_t kPermMask = FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM;

[[noreturn]] void ThrowErrno(const std::string& what) {
  throw std::system_error(errno, std::generic_category(), what);
}

UniqueFd InitGroup() {
  // FAN_REPORT_TID: the event names the opening thread (QEMU's I/O threads sit in sub-cgroups).
  // The event's own fd is opened read-only, without notification, by the kernel.
  UniqueFd fd(::fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_TID,
                              O_RDONLY | O_CLOEXEC | O_LARGEFILE));
  if (!fd) ThrowErrno("fanotify_init(FAN_CLASS_CONTENT)");
  return fd;
}

void MarkInode(int group, int fd, unsigned flags) {
  // The O_PATH fd's own inode, through its magic link: the file fstat checked, not a new lookup.
  const std::string self = fmt::format("/proc/self/fd/{}", fd);
  if (::fanotify_mark(group, flags, kPermMask, AT_FDCWD, self.c_str()) != 0)
    ThrowErrno("fanotify_mark");
}

std::uint64_t BootNs() {
  timespec ts{};
  ::clock_gettime(CLOCK_BOOTTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// The cgroup v2 path of a thread ("/machine/qemu-1-vm.libvirt-qemu/emulator"), empty when gone.
// One read(2) into a stack buffer: this runs for every permission event.
std::string CgroupOf(pid_t tid) {
  char path[48];
  std::snprintf(path, sizeof path, "/proc/%d/cgroup", static_cast<int>(tid));
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[4096];
  const ssize_t n = ::read(fd.Get(), buf, sizeof buf);
  if (n <= 0 || n == static_cast<ssize_t>(sizeof buf)) return {};  // gone, or too long to trust
  std::string_view all(buf, static_cast<std::size_t>(n));
  for (std::size_t pos = 0; pos < all.size();) {
    std::size_t end = all.find('\n', pos);
    if (end == std::string_view::npos) end = all.size();
    const std::string_view line = all.substr(pos, end - pos);
    if (line.starts_with("0::")) return std::string(line.substr(3));
    pos = end + 1;
  }
  return {};
}

// 0 when the directory is gone.
std::uint64_t CgroupIdOf(const fs::path& dir) {
  try {
    return StorageDatapath::CgroupId(dir);
  } catch (const StorageError&) {
    return 0;
  }
}

}  // namespace

FanotifyGuard::FanotifyGuard(const FanotifyTables& tables, fs::path cgroup2_root,
                             fs::path machine_cgroup)
    : cgroup2_root_(std::move(cgroup2_root)) {
  for (int fd : {tables.active, tables.cfg, tables.guests, tables.volumes}) {
    UniqueFd dup(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    if (!dup) ThrowErrno("dup storage table fd");
    table_fds_.push_back(std::move(dup));
  }
  tables_ = {table_fds_[0].Get(), table_fds_[1].Get(), table_fds_[2].Get(), table_fds_[3].Get()};
  const fs::path rel = machine_cgroup.lexically_relative(cgroup2_root_);
  if (rel.empty() || rel.string().starts_with(".."))
    throw std::system_error(EINVAL, std::generic_category(),
                            machine_cgroup.string() + " is not below " + cgroup2_root_.string());
  machine_rel_ = fmt::format("/{}", rel.string());
  group_ = InitGroup();
  stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop_) ThrowErrno("eventfd");
  thread_ = std::thread([this] { Run(); });
}

FanotifyGuard::~FanotifyGuard() {
  const std::uint64_t one = 1;
  if (::write(stop_.Get(), &one, sizeof one) != sizeof one) std::abort();  // cannot stop: no join
  thread_.join();
}

void FanotifyGuard::Protect(const fs::path& path, const sg_volume_key& key) {
  UniqueFd fd(::open(path.c_str(), O_PATH | O_CLOEXEC));
  if (!fd) ThrowErrno("open " + path.string());
  struct stat st {};
  if (::fstat(fd.Get(), &st) != 0) ThrowErrno("fstat " + path.string());
  const std::uint64_t ino = S_ISBLK(st.st_mode)
                                ? (std::uint64_t{major(st.st_rdev)} << 20) | minor(st.st_rdev)
                                : std::uint64_t{st.st_ino};
  if (ino != key.ino)
    throw std::system_error(ESTALE, std::generic_category(),
                            path.string() + " is no longer the volume that was checked");
  std::lock_guard lock(mu_);
  const auto id = std::make_pair(std::uint64_t{st.st_dev}, std::uint64_t{st.st_ino});
  marks_[id] = Mark{path, key};  // known before the first event of the mark can arrive
  try {
    MarkInode(group_.Get(), fd.Get(), FAN_MARK_ADD);
  } catch (...) {
    marks_.erase(id);
    throw;
  }
}

void FanotifyGuard::Unprotect(const sg_volume_key& key) {
  std::lock_guard lock(mu_);
  for (auto it = marks_.begin(); it != marks_.end(); ++it) {
    if (it->second.key.dev != key.dev || it->second.key.ino != key.ino) continue;
    UniqueFd fd(::open(it->second.path.c_str(), O_PATH | O_CLOEXEC));
    struct stat st {};
    if (fd && ::fstat(fd.Get(), &st) == 0 && st.st_dev == it->first.first &&
        st.st_ino == it->first.second) {
      MarkInode(group_.Get(), fd.Get(), FAN_MARK_REMOVE);
    }
    // Otherwise the path names another inode now: the old mark stays (denying stays safe).
    marks_.erase(it);
    return;
  }
}

std::size_t FanotifyGuard::Marked() const {
  std::lock_guard lock(mu_);
  return marks_.size();
}

FanotifyCounters FanotifyGuard::Counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

std::vector<sg_storage_event> FanotifyGuard::TakeEvents() {
  std::lock_guard lock(mu_);
  std::vector<sg_storage_event> out(events_.begin(), events_.end());
  events_.clear();
  return out;
}

std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> FanotifyGuard::TakeDenied() {
  std::lock_guard lock(mu_);
  return std::exchange(denied_, {});
}

void FanotifyGuard::Run() {
  alignas(fanotify_event_metadata) char buf[8192];
  for (;;) {
    const base::Wait w = base::WaitReadableOrStop(group_.Get(), stop_.Get());
    // poll on our own fds cannot fail; if it did, unanswered events would hang
    if (w == base::Wait::kFailed) std::abort();
    if (w == base::Wait::kStopped) return;
    const ssize_t n = ::read(group_.Get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      std::abort();
    }
    auto* m = reinterpret_cast<fanotify_event_metadata*>(buf);
    for (ssize_t left = n; FAN_EVENT_OK(m, left); m = FAN_EVENT_NEXT(m, left)) {
      if (m->vers != FANOTIFY_METADATA_VERSION) std::abort();  // cannot parse: cannot answer
      if (m->fd < 0) continue;  // queue overflow notice (permission events never overflow)
      UniqueFd event_fd(m->fd);
      if (!(m->mask & kPermMask)) continue;
      sg_storage_event ev{};
      const std::uint32_t answer = Decide(event_fd.Get(), m->pid, ev);
      fanotify_response r{.fd = event_fd.Get(), .response = answer};
      if (::write(group_.Get(), &r, sizeof r) != sizeof r) {
        // The opener was killed meanwhile (ENOENT): nothing waits for this answer.
        std::lock_guard lock(mu_);
        ++counters_.failed;
      }
    }
  }
}

std::uint32_t FanotifyGuard::Decide(int event_fd, pid_t tid, sg_storage_event& ev) {
  std::uint32_t answer = FAN_DENY;
  try {
    answer = DecideLocked(event_fd, tid, ev);
  } catch (...) {
    ev = {};
  }
  std::lock_guard lock(mu_);
  if (answer == FAN_ALLOW) {
    ++counters_.allowed;
  } else if (ev.kind == SG_EV_OPEN_DENIED) {
    ++counters_.denied;
    if (ev.guest_id != 0) ++denied_[{ev.guest_id, ev.dataset}];
    if (events_.size() < kMaxQueuedEvents)
      events_.push_back(ev);
    else
      ++counters_.events_dropped;
  } else {
    ++counters_.failed;
  }
  return answer;
}

// FAN_ALLOW or FAN_DENY; ev.kind is set for a policy denial, left 0 for "cannot decide".
std::uint32_t FanotifyGuard::DecideLocked(int event_fd, pid_t tid, sg_storage_event& ev) {
  struct stat st {};
  if (::fstat(event_fd, &st) != 0) return FAN_DENY;
  sg_volume_key key{};
  {
    std::lock_guard lock(mu_);
    const auto it = marks_.find({std::uint64_t{st.st_dev}, std::uint64_t{st.st_ino}});
    if (it == marks_.end()) return FAN_DENY;  // an inode we did not mark
    key = it->second.key;
  }
  const std::string cg = CgroupOf(tid);
  if (cg.empty()) return FAN_DENY;
  if (cg != machine_rel_ && !cg.starts_with(machine_rel_ + "/")) return FAN_ALLOW;  // not a guest
  sg_volume v{};
  if (bpf_map_lookup_elem(tables_.volumes, &key, &v) != 0)
    return errno == ENOENT ? FAN_ALLOW : FAN_DENY;  // no longer protected
  std::uint32_t gen = 0;
  const std::uint32_t zero = 0;
  if (bpf_map_lookup_elem(tables_.active, &zero, &gen) != 0) return FAN_DENY;
  gen &= SG_STORAGE_GENERATIONS - 1;
  sg_storage_config cfg{};
  if (bpf_map_lookup_elem(tables_.cfg, &gen, &cfg) != 0) return FAN_DENY;
  // The guest directory: the first component below the machine cgroup (a process in the machine
  // cgroup itself has none: it holds no dataset, as in the programs).
  std::uint64_t cgroup_id = 0;
  sg_storage_guest guest{};
  bool registered = false;
  if (cg.size() > machine_rel_.size()) {
    const std::string below = cg.substr(machine_rel_.size() + 1);
    const std::string dir = below.substr(0, below.find('/'));
    cgroup_id = CgroupIdOf(cgroup2_root_ / machine_rel_.substr(1) / dir);
    if (cgroup_id == 0) return FAN_DENY;
    if (bpf_map_lookup_elem(tables_.guests, &cgroup_id, &guest) == 0)
      registered = true;
    else if (errno != ENOENT)
      return FAN_DENY;
  }
  const std::uint64_t held = registered ? guest.datasets : 0;
  if (v.dataset < SG_MAX_DATASETS && (held & (1ULL << v.dataset))) return FAN_ALLOW;
  const bool enforced = v.dataset >= SG_MAX_DATASETS || (cfg.enforce_mask & (1ULL << v.dataset));
  // Audit mode: allowed; the tracepoint underneath sees the open and reports it as audited.
  if (!enforced) return FAN_ALLOW;
  ev.timestamp_ns = BootNs();
  ev.cgroup_id = cgroup_id;
  ev.guest_id = registered ? guest.guest_id : 0;
  ev.dataset = v.dataset;
  ev.kind = SG_EV_OPEN_DENIED;
  ev.pid = static_cast<std::uint32_t>(tid);
  ev.dev = key.dev;
  ev.ino = key.ino;
  ev.verdict = SG_VERDICT_DROP;
  return FAN_DENY;
}

std::string FanotifyGuard::Probe(const fs::path& dir) {
  try {
    UniqueFd group = InitGroup();
    const fs::path file = dir / fmt::format("sovguard-fanotify-probe-{}", ::getpid());
    UniqueFd made(::open(file.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    if (!made) ThrowErrno("create " + file.string());
    struct Unlink {
      fs::path p;
      ~Unlink() { ::unlink(p.c_str()); }
    } unlink_file{file};
    UniqueFd path_fd(::open(file.c_str(), O_PATH | O_CLOEXEC));
    if (!path_fd) ThrowErrno("open " + file.string());
    MarkInode(group.Get(), path_fd.Get(), FAN_MARK_ADD);
    int opener_errno = 0;
    std::thread opener([&] {
      const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
      opener_errno = fd < 0 ? errno : 0;
      if (fd >= 0) ::close(fd);
    });
    // Answer every event (the opener waits for it); bounded: one open, at most 2 s.
    bool answered = false;
    pollfd p{group.Get(), POLLIN, 0};
    while (!answered && ::poll(&p, 1, 2000) > 0) {
      alignas(fanotify_event_metadata) char buf[1024];
      const ssize_t n = ::read(group.Get(), buf, sizeof buf);
      if (n <= 0) break;
      auto* m = reinterpret_cast<fanotify_event_metadata*>(buf);
      for (ssize_t left = n; FAN_EVENT_OK(m, left); m = FAN_EVENT_NEXT(m, left)) {
        if (m->fd < 0) continue;
        UniqueFd efd(m->fd);
        fanotify_response r{.fd = efd.Get(), .response = FAN_DENY};
        answered |= ::write(group.Get(), &r, sizeof r) == sizeof r;
      }
    }
    if (!answered) {
      group.Reset();  // the kernel answers what is pending and the opener returns
      opener.join();
      return "no open permission event within 2 s";
    }
    opener.join();
    if (opener_errno != EPERM)
      return fmt::format("FAN_DENY did not refuse the open ({})",
                         opener_errno ? std::strerror(opener_errno) : "it succeeded");
    return {};
  } catch (const std::system_error& e) {
    return e.what();
  }
}

}  // namespace sovguard::storage
