// What the daemon needs from the host and starts itself on the newcomer path: libvirtd (with
// virtlogd) when none answers, and a software TPM when the machine has no hardware TPM.
#pragma once

#include <string>

#include "enforcer/daemon/config.h"

namespace sovguard::daemon {

struct TpmChoice {
  std::string tcti;         // for Tss2_TctiLdr_Initialize, e.g. "device:/dev/tpmrm0"
  bool software = false;    // swtpm: no hardware root of trust
  std::string description;  // what an operator reads in the log and status
};

// Hardware TPM at /dev/tpmrm0 if present; else (when allowed) a swtpm under state_dir/swtpm,
// provisioned once with an EK certificate, listening on 127.0.0.1 only. Throws when neither.
TpmChoice EnsureTpm(const Config& config);

// Returns a sentence describing what was found or started; throws when libvirt cannot be reached.
std::string EnsureLibvirtd(const Config& config);

}  // namespace sovguard::daemon
