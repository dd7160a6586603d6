// The storage-open mechanism ladder, strongest first: the one table both the kernel probe
// (StorageDatapath::ProbeLadder) and StorageDatapath's attach select from, so the two cannot
// name a different mechanism or guarantee for the same kernel. Each rung says what it is called
// everywhere (status, metrics, snapshot, measured downgrades), what it guarantees, and which
// programs it attaches.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "enforcer/bpf_feature/ladder.h"

namespace sovguard::storage {

using bpf_feature::Guarantee;
using bpf_feature::ToString;

enum class OpenRung {
  kBpfLsm,          // lsm/file_open (+ file_permission, mmap_file for I/O): EPERM in the kernel
  kFmodRet,         // the same judgement as fmod_ret on security_file_open & co. (no 'bpf' in lsm=)
  kFanotify,        // FAN_OPEN_PERM answered by the daemon, tracepoint programs as backstop
  kTracepointKill,  // sys_exit_open{,at,at2} + SIGKILL before the opener returns to user space
};

struct LadderRung {
  OpenRung rung;
  std::string_view mechanism;  // the name reported everywhere
  Guarantee guarantee;
  std::vector<const char*> programs;  // storage_guard programs the rung attaches (all required)
  std::string_view needs;             // what the kernel must offer, for the downgrade reason
  // The rung's programs judge every open, read/write and mmap at the VFS (the I/O quota is
  // refused there too); otherwise the syscall tracepoints judge I/O and kill.
  bool vfs_hooks = false;
  std::string_view quota_mechanism = {};  // storage-io-quota's name when vfs_hooks
};

// Strongest first.
const std::vector<LadderRung>& StorageOpenLadder();
const LadderRung& RungOf(OpenRung rung);
// The rung reported under `mechanism`, or nullptr.
const LadderRung* RungNamed(std::string_view mechanism);
// Why the rung guards nothing here although its programs attach (BPF LSM programs attach when
// "bpf" is not an active LSM, and are then never called), or nullopt.
std::optional<std::string> InactiveReason(const LadderRung& rung);
// Whether a program runs through a BPF trampoline (lsm/, fmod_ret/): kernels without trampolines
// refuse to load them, so the loader drops them together and says so.
bool NeedsTrampoline(std::string_view section_name);

}  // namespace sovguard::storage
