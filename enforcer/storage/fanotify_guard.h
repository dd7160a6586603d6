// sovguard::storage::FanotifyGuard: refuses a guest's open() of a protected volume before it
// happens, on kernels without BPF LSM, with fanotify permission events (FAN_OPEN_PERM,
// FAN_OPEN_EXEC_PERM; CONFIG_FANOTIFY_ACCESS_PERMISSIONS).
//
// Contract:
// - One inode mark per protected volume (the image file, or the block device node): every path
//   to that inode (hard links, bind mounts, /proc/PID/fd/N) is judged; an unprotected file raises
//   no event at all.
// - The verdict is taken from the same kernel tables the BPF programs read (sg_storage_active,
//   sg_storage_cfg, sg_storage_guests, sg_volumes): the asking thread's cgroup v2 path
//   (/proc/TID/cgroup) -> its guest directory below the machine cgroup -> the guest's datasets ->
//   the volume's dataset. A thread outside the machine cgroup is not judged (allowed); one under
//   it without a registered guest holds no dataset. Anything that cannot be decided (the thread
//   is gone, a table cannot be read, an inode we did not mark) is answered FAN_DENY: fail closed.
// - Audit-mode datasets are answered FAN_ALLOW (the tracepoints underneath report them).
// - fanotify does not tell the opener's access mode, so a write open of a read-only volume by a
//   guest holding its dataset is allowed here and killed by the tracepoint backstop.
// - The kernel waits for every answer without a time limit (the opener sleeps, killable). The
//   decision is a few local syscalls with no lock held across them; if this process dies, the
//   group dies with its fd and the kernel answers the pending events FAN_ALLOW: the tracepoint +
//   SIGKILL programs, which stay attached underneath, then kill the opener.
// One thread owns the group: it reads, decides and answers. Mark changes (Protect/Unprotect) may
// come from any one other thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "base/unique_fd.h"
#include "bpf/sovguard_abi.h"

namespace sovguard::storage {

// The storage tables the guard reads (its own duplicates of the map fds).
struct FanotifyTables {
  int active = -1;   // sg_storage_active
  int cfg = -1;      // sg_storage_cfg
  int guests = -1;   // sg_storage_guests
  int volumes = -1;  // sg_volumes
};

struct FanotifyCounters {
  std::uint64_t allowed = 0;  // answered FAN_ALLOW (host processes, guests holding the dataset)
  std::uint64_t denied = 0;   // answered FAN_DENY by the policy
  std::uint64_t failed = 0;   // answered FAN_DENY because the decision could not be made
  std::uint64_t events_dropped = 0;  // denials not queued as events (queue full)
};

class FanotifyGuard {
 public:
  // fanotify_init + the answering thread. Throws std::system_error (with the stage) when the
  // kernel offers no permission events.
  FanotifyGuard(const FanotifyTables& tables, std::filesystem::path cgroup2_root,
                std::filesystem::path machine_cgroup);
  ~FanotifyGuard();  // stops the thread, then closes the group (pending events: FAN_ALLOW)
  FanotifyGuard(const FanotifyGuard&) = delete;
  FanotifyGuard& operator=(const FanotifyGuard&) = delete;

  // Marks the inode at `path` (which must be the volume `key` identifies: checked with fstat)
  // for open permission events. Idempotent. Throws std::system_error.
  void Protect(const std::filesystem::path& path, const sg_volume_key& key);
  // Removes the mark of `key` (no-op when not marked).
  void Unprotect(const sg_volume_key& key);
  std::size_t Marked() const;

  FanotifyCounters Counters() const;
  // Denials since the last call, as the BPF programs would report them (kind SG_EV_OPEN_DENIED,
  // verdict SG_VERDICT_DROP); at most 4096 are queued, the rest counted in events_dropped.
  std::vector<sg_storage_event> TakeEvents();
  // Policy denials of registered guests since the last call, per (guest id, dataset index): the
  // datapath adds them to the guest's `denied` counter, as the programs do for their own.
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> TakeDenied();

  // Does this kernel refuse an open on our answer? Marks a scratch file in `dir`, opens it from
  // another thread and answers FAN_DENY; empty on success, else the stage and errno text.
  static std::string Probe(const std::filesystem::path& dir);

 private:
  struct Mark {
    std::filesystem::path path;
    sg_volume_key key{};
  };
  void Run();
  // The answer for one permission event; fills `ev` for a denial.
  std::uint32_t Decide(int event_fd, pid_t tid, sg_storage_event& ev);
  std::uint32_t DecideLocked(int event_fd, pid_t tid, sg_storage_event& ev);

  FanotifyTables tables_;  // owned duplicates
  std::vector<base::UniqueFd> table_fds_;
  std::string machine_rel_;  // machine cgroup below the cgroup2 root, "/machine"
  std::filesystem::path cgroup2_root_;
  base::UniqueFd group_;
  base::UniqueFd stop_;      // eventfd: wakes the thread to stop
  mutable std::mutex mu_;    // marks_, events_, counters_
  std::map<std::pair<std::uint64_t, std::uint64_t>, Mark> marks_;  // by (st_dev, st_ino)
  std::deque<sg_storage_event> events_;
  std::map<std::pair<std::uint32_t, std::uint32_t>, std::uint64_t> denied_;
  FanotifyCounters counters_;
  std::thread thread_;  // last: started when everything above exists
};

}  // namespace sovguard::storage
