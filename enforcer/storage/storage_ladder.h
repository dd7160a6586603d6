// The storage-open mechanism ladder, strongest first: the one table both the kernel probe
// (enforcer/probe) and StorageDatapath select from, so the two cannot name a different mechanism
// or guarantee for the same kernel. Each rung says what it is called everywhere (status, metrics,
// snapshot, measured downgrades), what it guarantees, and which programs it attaches.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace sovguard::storage {

enum class Guarantee { kPrevents, kDetectsAndKills, kCounts, kNone };
std::string ToString(Guarantee g);  // "prevents", "detects-and-kills", "counts", "none"

enum class OpenRung {
  kBpfLsm,          // lsm/file_open (+ lsm/file_permission for I/O): EPERM in the kernel
  kFanotify,        // FAN_OPEN_PERM answered by the daemon, tracepoint programs as backstop
  kTracepointKill,  // sys_exit_open{,at,at2} + SIGKILL before the opener returns to user space
};

struct LadderRung {
  OpenRung rung;
  std::string_view mechanism;  // the name reported everywhere
  Guarantee guarantee;
  std::vector<const char*> programs;  // storage_guard programs the rung attaches (all required)
  std::string_view needs;             // what the kernel must offer, for the downgrade reason
};

// Strongest first.
const std::vector<LadderRung>& StorageOpenLadder();
const LadderRung& RungOf(OpenRung rung);

}  // namespace sovguard::storage
