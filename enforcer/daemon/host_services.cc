#include "enforcer/daemon/host_services.h"

#include <fcntl.h>
#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "base/unique_fd.h"
#include "enforcer/system/process.h"

namespace sovguard::daemon {
namespace {

using base::UniqueFd;
using enforcer::RunCommand;
using enforcer::SystemdIsInit;
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

// A directory only this user may enter: created when missing, refused when it is a symlink or
// belongs to someone else (then it is not ours to put a TPM's state or sockets in).
void PrivateDirectory(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid())
    throw std::runtime_error(dir.string() + " is not a directory of uid " +
                             std::to_string(::geteuid()) + ": refusing to use it for the swtpm");
  std::filesystem::permissions(dir, std::filesystem::perms::owner_all,
                               std::filesystem::perm_options::replace);
}

pid_t PidFromFile(const std::filesystem::path& file) {
  std::ifstream in(file);
  long pid = 0;
  return (in >> pid) && pid > 0 && pid <= INT_MAX ? static_cast<pid_t>(pid) : 0;
}

// True when `pid` is a swtpm of this user running on the TPM state `state`.
bool RunsSwtpmOn(pid_t pid, const std::filesystem::path& state) {
  const std::filesystem::path proc = "/proc/" + std::to_string(pid);
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink(proc / "exe", ec);
  struct stat st {};
  if (ec || exe.filename() != "swtpm" || ::stat(proc.c_str(), &st) != 0 || st.st_uid != ::geteuid())
    return false;
  std::ifstream in(proc / "cmdline", std::ios::binary);
  std::string arg;
  while (std::getline(in, arg, '\0'))
    if (arg == "dir=" + state.string()) return true;
  return false;
}

// The unit the daemon's swtpm runs as under systemd: one per TPM state directory, e.g.
// sovguard-swtpm@var-lib-sovguard-swtpm.service.
std::string SwtpmUnit(const std::filesystem::path& state) {
  const auto escaped = RunCommand({"systemd-escape", "--path", state.string()});
  std::string name = escaped.output;
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  if (escaped.exit_code != 0 || name.empty())
    throw std::runtime_error("systemd-escape --path " + state.string() +
                             " failed: " + escaped.output);
  return "sovguard-swtpm@" + name + ".service";
}

// The cgroup (v2) `pid` runs in, e.g. /system.slice/sovguardd.service; "" when unknown.
std::string CgroupOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cgroup");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  return "";
}

// SIGTERM, then SIGKILL; bounded.
void StopProcess(pid_t pid) {
  ::kill(pid, SIGTERM);
  if (WaitUntil([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(5))) return;
  ::kill(pid, SIGKILL);
  WaitUntil([&] { return ::kill(pid, 0) != 0; }, std::chrono::seconds(5));
}

}  // namespace

SwtpmPaths SwtpmPathsFor(const Config& config) {
  SwtpmPaths p{.state = config.state_dir / "swtpm",
               .socket = config.runtime_dir / "swtpm" / "tpm.sock",
               .ctrl = {},
               .pid_file = config.state_dir / "swtpm" / "swtpm.pid"};
  p.ctrl = p.socket.string() + ".ctrl";  // tpm2-tss's swtpm TCTI derives it from path=
  if (p.ctrl.string().size() >= sizeof(sockaddr_un{}.sun_path)) {
    throw std::runtime_error("swtpm control socket path " + p.ctrl.string() + " is longer than " +
                             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) +
                             " bytes (AF_UNIX): choose a shorter runtime_dir");
  }
  return p;
}

