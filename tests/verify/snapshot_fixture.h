// Enforcement snapshots shaped like sovguardd's (enforcer/daemon/node.cc Snapshot()) for tests
// and the verifier bench: guests with taps covered by sg_net, storage programs at the machine
// cgroup, a MechanismState for every enforcement path.
#pragma once

#include <algorithm>
#include <string>
#include <string_view>

#include "attestation/evidence/evidence.pb.h"
#include "attestation/measure/platform.h"
#include "attestation/verify/verifier.h"

namespace sovguard::attestation::test_support {

// The sg_net tag the tests measure into the CEL (MeasureProgramAttached) and report.
inline constexpr std::string_view kNetTag = "5a1c0ffee0ddba11";
inline constexpr std::string_view kMachineCgroup = "/sys/fs/cgroup/unified/machine";

inline std::string GuestUuid(const std::string& guest) {
  return "00000000-0000-4000-8000-" + std::string(12 - std::min<size_t>(12, guest.size()), '0') +
         guest.substr(0, 12);
}

// A guest with one tap (sg_net attached, kNetTag) and a cgroup under the machine cgroup.
inline void AddGuest(v1::EnforcementSnapshot& s, const std::string& name, const std::string& tap) {
  auto* g = s.add_guests();
  g->set_name(name);
  g->set_uuid(GuestUuid(name));
  g->add_taps(tap);
  g->set_cgroup(std::string(kMachineCgroup) + "/qemu-1-" + name + ".libvirt-qemu");
  g->add_datasets()->set_dataset("patients-eu");
  auto* p = s.add_programs();
  p->set_name("sg_net");
  p->set_tag(std::string(kNetTag));
  p->set_prog_id(42);
  p->set_attach_type("tc/ingress");
  p->set_attach_point(tap);
}

// Every enforcement path. `strongest` false: storage-open runs on the tracepoint fallback (as on
// a kernel without BPF LSM), reported as downgraded. Storage programs at the machine cgroup.
inline void AddMechanisms(v1::EnforcementSnapshot& s, bool strongest = false) {
  for (const std::string_view path : verify::kEnforcementPaths) {
    auto* m = s.add_mechanisms();
    m->set_path(std::string(path));
    std::string active = path.starts_with("guest-network") ? "tc"
                         : path == "storage-block-devices" ? "cgroup/dev"
                         : path == "storage-network"       ? "cgroup/connect4+connect6"
                         : path == "storage-open"          ? "bpf-lsm:file_open"
                                                           : "tracepoint:sys_enter_pread64";
    m->set_strongest(active);
    if (path == "storage-open" && !strongest) {
      active = "tracepoint:sys_exit_openat+SIGKILL";
      m->set_downgraded(true);
      m->set_reason("bpf-lsm:file_open: BPF_PROG_LOAD: EPERM (no BPF LSM in this kernel)");
    }
    m->set_active(active);
    if (path.starts_with("storage-")) {
      auto* p = s.add_programs();
      p->set_name(std::string(path));
      p->set_attach_type(active);
      p->set_attach_point(std::string(kMachineCgroup));
    }
  }
}

// What sovguardd measures for the mechanisms AddMechanisms reports (strongest false): the
// storage-open downgrade, as Node::MeasureDowngrades writes it.
inline void MeasureMechanisms(measure::MeasurementLog& log) {
  measure::MeasureMechanismDowngraded(
      log, "storage-open", "bpf-lsm:file_open", "tracepoint:sys_exit_openat+SIGKILL",
      "bpf-lsm:file_open: BPF_PROG_LOAD: EPERM (no BPF LSM in this kernel)");
}

}  // namespace sovguard::attestation::test_support
