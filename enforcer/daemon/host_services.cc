#include "enforcer/daemon/host_services.h"

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "enforcer/system/process.h"

namespace sovguard::daemon {
namespace {

using enforcer::RunCommand;
using enforcer::WaitUntil;

bool LibvirtAnswers(const std::string& uri) {
  virConnectPtr conn = virConnectOpen(uri.c_str());
  if (conn == nullptr) return false;
  virConnectClose(conn);
  return true;
}

void RunOrThrow(const std::vector<std::string>& argv) {
  const auto r = RunCommand(argv);
  if (r.exit_code != 0) {
    throw std::runtime_error(argv[0] + " exited with " + std::to_string(r.exit_code) + ": " +
                             r.output);
  }
}

}  // namespace

TpmChoice EnsureTpm(const Config& config) {
  if (config.tpm != "auto") {
    return {.tcti = config.tpm,
            .software = config.tpm.rfind("swtpm:", 0) == 0,
            .description = "configured TPM " + config.tpm};
  }
  if (std::filesystem::exists("/dev/tpmrm0")) {
    return {.tcti = "device:/dev/tpmrm0",
            .software = false,
            .description = "hardware TPM via the kernel resource manager /dev/tpmrm0"};
  }
  if (!config.start_swtpm) {
    throw std::runtime_error("no /dev/tpmrm0 and start_swtpm = false: no TPM to measure into");
  }
  const auto dir = config.state_dir / "swtpm";
  std::filesystem::create_directories(dir);
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace);
  if (!std::filesystem::exists(dir / "tpm2-00.permall")) {
    RunOrThrow({"swtpm_setup", "--tpm2", "--tpmstate", dir.string(), "--create-ek-cert",
                "--create-platform-cert", "--lock-nvram", "--pcr-banks", "sha256",
                "--not-overwrite"});
  }
  if (!enforcer::TcpPortAnswers("127.0.0.1", config.swtpm_port)) {
    RunOrThrow({"swtpm", "socket", "--tpm2", "--tpmstate", "dir=" + dir.string(), "--server",
                "type=tcp,port=" + std::to_string(config.swtpm_port) + ",bindaddr=127.0.0.1",
                "--ctrl",
                "type=tcp,port=" + std::to_string(config.swtpm_port + 1) + ",bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear", "--daemon", "--pid",
                "file=" + (dir / "swtpm.pid").string()});
    if (!WaitUntil([&] { return enforcer::TcpPortAnswers("127.0.0.1", config.swtpm_port); },
                   std::chrono::seconds(10))) {
      throw std::runtime_error("swtpm started but does not answer on 127.0.0.1:" +
                               std::to_string(config.swtpm_port));
    }
  }
  return {.tcti = "swtpm:host=127.0.0.1,port=" + std::to_string(config.swtpm_port),
          .software = true,
          .description = "SOFTWARE TPM (swtpm, state " + dir.string() +
                         "): no hardware root of trust; quotes prove consistency, not provenance"};
}

std::string EnsureLibvirtd(const Config& config) {
  // A failed probe connection prints a libvirt error to stderr by default: keep the log clean.
  virSetErrorFunc(nullptr, [](void*, virErrorPtr) {});
  if (LibvirtAnswers(config.libvirt_uri)) return "libvirt answers at " + config.libvirt_uri;
  if (!config.start_libvirtd) {
    throw std::runtime_error("libvirt does not answer at " + config.libvirt_uri +
                             " and start_libvirtd = false");
  }
  // virtlogd may already run without libvirtd: its "already running" failure is not ours to fix.
  const auto virtlogd = RunCommand({"virtlogd", "-d"});
  RunOrThrow({"libvirtd", "-d"});
  if (!WaitUntil([&] { return LibvirtAnswers(config.libvirt_uri); }, std::chrono::seconds(30))) {
    throw std::runtime_error("started libvirtd but " + config.libvirt_uri + " does not answer");
  }
  return std::string(virtlogd.exit_code == 0 ? "started virtlogd and libvirtd"
                                             : "started libvirtd (virtlogd already running)") +
         "; libvirt answers at " + config.libvirt_uri;
}

}  // namespace sovguard::daemon