bool IsOurSwtpm(pid_t pid, const SwtpmPaths& paths, std::string* why) {
  const auto fail = [&](const std::string& reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (!RunsSwtpmOn(pid, paths.state))
    return fail("pid " + std::to_string(pid) + " is not a swtpm on " + paths.state.string());
  for (const auto& sock : {paths.socket, paths.ctrl}) {
    struct stat st {};
    if (::lstat(sock.c_str(), &st) != 0) return fail(sock.string() + ": " + std::strerror(errno));
    if (!S_ISSOCK(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 07777) != 0600)
      return fail(sock.string() + " is not a socket of uid " + std::to_string(::geteuid()) +
                  " with mode 0600");
    // The listener's credentials (taken at listen()): the process that owns the socket.
    const UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, sock.c_str(), sizeof addr.sun_path - 1);
    ucred cred{};
    socklen_t len = sizeof cred;
    if (!fd || ::connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockopt(fd.Get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0)
      return fail("connect " + sock.string() + ": " + std::strerror(errno));
    if (cred.pid != pid || cred.uid != ::geteuid())
      return fail(sock.string() + " is served by pid " + std::to_string(cred.pid) + ", not " +
                  std::to_string(pid));
  }
  return true;
}

TpmChoice EnsureTpm(const Config& config) {
  if (config.tpm != "auto") {
    const bool software = config.tpm.rfind("swtpm:", 0) == 0;
    return {.tcti = config.tpm,
            .software = software,
            .description =
                "configured TPM " + config.tpm +
                (software ? " (SOFTWARE TPM set up by the operator: who can reach its sockets is "
                            "the operator's responsibility)"
                          : "")};
  }
  if (std::filesystem::exists("/dev/tpmrm0")) {
    return {.tcti = "device:/dev/tpmrm0",
            .software = false,
            .description = "hardware TPM via the kernel resource manager /dev/tpmrm0"};
  }
  if (!config.start_swtpm) {
    throw std::runtime_error("no /dev/tpmrm0 and start_swtpm = false: no TPM to measure into");
  }
  const SwtpmPaths paths = SwtpmPathsFor(config);
  PrivateDirectory(paths.state);
  PrivateDirectory(paths.socket.parent_path());
  // One daemon at a time decides whether the running swtpm is ours or starts one.
  const UniqueFd lock(::open((paths.state / "swtpm.lock").c_str(),
                             O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!lock || ::flock(lock.Get(), LOCK_EX) != 0)
    throw std::runtime_error("lock " + (paths.state / "swtpm.lock").string() + ": " +
                             std::strerror(errno));
  // Under systemd the swtpm is a unit of its own (outside sovguardd.service's cgroup); else a
  // daemonised child, as started from a shell.
  const std::string unit = SystemdIsInit() ? SwtpmUnit(paths.state) : "";
  if (!std::filesystem::exists(paths.state / "tpm2-00.permall")) {
    std::vector<std::string> setup = {"swtpm_setup",      "--tpm2",
                                      "--tpmstate",       paths.state.string(),
                                      "--create-ek-cert", "--create-platform-cert",
                                      "--lock-nvram",     "--pcr-banks",
                                      "sha256",           "--not-overwrite"};
    if (!unit.empty()) {
      // Under systemd a transient unit too, outside the daemon's sandbox: swtpm-tools' local CA
      // (/var/lib/swtpm-localca, tss's, mode 0750) signs the EK certificate, and the hardened
      // unit (no CAP_DAC_OVERRIDE, ProtectSystem=strict) may not write there.
      setup.insert(setup.begin(), {"systemd-run", "--quiet", "--collect", "--wait", "--pipe",
                                   "--property=UMask=0077", "--"});
    }
    RunOrThrow(setup);
  }
  const pid_t previous = PidFromFile(paths.pid_file);
  std::string why, not_ours;
  std::string how;
  const bool ours = previous != 0 && IsOurSwtpm(previous, paths, &not_ours);
  const std::string cgroup = ours ? CgroupOf(previous) : "";
  if (ours && !unit.empty() && !cgroup.ends_with("/" + unit))
    not_ours = "pid " + std::to_string(previous) + " runs in cgroup " + cgroup + ", not as " + unit;
  if (ours && not_ours.empty()) {
    how = "started by a previous sovguardd, pid " + std::to_string(previous) + ", verified" +
          (unit.empty() ? "" : ", unit " + unit);
  } else {
    // Never adopted: a swtpm of this state that is not on our sockets (e.g. an older daemon's on
    // TCP) or, under systemd, not in its unit is stopped, then ours is started on fresh sockets.
    if (!unit.empty()) RunCommand({"systemctl", "stop", unit});  // exit 5 when not loaded
    if (previous != 0 && RunsSwtpmOn(previous, paths.state)) StopProcess(previous);
    for (const auto& sock : {paths.socket, paths.ctrl}) {
      if (::unlink(sock.c_str()) != 0 && errno != ENOENT)
        throw std::runtime_error("remove " + sock.string() + ": " + std::strerror(errno));
    }
    std::filesystem::remove(paths.pid_file);
    std::vector<std::string> argv = {"swtpm",
                                     "socket",
                                     "--tpm2",
                                     "--tpmstate",
                                     "dir=" + paths.state.string(),
                                     "--server",
                                     "type=unixio,path=" + paths.socket.string() + ",mode=0600",
                                     "--ctrl",
                                     "type=unixio,path=" + paths.ctrl.string() + ",mode=0600",
                                     "--flags",
                                     "not-need-init,startup-clear",
                                     "--pid",
                                     "file=" + paths.pid_file.string()};
    if (unit.empty()) {
      argv.emplace_back("--daemon");
      RunOrThrow(argv);
    } else {
      // Its own transient unit, never a process of sovguardd.service (whose stop would kill it
      // and with it the TPM's PCRs); confined to Unix sockets and its two directories. With
      // this daemon's gid (the unit's Group=): reading its /proc/<pid>/exe (IsOurSwtpm) needs
      // matching credentials, the unit has no CAP_SYS_PTRACE.
      std::vector<std::string> run = {
          "systemd-run",
          "--quiet",
          "--collect",
          "--service-type=simple",
          "--unit=" + unit,
          "--gid=" + std::to_string(::getegid()),
          "--description=sovguard software TPM (" + paths.state.string() + ")",
          "--property=UMask=0077",
          "--property=NoNewPrivileges=yes",
          "--property=CapabilityBoundingSet=",
          "--property=ProtectSystem=strict",
          "--property=ReadWritePaths=" + paths.state.string() + " " +
              paths.socket.parent_path().string(),
          "--property=ProtectHome=yes",
          "--property=PrivateTmp=yes",
          "--property=PrivateNetwork=yes",
          "--property=RestrictAddressFamilies=AF_UNIX",
          "--"};
      run.insert(run.end(), argv.begin(), argv.end());
      RunOrThrow(run);
    }
    pid_t started = 0;
    if (!WaitUntil(
            [&] {
              started = PidFromFile(paths.pid_file);
              return started != 0 && IsOurSwtpm(started, paths, &why);
            },
            std::chrono::seconds(10))) {
      throw std::runtime_error("swtpm started but does not answer as ours on " +
                               paths.socket.string() + ": " + why +
                               (unit.empty() ? "" : " (journalctl -u " + unit + ")"));
    }
    how = "started now, pid " + std::to_string(started) + (unit.empty() ? "" : " as " + unit) +
          (previous != 0 ? " (not using the previous one: " + not_ours + ")" : "");
  }
  return {.tcti = "swtpm:path=" + paths.socket.string(),
          .software = true,
          .description = "SOFTWARE TPM (swtpm, state " + paths.state.string() + ", socket " +
                         paths.socket.string() + ", " + how +
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
  if (SystemdIsInit()) {
    // Its own unit (Debian's libvirtd.service, which pulls in virtlogd.socket): started as a child
    // here it would live in sovguardd.service's cgroup and die, with guests left unmanaged, on
    // `systemctl stop sovguardd` (KillMode=mixed) or a restart after a crash.
    RunOrThrow({"systemctl", "start", "libvirtd.service"});
    if (!WaitUntil([&] { return LibvirtAnswers(config.libvirt_uri); }, std::chrono::seconds(30)))
      throw std::runtime_error("started libvirtd.service but " + config.libvirt_uri +
                               " does not answer");
    return "started libvirtd.service (systemd); libvirt answers at " + config.libvirt_uri;
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
