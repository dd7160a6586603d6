// Running helper programs (swtpm, libvirtd, tc) without a shell: argv in, exit status and output
// out.
#pragma once

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace sovguard::enforcer {

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or not started
  std::string output;  // stdout and stderr interleaved
};

// Runs argv[0] (searched in PATH) and waits for it; throws std::system_error if it cannot start.
CommandResult RunCommand(const std::vector<std::string>& argv);

// Polls `ready` every 20 ms until it returns true or `timeout` passes; returns its last answer.
template <typename Pred>
bool WaitUntil(Pred&& ready, std::chrono::milliseconds timeout);

// True when a TCP connection to host:port succeeds.
bool TcpPortAnswers(const std::string& host, int port);

// True when systemd is the init system (PID 1), decided as sd_booted() decides it:
// `<sysroot>/run/systemd/system` is a directory. sysroot: "/" on the host, a fake tree in tests.
bool SystemdIsInit(const std::filesystem::path& sysroot = "/");

}  // namespace sovguard::enforcer

#include <thread>

template <typename Pred>
bool sovguard::enforcer::WaitUntil(Pred&& ready, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (ready()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}
