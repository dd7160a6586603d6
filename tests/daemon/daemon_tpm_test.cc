// The node's TPM is only one sovguardd started or was told to use. Without a hardware TPM the
// daemon's swtpm serves Unix sockets in its runtime directory (directory 0700, sockets 0600): a
// local unprivileged user reaches neither its data nor its control channel (no PCR reset, no
// commands), a squatter on the TCG simulator's TCP port is never asked anything, a swtpm at the
// socket path that is not the daemon's own is never used, and the quoted snapshot says
// software_tpm.
#include <arpa/inet.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;

namespace {

constexpr uid_t kNobody = 65534;

// Connects to a Unix socket; returns 0 or errno.
int ConnectUnix(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}

// The pid serving a Unix socket (SO_PEERCRED of a connection), or -1.
pid_t ServerPid(const fs::path& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  ucred cred{};
  socklen_t len = sizeof cred;
  pid_t pid = -1;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
    pid = cred.pid;
  ::close(fd);
  return pid;
}

// A listener on 127.0.0.1:port that never answers: the old swtpm port taken first by anyone.
class TcpSquatter {
 public:
  explicit TcpSquatter(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    const int one = 1;
    ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(fd_, 16) == 0;
    error_ = ok_ ? "" : std::strerror(errno);
  }
  ~TcpSquatter() { ::close(fd_); }
  TcpSquatter(const TcpSquatter&) = delete;
  TcpSquatter& operator=(const TcpSquatter&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }
  // Connections that arrived (accepted now; the socket is non-blocking).
  int Accepted() const {
    int n = 0;
    for (int fd; (fd = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0; ++n) ::close(fd);
    return n;
  }

 private:
  int fd_ = -1;
  bool ok_ = false;
  std::string error_;
};

class DaemonTpm : public st::HostDaemonTest {
 protected:
  DaemonTpm() : HostDaemonTest("tpm") {}
  // One quote through the local API: the daemon used its TPM; the evidence JSON.
  nlohmann::json Quote(const st::DaemonProcess& daemon) {
    const std::string evidence = (dir_ / "evidence.json").string();
    std::string out;
    const std::string socket =
        daemon.Status().at("api_socket").get<std::string>().substr(5);  // "unix:"
    EXPECT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " attest quote --nonce 0102030405060708 " +
                               "--socket " + socket + " -o " + evidence + " 2>&1",
                           &out),
              0)
        << out;
    return nlohmann::json::parse(st::ReadTextFile(evidence));
  }
};

