#include "tests/attestation/swtpm_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <thread>

namespace sovguard::attestation::test_support {
namespace {

std::vector<char*> Argv(std::vector<std::string>& args) {
  std::vector<char*> v;
  for (auto& a : args) v.push_back(a.data());
  v.push_back(nullptr);
  return v;
}

// Binds a loopback TCP socket to `port` (0 = any); returns the fd and the port, or -1.
int BindLoopback(int port, int& bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error("socket: " + std::string(std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  bound = ntohs(a.sin_port);
  return fd;
}

// Two consecutive free loopback ports P, P+1: the swtpm TCTI always finds the control channel
// at the server port + 1. Random candidates (bind(0) tends to hand back the same port each time,
// whose neighbour may be taken).
int FreePortPair() {
  std::random_device rd;
  std::uniform_int_distribution<int> dist(20000, 59999);
  for (int attempt = 0; attempt < 200; ++attempt) {
    int p = dist(rd), bound = 0;
    int fd = BindLoopback(p, bound);
    if (fd < 0) continue;
    int fd2 = BindLoopback(p + 1, bound);
    ::close(fd);
    if (fd2 >= 0) {
      ::close(fd2);
      return p;
    }
  }
  throw std::runtime_error("no two consecutive free loopback ports");
}

bool Accepts(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

void WriteText(const std::filesystem::path& p, const std::string& s) {
  std::ofstream out(p);
  out << s;
  if (!out) throw std::runtime_error("cannot write " + p.string());
}

}  // namespace

CommandResult Run(const std::vector<std::string>& argv_in) {
  std::vector<std::string> args = argv_in;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  // posix_spawn, not fork+exec: the tests have gRPC threads running.
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 2);
  auto v = Argv(args);
  pid_t pid = -1;
  int err = ::posix_spawnp(&pid, v[0], &fa, nullptr, v.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err != 0) {
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    throw std::runtime_error("cannot run " + args[0] + ": " + std::strerror(err));
  }
  ::close(pipefd[1]);
  CommandResult r;
  std::array<char, 4096> buf{};
  for (;;) {
    ssize_t n = ::read(pipefd[0], buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    r.output.append(buf.data(), static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "sovguard-attest-XXXXXX").string();
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Swtpm::Swtpm(bool log_commands) : log_commands_(log_commands) {
  const auto d = dir_.path();
  std::filesystem::create_directories(d / "state");
  std::filesystem::create_directories(d / "ca");
  // A private local CA (not /var/lib/swtpm-localca) so tests never share or leave state behind.
  WriteText(d / "localca.conf", "statedir = " + (d / "ca").string() +
                                    "\nsigningkey = " + (d / "ca/signkey.pem").string() +
                                    "\nissuercert = " + (d / "ca/issuercert.pem").string() +
                                    "\ncertserial = " + (d / "ca/certserial").string() + "\n");
  WriteText(d / "localca.options",
            "--platform-manufacturer sovguard-test\n--platform-version 2.1\n"
            "--platform-model swtpm\n");
  WriteText(d / "swtpm_setup.conf",
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = " +
                (d / "localca.conf").string() + "\ncreate_certs_tool_options = " +
                (d / "localca.options").string() + "\nactive_pcr_banks = sha256\n");
  auto r =
      Run({"swtpm_setup", "--tpm2", "--tpmstate", (d / "state").string(), "--create-ek-cert",
           "--create-platform-cert", "--lock-nvram", "--config", (d / "swtpm_setup.conf").string(),
           "--pcr-banks", "sha256", "--ecc", "--overwrite"});
  if (r.exit_code != 0) throw std::runtime_error("swtpm_setup failed:\n" + r.output);
  // A port another process grabbed in between makes swtpm exit: try again with new ports.
  for (int attempt = 0;; ++attempt) {
    try {
      Start();
      return;
    } catch (const std::exception&) {
      if (attempt == 4) throw;
    }
  }
}

void Swtpm::Start() {
  port_ = FreePortPair();
  const int ctrl = port_ + 1;
  std::vector<std::string> args = {
      "swtpm",
      "socket",
      "--tpm2",
      "--server",
      "type=tcp,bindaddr=127.0.0.1,port=" + std::to_string(port_),
      "--ctrl",
      "type=tcp,bindaddr=127.0.0.1,port=" + std::to_string(ctrl),
      "--tpmstate",
      "dir=" + (dir_.path() / "state").string(),
      "--flags",
      "not-need-init,startup-clear",
      "--log",
      "file=" + (dir_.path() / "swtpm.log").string() + (log_commands_ ? ",level=20" : "")};
  auto v = Argv(args);
  if (int err = ::posix_spawnp(&pid_, v[0], nullptr, nullptr, v.data(), environ); err != 0) {
    pid_ = -1;
    throw std::runtime_error(std::string("cannot run swtpm: ") + std::strerror(err));
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("swtpm exited during start-up (see swtpm.log)");
    }
    if (Accepts(port_)) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // back-off between polls
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  throw std::runtime_error("swtpm did not accept connections within 15 s");
}

Swtpm::~Swtpm() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

size_t Swtpm::CommandsReceived(uint32_t command_code) const {
  if (!log_commands_) throw std::logic_error("Swtpm was started without log_commands");
  // At level 20 swtpm logs " SWTPM_IO_Read: length N" and then the command bytes in hex, 16 per
  // line: tag (2), commandSize (4), commandCode (4).
  char cc[12];
  std::snprintf(cc, sizeof cc, "%02X %02X %02X %02X", (command_code >> 24) & 0xff,
                (command_code >> 16) & 0xff, (command_code >> 8) & 0xff, command_code & 0xff);
  std::ifstream in(dir_.path() / "swtpm.log");
  std::string line;
  size_t n = 0;
  bool command_next = false;
  while (std::getline(in, line)) {
    if (command_next && line.size() >= 30 && line.compare(19, 11, cc) == 0) ++n;
    command_next = line.starts_with(" SWTPM_IO_Read:");
  }
  return n;
}

std::string Swtpm::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(port_);
}

}  // namespace sovguard::attestation::test_support
