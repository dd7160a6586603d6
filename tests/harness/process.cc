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

namespace sovguard::test {
namespace {

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) {
      ::close(fd);
    }
    fd = -1;
  }
};

void MakePipe(Fd& r, Fd& w) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) {
    throw std::system_error(errno, std::generic_category(), "pipe2");
  }
  r.fd = p[0];
  w.fd = p[1];
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
  posix_spawn_file_actions_adddup2(&fa, in_r.fd, 0);
  posix_spawn_file_actions_adddup2(&fa, out_w.fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err_w.fd, 2);
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
  in_r.Close();
  out_w.Close();
  err_w.Close();

  CommandResult result;
  size_t written = 0;
  if (input.empty()) {
    in_w.Close();
  }
  std::array<char, 4096> buf{};
  while (out_r.fd >= 0 || err_r.fd >= 0) {
    std::array<pollfd, 3> fds{
        {{out_r.fd, POLLIN, 0}, {err_r.fd, POLLIN, 0}, {in_w.fd, POLLOUT, 0}}};
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) {
        continue;
      }
      throw std::system_error(errno, std::generic_category(), "poll");
    }
    if (in_w.fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      ssize_t n = ::write(in_w.fd, input.data() + written, input.size() - written);
      if (n > 0) {
        written += static_cast<size_t>(n);
      }
      if (n < 0 || written == input.size()) {
        in_w.Close();
      }
    }
    for (int i = 0; i < 2; ++i) {
      Fd& f = i == 0 ? out_r : err_r;
      if (f.fd < 0 || !(fds[static_cast<size_t>(i)].revents & (POLLIN | POLLHUP | POLLERR))) {
        continue;
      }
      ssize_t n = ::read(f.fd, buf.data(), buf.size());
      if (n > 0) {
        (i == 0 ? result.out : result.err).append(buf.data(), static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        f.Close();
      }
    }
  }
  in_w.Close();
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

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) {
    throw std::runtime_error("cannot read " + path + ": " + std::generic_category().message(errno));
  }
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void WriteFile(const std::string& path, std::string_view content, unsigned mode) {
  std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    if (!f) {
      throw std::runtime_error("cannot write " + tmp + ": " +
                               std::generic_category().message(errno));
    }
    f.write(content.data(), static_cast<std::streamsize>(content.size()));
    if (!f) {
      throw std::runtime_error("write failed: " + tmp);
    }
  }
  if (::chmod(tmp.c_str(), static_cast<mode_t>(mode)) != 0 ||
      ::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error("cannot install " + path + ": " +
                             std::generic_category().message(errno));
  }
}

}  // namespace sovguard::test
