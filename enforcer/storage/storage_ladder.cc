#include "enforcer/storage/storage_ladder.h"

#include "enforcer/system/lsm.h"

namespace sovguard::storage {

namespace {
// Every way to open a volume the tracepoint rung sees: the open syscalls' exits (sg_sys_exit,
// which also counts the read/write calls) and any 32-bit syscall (sg_sys_enter, which also
// dispatches the read/write calls; io_uring's opens: at completion, by the I/O programs where the
// kernel has them).
const std::vector<const char*> kTracepointOpenPrograms = {"sg_sys_exit", "sg_sys_enter"};
}  // namespace

const std::vector<LadderRung>& StorageOpenLadder() {
  static const std::vector<LadderRung> kLadder = {
      {OpenRung::kBpfLsm,
       "bpf-lsm:file_open",
       Guarantee::kPrevents,
       {"sg_lsm_file_open", "sg_lsm_file_permission", "sg_lsm_mmap_file"},
       "BPF LSM needs trampolines and 'bpf' in lsm=",
       true,
       "bpf-lsm:file_permission"},
      // The same programs' judgement in front of the kernel's security_*() functions: as strong
      // as the LSM (EPERM in the kernel, no daemon needed), on kernels whose lsm= lacks 'bpf'.
      {OpenRung::kFmodRet,
       "fmod_ret:security_file_open",
       Guarantee::kPrevents,
       {"sg_fmod_file_open", "sg_fmod_file_permission", "sg_fmod_mmap_file"},
       "fmod_ret on security_* functions needs BPF trampolines",
       true,
       "fmod_ret:security_file_permission"},
      // The fanotify rung attaches the tracepoint rung's programs too: they kill what the group
      // lets through while no daemon answers (its fd closed with the process).
      {OpenRung::kFanotify, "fanotify:open_perm", Guarantee::kPrevents, kTracepointOpenPrograms,
       "fanotify permission events need CONFIG_FANOTIFY_ACCESS_PERMISSIONS"},
      {OpenRung::kTracepointKill,
       "tracepoint:sys_exit_openat,openat2,open,creat,open_by_handle_at+tp_btf:sys_enter(32-bit)+"
       "SIGKILL",
       Guarantee::kDetectsAndKills, kTracepointOpenPrograms,
       "the raw sys_enter/sys_exit tracepoints need BTF (tp_btf) and "
       "CONFIG_HAVE_SYSCALL_TRACEPOINTS"},
  };
  return kLadder;
}

const LadderRung* RungNamed(std::string_view mechanism) {
  for (const auto& r : StorageOpenLadder())
    if (r.mechanism == mechanism) return &r;
  return nullptr;
}

std::optional<std::string> InactiveReason(const LadderRung& rung) {
  if (rung.rung != OpenRung::kBpfLsm) return std::nullopt;
  return enforcer::BpfLsmInactiveReason();
}

bool NeedsTrampoline(std::string_view section_name) {
  return section_name.starts_with("lsm/") || section_name.starts_with("fmod_ret/");
}

const LadderRung& RungOf(OpenRung rung) {
  for (const auto& r : StorageOpenLadder())
    if (r.rung == rung) return r;
  return StorageOpenLadder().back();  // unreachable: every rung is in the table
}

}  // namespace sovguard::storage
