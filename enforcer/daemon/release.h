// The explicit ways an operator stops or guards sovguardd's kernel enforcement. Stopping the daemon
// keeps enforcing (pinned programs and maps, by design), so removing it (uninstall, maintenance)
// is a command of its own; and one daemon per runtime directory, since a second would adopt and
// replace the first one's pinned datapath under it.
#pragma once

#include <filesystem>
#include <string>

#include "base/unique_fd.h"
#include "enforcer/daemon/config.h"

namespace sovguard::daemon {

// An exclusive flock on <runtime_dir>/sovguardd.lock (held until destroyed or the process exits;
// the kernel drops it on a crash, so a stale file never blocks). Throws naming the holder's pid
// when another process holds it.
class InstanceLock {
 public:
  explicit InstanceLock(const std::filesystem::path& runtime_dir);

 private:
  base::UniqueFd fd_;  // closing it drops the lock
};

// `sovguardd --release-enforcement [--force]`: removes every tc filter, storage program and pin
// the daemon left in the kernel, after measuring the release into the TPM-backed log (so the next
// quote shows that the node stopped enforcing, and which guests it released). Refuses, changing
// nothing, while a guest's tap or cgroup is still covered, unless `force`. Needs the daemon
// stopped (InstanceLock). Returns the exit code and writes what it did to `out`.
int ReleaseEnforcement(const Config& config, bool force, std::string& out);

}  // namespace sovguard::daemon
