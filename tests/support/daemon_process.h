// Runs the built sovguardd as a child for end-to-end tests: its own state and runtime dirs, stderr
// to a log file, "ready" = status.json written (after every start-up step), SIGTERM to stop.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sovguard::test {

// The file's content, or "" when it cannot be read (polled while a daemon writes it).
std::string ReadTextFile(const std::filesystem::path& p);
// The live pid a pid file names, or 0.
pid_t LivePid(const std::filesystem::path& pidfile);
// SIGTERM, then SIGKILL after 10 s; polls (bounded) until `pid` is gone.
void StopPid(pid_t pid);
// Runs a shell command, returns its exit status and stdout.
int RunShell(const std::string& command, std::string* out = nullptr);

// libvirtd and virtlogd as a test found them: the destructor stops whichever of the two the
// daemon under test started on the newcomer path (its pid file names another live process than
// at construction); it removes what such a libvirtd wrote on its first start (capabilities cache,
// runtime and state directories, logs) and the `machine` cgroups that daemon or libvirtd created,
// where the host had none. What ran or existed before stays.
class ServicesAsFound {
 public:
  ServicesAsFound();
  ~ServicesAsFound();
  ServicesAsFound(const ServicesAsFound&) = delete;
  ServicesAsFound& operator=(const ServicesAsFound&) = delete;

 private:
  pid_t libvirtd_ = 0;
  pid_t virtlogd_ = 0;
  std::vector<std::filesystem::path> absent_machine_cgroups_;
  std::vector<std::filesystem::path> absent_libvirt_state_;
};

class DaemonProcess {
 public:
  // `dir` holds state/, run/ and daemon.log; extra arguments follow the directory flags.
  DaemonProcess(std::filesystem::path dir, std::vector<std::string> extra_args);
  ~DaemonProcess();  // SIGKILL if still running, stops the swtpm it started
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Polls until status.json exists; false (with the log in `why`) if the daemon exited or timed
  // out.
  bool WaitReady(std::chrono::seconds timeout, std::string* why);
  nlohmann::json Status() const;
  // SIGTERM and wait; returns the exit status (-1 if killed by a signal).
  int Terminate();
  // SIGKILL and wait: a crash. Whatever the daemon started (swtpm) keeps running, as it would.
  void Kill();
  // Starts the daemon again with the same arguments after Terminate() or Kill(); the previous
  // status.json is removed first so WaitReady() waits for the new process.
  void Restart();
  std::string Log() const { return ReadTextFile(dir_ / "daemon.log"); }
  std::filesystem::path RuntimeDir() const { return dir_ / "run"; }
  std::filesystem::path StateDir() const { return dir_ / "state"; }
  pid_t Pid() const { return pid_; }
  // bpffs directory of its pinned datapath state (bpf_pin_dir), removed by the destructor.
  std::filesystem::path PinDir() const;
  static std::string Binary();
  static std::string Ctl();
  // Runs the binary once more, synchronously, with this daemon's arguments plus `extra` (e.g.
  // --release-enforcement): its exit code, and its standard output and error in `out`.
  int RunOnce(const std::vector<std::string>& extra, std::string* out) const;

 private:
  void Spawn();

  std::filesystem::path dir_;
  std::vector<std::string> argv_;
  pid_t pid_ = -1;
};

}  // namespace sovguard::test
