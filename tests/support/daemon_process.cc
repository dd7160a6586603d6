#include "tests/support/daemon_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "base/file.h"
#include "tests/harness/libvirtd.h"

extern char** environ;

namespace sovguard::test {

namespace fs = std::filesystem;

std::string ReadTextFile(const fs::path& p) {
  return base::TryReadFileText(p, nullptr).value_or("");
}

pid_t LivePid(const fs::path& pidfile) {
  std::ifstream in(pidfile);
  pid_t pid = 0;
  return (in >> pid) && pid > 0 && ::kill(pid, 0) == 0 ? pid : 0;
}

void StopPid(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 1000 && ::kill(pid, 0) == 0; ++i) {
    if (i == 500) ::kill(pid, SIGKILL);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling for exit, bounded
  }
}

namespace {
// What a libvirtd (and its virtlogd) writes on the host the first time it runs there: the list
// .ci/start-node.sh --undo removes too. Unreadable: throws (the test would leave the host changed).
std::vector<fs::path> LibvirtStatePaths() {
  std::vector<fs::path> paths;
  std::istringstream lines(
      base::ReadFileText(fs::path(SOVGUARD_SOURCE_DIR) / ".ci/libvirt-first-start.paths"));
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with('/')) paths.emplace_back(line);
  if (paths.empty()) throw std::runtime_error(".ci/libvirt-first-start.paths names no path");
  return paths;
}
}  // namespace

ServicesAsFound::ServicesAsFound()
    : libvirtd_(LivePid("/run/libvirtd.pid")),
      virtlogd_(LivePid("/run/virtlogd.pid")),
      absent_machine_cgroups_(AbsentMachineCgroups()) {
  for (auto& path : LibvirtStatePaths())
    if (!fs::exists(path)) absent_libvirt_state_.push_back(std::move(path));
}

ServicesAsFound::~ServicesAsFound() {
  bool stopped = false;
  if (const pid_t now = LivePid("/run/libvirtd.pid"); now != libvirtd_) {
    StopPid(now);
    stopped = true;
  }
  if (const pid_t now = LivePid("/run/virtlogd.pid"); now != virtlogd_) {
    StopPid(now);
    stopped = true;
  }
  std::error_code ec;
  if (stopped)
    for (const auto& path : absent_libvirt_state_) fs::remove_all(path, ec);
  for (const auto& cgroup : absent_machine_cgroups_) {
    try {
      RemoveCgroupTree(cgroup);
    } catch (const std::exception& e) {  // a destructor: said, and the host check fails the run
      std::fprintf(stderr, "ServicesAsFound: %s\n", e.what());
    }
  }
}

int RunShell(const std::string& command, std::string* out) {
  FILE* p = ::popen(command.c_str(), "r");
  if (p == nullptr) return -1;
  std::string text;
  char buf[4096];
  size_t n = 0;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) text.append(buf, n);
  const int status = ::pclose(p);
  if (out != nullptr) *out = text;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string DaemonProcess::Binary() {
  return std::string(SOVGUARD_BINARY_DIR) + "/enforcer/daemon/sovguardd";
}
std::string DaemonProcess::Ctl() {
  return std::string(SOVGUARD_BINARY_DIR) + "/enforcer/ctl/sovguardctl";
}

DaemonProcess::DaemonProcess(fs::path dir, std::vector<std::string> extra_args)
    : dir_(std::move(dir)) {
  fs::create_directories(dir_);
  // Its own state and runtime directories: its own software TPM (sockets in run/swtpm), never
  // another test daemon's.
  argv_ = {Binary(), "--config", "/dev/null", "--state-dir", (dir_ / "state").string(),
           "--runtime-dir", (dir_ / "run").string(),
           // Its own pinned datapath state, adopted only by its own restarts.
           "--set", "bpf_pin_dir=" + PinDir().string(),
           // Any free port: status.json names the one bound.
           "--set", "metrics_listen=127.0.0.1:0"};
  argv_.insert(argv_.end(), extra_args.begin(), extra_args.end());
  Spawn();
}

void DaemonProcess::Spawn() {
  std::error_code ec;
  fs::remove(dir_ / "run/status.json", ec);
  std::vector<std::string> argv = argv_;
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  const std::string log = (dir_ / "daemon.log").string();
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  // Appends: a restarted daemon's log follows its predecessor's.
  posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                   0600);
  const int rc = ::posix_spawn(&pid_, argv[0].c_str(), &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw std::runtime_error("cannot spawn " + argv[0]);
}

int DaemonProcess::RunOnce(const std::vector<std::string>& extra, std::string* out) const {
  std::string cmd;
  auto quoted = [](const std::string& a) {
    std::string q = "'";
    for (const char c : a) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return q + "'";
  };
  for (const auto& a : argv_) cmd += quoted(a) + " ";
  for (const auto& a : extra) cmd += quoted(a) + " ";
  return RunShell(cmd + "2>&1", out);
}

void DaemonProcess::Kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

void DaemonProcess::Restart() {
  if (pid_ > 0) throw std::logic_error("DaemonProcess::Restart while the daemon runs");
  Spawn();
}

fs::path DaemonProcess::PinDir() const {
  return fs::path("/sys/fs/bpf/sovguard-test") /
         std::to_string(std::hash<std::string>{}(dir_.string()));
}

DaemonProcess::~DaemonProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  std::error_code ec;
  fs::remove_all(PinDir(), ec);            // unpins; the kernel frees what no filter uses any more
  fs::remove(PinDir().parent_path(), ec);  // the shared parent too, once the last daemon is gone
  StopPid(LivePid(dir_ / "state/swtpm/swtpm.pid"));
}

bool DaemonProcess::WaitReady(std::chrono::seconds timeout, std::string* why) {
  const fs::path status = dir_ / "run/status.json";
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!fs::exists(status)) {
    int wstatus = 0;
    if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      pid_ = -1;
      *why = "daemon exited early:\n" + Log();
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      *why = "daemon not ready in time:\n" + Log();
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // polling a file, bounded
  }
  return true;
}

nlohmann::json DaemonProcess::Status() const {
  return nlohmann::json::parse(ReadTextFile(dir_ / "run/status.json"));
}

int DaemonProcess::Terminate() {
  if (pid_ <= 0) return -1;
  ::kill(pid_, SIGTERM);
  int wstatus = 0;
  ::waitpid(pid_, &wstatus, 0);
  pid_ = -1;
  return WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1;
}

}  // namespace sovguard::test