TEST_F(DaemonTpm, OnlyTheDaemonsUserReachesItsSwtpmAndASquatterOnTheOldPortIsNeverAsked) {
  TcpSquatter data(2321), ctrl(2322);
  ASSERT_TRUE(data.ok()) << "127.0.0.1:2321 is taken on this host: " << data.error();
  ASSERT_TRUE(ctrl.ok()) << "127.0.0.1:2322 is taken on this host: " << ctrl.error();

  st::DaemonProcess daemon(dir_, ShippedDataArgs());
  std::string why;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const fs::path sock = daemon.RuntimeDir() / "swtpm/tpm.sock";
  const fs::path sock_ctrl = sock.string() + ".ctrl";
  const auto tpm = daemon.Status().at("tpm");
  EXPECT_EQ(tpm.at("tcti").get<std::string>(), "swtpm:path=" + sock.string());
  EXPECT_TRUE(tpm.at("software").get<bool>());
  const auto evidence = Quote(daemon);
  EXPECT_TRUE(evidence.at("snapshot").value("software_tpm", false))
      << evidence.at("snapshot").dump(2);
  EXPECT_EQ(data.Accepted(), 0) << "the daemon connected to a TPM it did not start";
  EXPECT_EQ(ctrl.Accepted(), 0) << "the daemon connected to a TPM it did not start";

  // Directory 0700 and sockets 0600, all the daemon's (root's).
  struct stat s {};
  ASSERT_EQ(::lstat(sock.parent_path().c_str(), &s), 0);
  EXPECT_EQ(s.st_mode & 07777, 0700u);
  EXPECT_EQ(s.st_uid, 0u);
  for (const auto& p : {sock, sock_ctrl}) {
    ASSERT_EQ(::lstat(p.c_str(), &s), 0) << p;
    EXPECT_TRUE(S_ISSOCK(s.st_mode)) << p;
    EXPECT_EQ(s.st_mode & 07777, 0600u) << p;
    EXPECT_EQ(s.st_uid, 0u) << p;
  }
  // The owner connects; a local unprivileged user connects to neither channel.
  EXPECT_EQ(ConnectUnix(sock), 0);
  int pipefd[2];
  ASSERT_EQ(::pipe(pipefd), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int errs[2] = {-1, -1};
    if (::setgroups(0, nullptr) == 0 && ::setresgid(kNobody, kNobody, kNobody) == 0 &&
        ::setresuid(kNobody, kNobody, kNobody) == 0) {
      errs[0] = ConnectUnix(sock);
      errs[1] = ConnectUnix(sock_ctrl);
    }
    (void)!::write(pipefd[1], errs, sizeof errs);
    ::_exit(0);
  }
  ::close(pipefd[1]);
  int errs[2] = {-2, -2};
  ASSERT_EQ(::read(pipefd[0], errs, sizeof errs), static_cast<ssize_t>(sizeof errs));
  ::close(pipefd[0]);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(errs[0], EACCES) << "nobody connected to the TPM's data socket: " << errs[0];
  EXPECT_EQ(errs[1], EACCES) << "nobody connected to the TPM's control socket: " << errs[1];
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

TEST_F(DaemonTpm, ItsOwnSwtpmIsKeptAcrossRestartsAndAnyOtherIsNeverUsed) {
  st::DaemonProcess daemon(dir_, ShippedDataArgs());
  std::string why, out;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const fs::path sock = daemon.RuntimeDir() / "swtpm/tpm.sock";
  const fs::path pid_file = daemon.StateDir() / "swtpm/swtpm.pid";
  const pid_t own = st::LivePid(pid_file);
  ASSERT_NE(own, 0);
  EXPECT_EQ(ServerPid(sock), own);
  ASSERT_EQ(daemon.Terminate(), 0) << daemon.Log();

  // Restarted: its own swtpm (verified) is kept, so the PCR and the log continue.
  daemon.Restart();
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  EXPECT_EQ(st::LivePid(pid_file), own);
  EXPECT_EQ(daemon.Status().at("measurements").at("state").get<std::string>(), "continued");
  EXPECT_NE(daemon.Status().at("tpm").at("description").get<std::string>().find("verified"),
            std::string::npos);
  ASSERT_EQ(daemon.Terminate(), 0) << daemon.Log();

  // Another swtpm (its own state) serves the daemon's socket paths and the pid file names it.
  st::StopPid(own);
  const fs::path other_state = dir_ / "other-tpm";
  fs::create_directories(other_state);
  ASSERT_EQ(st::RunShell("swtpm_setup --tpm2 --tpmstate " + other_state.string() +
                             " --pcr-banks sha256 2>&1",
                         &out),
            0)
      << out;
  ASSERT_EQ(st::RunShell("swtpm socket --tpm2 --tpmstate dir=" + other_state.string() +
                             " --server type=unixio,path=" + sock.string() +
                             ",mode=0600 --ctrl type=unixio,path=" + sock.string() +
                             ".ctrl,mode=0600 --flags not-need-init,startup-clear --daemon --pid " +
                             "file=" + (other_state / "pid").string() + " 2>&1",
                         &out),
            0)
      << out;
  const pid_t other = st::LivePid(other_state / "pid");
  ASSERT_NE(other, 0);
  std::ofstream(pid_file, std::ios::trunc) << other;
  ASSERT_EQ(ServerPid(sock), other);

  daemon.Restart();
  const bool ready = daemon.WaitReady(std::chrono::seconds(120), &why);
  const pid_t now = st::LivePid(pid_file);
  const pid_t serving = ServerPid(sock);
  st::StopPid(other);
  ASSERT_TRUE(ready) << why;
  EXPECT_NE(now, other);
  EXPECT_NE(now, 0);
  EXPECT_EQ(serving, now) << "the daemon's TPM socket is served by a swtpm it did not start";
  EXPECT_NE(daemon.Status()
                .at("tpm")
                .at("description")
                .get<std::string>()
                .find("not using the previous one"),
            std::string::npos)
      << daemon.Status().dump(2);
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

}  // namespace
