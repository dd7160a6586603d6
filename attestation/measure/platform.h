// What sovguardd measures, and how each kind of thing is named and digested, so every node
// writes comparable logs. The daemon calls MeasurePlatform() once at start-up (after the log is
// opened), MeasureBpfObject() per object it loads, and the enforcement-state helpers whenever
// enforcement changes.
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <vector>

#include "attestation/measure/measurement_log.h"

namespace sovguard::attestation::measure {

struct PlatformPaths {
  std::filesystem::path self = "/proc/self/exe";
  std::filesystem::path qemu = "/usr/bin/qemu-system-x86_64";
  std::filesystem::path libvirtd = "/usr/sbin/libvirtd";
  // Every *.so here is measured (libvirt's hypervisor/storage/network drivers).
  std::filesystem::path libvirt_drivers = "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver";
  // Empty = /boot/vmlinuz-$(uname -r).
  std::filesystem::path kernel_image;
  std::filesystem::path kernel_cmdline = "/proc/cmdline";
};

// Measures sovguardd's binary, QEMU, libvirtd and its drivers, the running kernel image and
// command line. A missing or unreadable file is measured as absent (object digest =
// SHA-256 of "", detail "absent: <reason>") rather than skipped: its absence is a fact about the
// host a verifier must see.
std::vector<cel::Record> MeasurePlatform(MeasurementLog& log, const PlatformPaths& paths = {});

cel::Record MeasureBpfObject(MeasurementLog& log, const std::string& name,
                             std::span<const uint8_t> object_bytes);
// `bundle` = the bytes of the policy bundle as applied; detail carries the bundle id.
cel::Record MeasurePolicyApplied(MeasurementLog& log, const std::string& bundle_id,
                                 std::span<const uint8_t> bundle);
// A weaker mechanism than the strongest supported one became active on `path`.
cel::Record MeasureMechanismDowngraded(MeasurementLog& log, const std::string& path,
                                       const std::string& from, const std::string& to,
                                       const std::string& reason);
// A BPF program was (re-)attached. `tag_hex` is the kernel program tag.
cel::Record MeasureProgramAttached(MeasurementLog& log, const std::string& program,
                                   const std::string& tag_hex, const std::string& attach_type,
                                   const std::string& attach_point);

// Guest lifecycle (cel::kGuestEventPrefix): "covered" when the node starts enforcing for the
// guest, "released" when it goes away; cel::MeasuredGuests replays them.
cel::Record MeasureGuest(MeasurementLog& log, const std::string& uuid, bool covered);

}  // namespace sovguard::attestation::measure
