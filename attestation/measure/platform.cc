#include "attestation/measure/platform.h"

#include <sys/utsname.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace sovguard::attestation::measure {
namespace {

cel::Record MeasurePathOrAbsence(MeasurementLog& log, cel::EventKind kind,
                                 const std::filesystem::path& path) {
  try {
    return log.MeasureFile(kind, path);
  } catch (const AttestationError& e) {
    return log.Measure(kind, path.string(), Sha256(std::string_view()),
                       std::string("absent: ") + e.what());
  }
}

// Enforcement events digest their canonical JSON detail: the PCR binds every field.
cel::Record MeasureJson(MeasurementLog& log, cel::EventKind kind, const std::string& name,
                        const nlohmann::json& detail) {
  const std::string d = detail.dump();  // nlohmann sorts object keys: canonical enough to re-hash
  return log.Measure(kind, name, Sha256(d), d);
}

}  // namespace

std::vector<cel::Record> MeasurePlatform(MeasurementLog& log, const PlatformPaths& p) {
  std::vector<cel::Record> out;
  auto self = p.self;
  std::error_code ec;
  if (auto resolved = std::filesystem::read_symlink(self, ec); !ec) self = resolved;
  out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kSelfBinary, self));
  out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kQemuBinary, p.qemu));
  out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kLibvirtdBinary, p.libvirtd));
  std::vector<std::filesystem::path> drivers;
  for (const auto& e : std::filesystem::directory_iterator(p.libvirt_drivers, ec))
    if (e.path().extension() == ".so") drivers.push_back(e.path());
  std::sort(drivers.begin(), drivers.end());  // same order on every node
  if (ec)
    out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kLibvirtDriver, p.libvirt_drivers));
  for (const auto& d : drivers)
    out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kLibvirtDriver, d));
  auto kernel = p.kernel_image;
  if (kernel.empty()) {
    utsname u{};
    if (::uname(&u) == 0)
      kernel = std::filesystem::path("/boot") / (std::string("vmlinuz-") + u.release);
  }
  out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kKernelImage, kernel));
  Bytes cmdline;
  if (ReadFileIfExists(p.kernel_cmdline, cmdline)) {
    std::string text(cmdline.begin(), cmdline.end());
    while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
    out.push_back(
        log.Measure(cel::EventKind::kKernelCmdline, p.kernel_cmdline.string(), Sha256(text), text));
  } else {
    out.push_back(MeasurePathOrAbsence(log, cel::EventKind::kKernelCmdline, p.kernel_cmdline));
  }
  return out;
}

cel::Record MeasureBpfObject(MeasurementLog& log, const std::string& name,
                             std::span<const uint8_t> object_bytes) {
  return log.MeasureBytes(cel::EventKind::kBpfObject, name, object_bytes);
}

cel::Record MeasurePolicyApplied(MeasurementLog& log, const std::string& bundle_id,
                                 std::span<const uint8_t> bundle) {
  // The object digest is the bundle's own SHA-256, the same value the snapshot reports.
  return log.Measure(cel::EventKind::kPolicyApplied, bundle_id, Sha256(bundle), "policy applied");
}

cel::Record MeasureMechanismDowngraded(MeasurementLog& log, const std::string& path,
                                       const std::string& from, const std::string& to,
                                       const std::string& reason) {
  return MeasureJson(log, cel::EventKind::kMechanismDowngraded, path,
                     {{"path", path}, {"from", from}, {"to", to}, {"reason", reason}});
}

cel::Record MeasureProgramAttached(MeasurementLog& log, const std::string& program,
                                   const std::string& tag_hex, const std::string& attach_type,
                                   const std::string& attach_point) {
  return MeasureJson(log, cel::EventKind::kProgramAttached, program,
                     {{"program", program},
                      {"tag", tag_hex},
                      {"attach_type", attach_type},
                      {"attach_point", attach_point}});
}

cel::Record MeasureGuest(MeasurementLog& log, const std::string& uuid, bool covered) {
  const std::string detail = covered ? "covered" : "released";
  return log.Measure(cel::EventKind::kEnforcementState, std::string(cel::kGuestEventPrefix) + uuid,
                     Sha256(detail), detail);
}

}  // namespace sovguard::attestation::measure
