// Small process helpers for tests: run a command and capture its output, poll a condition with a
// deadline, tell whether a pid is still a live process.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/file.h"

namespace sovguard::test {

struct CommandResult {
  int exit_code = -1;  // exit status, or 128 + signal number when killed by a signal
  std::string out;
  std::string err;
};

// Runs argv[0] (looked up in PATH) with argv, feeding `input` on stdin. Never throws for a
// non-zero exit; throws std::system_error when the process cannot be started.
CommandResult Run(const std::vector<std::string>& argv, std::string_view input = {});

// Runs and throws std::runtime_error naming the command, exit code and stderr on failure.
std::string RunOrThrow(const std::vector<std::string>& argv, std::string_view input = {});

// Calls `done` every `step` until it returns true or `timeout` passes; returns the last result.
// This is how tests wait: on a real condition, with a deadline.
bool PollUntil(std::chrono::milliseconds timeout, const std::function<bool()>& done,
               std::chrono::milliseconds step = std::chrono::milliseconds(20));

// True while `pid` names a process that has not exited. A zombie counts as exited: daemons that
// double-fork are reparented to a PID 1 that may reap late.
bool ProcessAlive(pid_t pid);

// Reads a pid file ("1234\n"); 0 when missing or malformed.
pid_t ReadPidFile(const std::string& path);

// Sends SIGTERM, waits up to `timeout` for exit, then SIGKILL and waits again. Returns true if the
// process is gone. Never signals pid <= 1.
bool TerminateAndWait(pid_t pid, std::chrono::milliseconds timeout);

// base/file.h's whole-file read and atomic write (throw base::Error, a std::runtime_error, naming
// the path), with the harness's default mode for files tests write (0644).
inline std::string ReadFile(const std::string& path) {
  return base::ReadFileText(path);
}
inline void WriteFile(const std::string& path, std::string_view content, unsigned mode = 0644) {
  base::WriteFileAtomic(path, content, static_cast<mode_t>(mode));
}

}  // namespace sovguard::test
