#include "tests/harness/process.h"

#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>
#include <thread>

#include "base/unique_fd.h"

namespace sovguard::test {
namespace {

using Fd = base::UniqueFd;

void MakePipe(Fd& r, Fd& w) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  r.Reset(p[0]);
  w.Reset(p[1]);
}

}  // namespace

CommandResult Run(const std::vector<std::string>& argv, std::string_view input) {
  if (argv.empty()) {
    throw std::invalid_argument("Run: empty argv");
  }
  Fd in_r, in_w, out_r, out_w, err_r, err_w;
  MakePipe(in_r, in_w);
  MakePipe(out_r, out_w);
  MakePipe(err_r, err_w);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in_r.Get(), 0);
  posix_spawn_file_actions_adddup2(&fa, out_w.Get(), 1);
  posix_spawn_file_actions_adddup2(&fa, err_w.Get(), 2);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) {
    args.push_back(const_cast<char*>(a.c_str()));
  }
  args.push_back(nullptr);
  pid_t pid = 0;
  int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    throw std::system_error(rc, std::generic_category(), "spawn " + argv[0]);
  }
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();

  CommandResult result;
  size_t written = 0;
  if (input.empty()) {
    in_w.Reset();
  }
  std::array<char, 4096> buf{};
  while (out_r || err_r) {
    std::array<pollfd, 3> fds{
        {{out_r.Get(), POLLIN, 0}, {err_r.Get(), POLLIN, 0}, {in_w.Get(), POLLOUT, 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    if (in_w && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(in_w.Get(), input.data() + written, input.size() - written);
      if (n > 0) {
        written += static_cast<size_t>(n);
      }
      if (n < 0 || written == input.size()) {
        in_w.Reset();
      }
    }
    for (int i = 0; i < 2; ++i) {
      Fd& f = i == 0 ? out_r : err_r;
      if (!f || !(fds[static_cast<size_t>(i)].revents & (POLLIN | POLLHUP | POLLERR))) {
        continue;
      }
      ssize_t n = ::read(f.Get(), buf.data(), buf.size());
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf.data(), static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        f.Reset();
      }
    }
  }
  in_w.Reset();
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw std::system_error(errno, std::generic_category(), "waitpid");
    }
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string RunOrThrow(const std::vector<std::string>& argv, std::string_view input) {
  CommandResult r = Run(argv, input);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) {
      cmd += (cmd.empty() ? "" : " ") + a;
    }
    throw std::runtime_error("`" + cmd + "` exited with " + std::to_string(r.exit_code) + ": " +
                             r.err + r.out);
  }
  return r.out;
}

bool PollUntil(std::chrono::milliseconds timeout, const std::function<bool()>& done,
               std::chrono::milliseconds step) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (done()) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return done();
    }
    std::this_thread::sleep_for(step);
  }
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0) {
    return false;
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) {
    return false;
  }
  std::string line;
  std::getline(stat, line);
  // Field 3, after the parenthesised comm (which may itself contain ') ').
  auto close = line.rfind(')');
  if (close == std::string::npos || close + 2 >= line.size()) {
    return false;
  }
  char state = line[close + 2];
  return state != 'Z' && state != 'X';
}

pid_t ReadPidFile(const std::string& path) {
  std::ifstream f(path);
  long pid = 0;
  if (!(f >> pid) || pid <= 1) {
    return 0;
  }
  return static_cast<pid_t>(pid);
}

bool TerminateAndWait(pid_t pid, std::chrono::milliseconds timeout) {
  if (pid <= 1) {
    return false;
  }
  if (!ProcessAlive(pid)) {
    return true;
  }
  ::kill(pid, SIGTERM);
  if (PollUntil(timeout, [&] { return !ProcessAlive(pid); })) {
    return true;
  }
  ::kill(pid, SIGKILL);
  return PollUntil(std::chrono::seconds(10), [&] { return !ProcessAlive(pid); });
}

}  // namespace sovguard::test
