#include "tests/harness/guest.h"

#include <filesystem>
#include <stdexcept>
#include <utility>

#include "tests/harness/libvirtd.h"
#include "tests/harness/process.h"

namespace sovguard::test {
namespace {

void ReplaceAll(std::string& s, const std::string& from, const std::string& to) {
  for (size_t pos = s.find(from); pos != std::string::npos; pos = s.find(from, pos + to.size())) {
    s.replace(pos, from.size(), to);
  }
}

}  // namespace

std::string GuestKernelPath() {
  return SOVGUARD_GUEST_KERNEL;
}
std::string GuestInitramfsPath() {
  return SOVGUARD_GUEST_INITRAMFS;
}

void RequireGuestImage() {
  if (GuestKernelPath().empty() || !std::filesystem::exists(GuestKernelPath())) {
    throw std::runtime_error(
        "no guest kernel (/boot/vmlinuz-*): install linux-image-amd64 and "
        "re-run cmake");
  }
  if (!std::filesystem::exists(GuestInitramfsPath())) {
    throw std::runtime_error("no " + GuestInitramfsPath() + ": build target sovguard_guest_image");
  }
}

GuestSpec MakeGuestSpec(std::string name, std::string tap, std::string metadata) {
  GuestSpec spec;
  spec.name = std::move(name);
  spec.tap = std::move(tap);
  spec.metadata = std::move(metadata);
  return spec;
}

std::string GuestLabel(const std::string& body) {
  return "<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\">" + body +
         "</sovguard:guest>";
}

std::string FileDisk(const std::string& source, bool readonly, const std::string& target) {
  return "<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='" + source +
         "'/><target dev='" + target + "' bus='virtio'/>" + (readonly ? "<readonly/>" : "") +
         "</disk>";
}

std::string ConsoleLogPath(const GuestSpec& spec) {
  return spec.console_log.empty() ? "/run/sovguard-test/" + spec.name + ".console"
                                  : spec.console_log;
}

std::string DomainXml(const GuestSpec& spec) {
  if (spec.name.rfind(LibvirtDaemons::kTestDomainPrefix, 0) != 0) {
    throw std::invalid_argument("test domain name must start with sgt-: " + spec.name);
  }
  if (spec.tap.empty() || spec.tap.size() > 15) {
    throw std::invalid_argument("tap name must have 1..15 characters: " + spec.tap);
  }
  std::string xml = ReadFile(std::string(SOVGUARD_HARNESS_DIR) + "/guest-domain.xml.in");
  const std::string cmdline = "console=ttyS0 quiet panic=-1 sg.ip=" + spec.guest_address +
                              " sg.gw=" + spec.gateway + " sg.allowed=" + spec.allowed +
                              " sg.forbidden=" + spec.forbidden + " sg.interval=" + spec.interval;
  ReplaceAll(xml, "@NAME@", spec.name);
  ReplaceAll(xml, "@METADATA@", spec.metadata);
  ReplaceAll(xml, "@RESOURCE@",
             spec.partition.empty()
                 ? std::string()
                 : "<resource><partition>" + spec.partition + "</partition></resource>");
  ReplaceAll(xml, "@KERNEL@", GuestKernelPath());
  ReplaceAll(xml, "@INITRD@", GuestInitramfsPath());
  ReplaceAll(xml, "@CMDLINE@", cmdline);
  ReplaceAll(xml, "@TAP@", spec.tap);
  ReplaceAll(xml, "@MAC@", spec.mac);
  ReplaceAll(xml, "@CONSOLE@", ConsoleLogPath(spec));
  return xml;
}

bool WaitForConsole(const std::string& console_log, const std::string& marker,
                    std::chrono::milliseconds timeout) {
  return PollUntil(
      timeout,
      [&] {
        try {
          return ReadFile(console_log).find(marker) != std::string::npos;
        } catch (const std::exception&) {
          return false;  // not created yet
        }
      },
      std::chrono::milliseconds(100));
}

}  // namespace sovguard::test

namespace sovguard::test {

TestGuest::TestGuest(GuestSpec spec) : spec_(std::move(spec)) {
  RequireGuestImage();
  std::filesystem::create_directories("/run/sovguard-test");
  std::filesystem::remove(ConsoleLogPath(spec_));
  // A leftover of a crashed run with the same name would make define fail or reuse old state.
  Run({"virsh", "-c", LibvirtDaemons::kUri, "destroy", spec_.name});
  Run({"virsh", "-c", LibvirtDaemons::kUri, "undefine", spec_.name});
  const std::string xml_path = "/run/sovguard-test/" + spec_.name + ".xml";
  WriteFile(xml_path, DomainXml(spec_));
  RunOrThrow({"virsh", "-c", LibvirtDaemons::kUri, "define", xml_path});
}

TestGuest::~TestGuest() {
  try {
    Run({"virsh", "-c", LibvirtDaemons::kUri, "destroy", spec_.name});
    Run({"virsh", "-c", LibvirtDaemons::kUri, "undefine", spec_.name});
    std::filesystem::remove("/run/sovguard-test/" + spec_.name + ".xml");
  } catch (...) {
  }
}

void TestGuest::Start() {
  RunOrThrow({"virsh", "-c", LibvirtDaemons::kUri, "start", spec_.name});
}

CommandResultLite TestGuest::TryStart() {
  CommandResult r = Run({"virsh", "-c", LibvirtDaemons::kUri, "start", spec_.name});
  return {r.exit_code, r.err};
}

void TestGuest::Destroy() {
  RunOrThrow({"virsh", "-c", LibvirtDaemons::kUri, "destroy", spec_.name});
}

bool TestGuest::Running() const {
  CommandResult r = Run({"virsh", "-c", LibvirtDaemons::kUri, "domstate", spec_.name});
  return r.exit_code == 0 && r.out.find("running") != std::string::npos;
}

bool TestGuest::WaitReady(std::chrono::milliseconds timeout) const {
  return WaitForConsole(ConsoleLog(), "SOVGUARD: ready", timeout);
}

std::string TestGuest::Virsh(const std::vector<std::string>& args) const {
  std::vector<std::string> argv{"virsh", "-c", LibvirtDaemons::kUri};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunOrThrow(argv);
}

}  // namespace sovguard::test
