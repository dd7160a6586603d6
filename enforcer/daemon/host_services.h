// What the daemon needs from the host and starts itself on the newcomer path: libvirtd (with
// virtlogd) when none answers, and a software TPM when the machine has no hardware TPM. Under
// systemd (PID 1) each runs as a unit of its own, never in sovguardd.service's cgroup, so that
// stopping or restarting the daemon leaves them (and the guests) running; elsewhere they are
// daemonised children.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>

#include "enforcer/daemon/config.h"

namespace sovguard::daemon {

struct TpmChoice {
  std::string tcti;         // for Tss2_TctiLdr_Initialize, e.g. "device:/dev/tpmrm0"
  bool software = false;    // swtpm: no hardware root of trust
  std::string description;  // what an operator reads in the log and status
};

// Hardware TPM at /dev/tpmrm0 if present; else (when allowed) a swtpm with its state in
// state_dir/swtpm (provisioned once with an EK certificate), serving only Unix sockets in
// runtime_dir/swtpm (directory 0700, sockets 0600, owned by this user). A swtpm left by a previous
// daemon is used only when IsOurSwtpm holds; otherwise it is stopped (when it runs on this state)
// and a new one is started. Under systemd the swtpm runs as the transient unit
// sovguard-swtpm@<escaped state path>.service and is used only when it runs in that unit's
// cgroup. An explicit `tpm = ...` is used as configured (the operator's
// responsibility). Throws when there is no TPM.
TpmChoice EnsureTpm(const Config& config);

// Where the daemon's own swtpm keeps its state and serves (TCTI "swtpm:path=<socket>"; the TCTI
// adds ".ctrl" for the control channel). Throws when a socket path is too long for AF_UNIX.
struct SwtpmPaths {
  std::filesystem::path state, socket, ctrl, pid_file;
};
SwtpmPaths SwtpmPathsFor(const Config& config);
// True when `pid` (from the pid file) is a swtpm of this user on paths.state and the listener of
// both sockets (SO_PEERCRED), which are sockets of this user with mode 0600. Else false, why says.
bool IsOurSwtpm(pid_t pid, const SwtpmPaths& paths, std::string* why);

// Under systemd libvirtd is started as libvirtd.service. Returns a sentence describing what was
// found or started; throws when libvirt cannot be reached.
std::string EnsureLibvirtd(const Config& config);

}  // namespace sovguard::daemon
