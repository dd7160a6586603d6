// The shipped alerting rules against the real thing: a real prometheus scrapes a running sovguardd
// (loopback only) with examples/prometheus/sovguard-alerts.yml loaded; a guest whose dataset
// forbids a destination sends to it, and SovguardNetworkViolation fires, naming the guest and
// dataset. Before the guest runs, it does not.
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>

#include "tests/harness/guest.h"
#include "tests/harness/libvirtd.h"
#include "tests/harness/network.h"
#include "tests/harness/process.h"
#include "tests/libvirt/daemon_fixture.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
using namespace std::chrono_literals;

namespace {

// A loopback TCP port nothing listens on right now.
int FreeLoopbackPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = -1;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0)
    port = ntohs(a.sin_port);
  ::close(fd);
  return port;
}

// prometheus as a child: its own config, TSDB and log under `dir`; stopped by the destructor.
class PrometheusProcess {
 public:
  PrometheusProcess(const fs::path& dir, const std::string& config, int port)
      : address_("127.0.0.1:" + std::to_string(port)), log_(dir / "prometheus.log") {
    fs::create_directories(dir / "tsdb");
    st::WriteTestFile(dir / "prometheus.yml", config);
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string out = log_.string();
      if (!std::freopen(out.c_str(), "w", stdout) || ::dup2(STDOUT_FILENO, STDERR_FILENO) < 0)
        ::_exit(127);
      ::execlp("prometheus", "prometheus",
               ("--config.file=" + (dir / "prometheus.yml").string()).c_str(),
               ("--storage.tsdb.path=" + (dir / "tsdb").string()).c_str(),
               ("--web.listen-address=" + address_).c_str(), "--log.level=warn", nullptr);
      ::_exit(127);
    }
  }
  ~PrometheusProcess() {
    if (pid_ > 0) st::TerminateAndWait(pid_, 10s);
  }
  PrometheusProcess(const PrometheusProcess&) = delete;
  PrometheusProcess& operator=(const PrometheusProcess&) = delete;

  bool Started() const { return pid_ > 0 && st::ProcessAlive(pid_); }
  // GET on the HTTP API ("/api/v1/alerts"); empty when it does not answer.
  std::string Get(const std::string& path) const {
    std::string out;
    return st::RunShell("curl -sf http://" + address_ + path, &out) == 0 ? out : "";
  }
  std::string Log() const { return fs::exists(log_) ? st::ReadTextFile(log_) : ""; }

 private:
  std::string address_;
  fs::path log_;
  pid_t pid_ = -1;
};

class DaemonPrometheus : public st::DaemonWithLibvirt {
 protected:
  std::string PolicyText() const override { return st::kZonePolicy; }
};

TEST_F(DaemonPrometheus, ForbiddenTrafficFiresTheViolationAlert) {
  std::string out;
  SOVGUARD_REQUIRE(st::RunShell("command -v prometheus", &out) == 0,
                   "prometheus (Debian package prometheus)");
  st::TestNetwork net("pma");
  StartDaemon();
  const std::string url = daemon_->Status().at("metrics").get<std::string>();
  ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << url;
  const std::string target = url.substr(7, url.find('/', 7) - 7);
  const int port = FreeLoopbackPort();
  ASSERT_GT(port, 0);
  PrometheusProcess prom(dir_ / "prometheus",
                         "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
                         "rule_files: [\"" +
                             std::string(SOVGUARD_SOURCE_DIR) +
                             "/examples/prometheus/sovguard-alerts.yml\"]\n"
                             "scrape_configs:\n"
                             "  - job_name: sovguard\n"
                             "    static_configs: [{targets: [\"" +
                             target + "\"]}]\n",
                         port);
  ASSERT_TRUE(prom.Started()) << prom.Log();
  // Scraped and evaluated, and nothing to alert on yet.
  ASSERT_TRUE(st::PollUntil(
      60s,
      [&] {
        return prom.Get(
                       "/api/v1/"
                       "query?query=sovguard_policy_reloads_total%20or%20sovguard_build_info")
                   .find("\"sovguard_build_info\"") != std::string::npos;
      },
      500ms))
      << prom.Log();
  ASSERT_TRUE(st::PollUntil(
      30s,
      [&] {
        return prom.Get("/api/v1/rules").find("SovguardNetworkViolation") != std::string::npos;
      },
      500ms))
      << prom.Log();
  EXPECT_EQ(prom.Get("/api/v1/alerts").find("SovguardNetworkViolation"), std::string::npos);

  InstallHook();
  st::TestGuest guest(st::MakeGuestSpec("sgt-pma", "sgtpma0"));
  ASSERT_NO_FATAL_FAILURE(BootGuest(guest, net));

  // The guest's forbidden packets are refused (none arrive) and the alert fires for them.
  std::string alerts;
  const bool fired = st::PollUntil(
      120s,
      [&] {
        alerts = prom.Get("/api/v1/alerts");
        return alerts.find("\"alertname\":\"SovguardNetworkViolation\"") != std::string::npos &&
               alerts.find("\"state\":\"firing\"") != std::string::npos;
      },
      500ms);
  EXPECT_TRUE(fired) << alerts << "\n" << prom.Log();
  EXPECT_NE(alerts.find("\"guest\":\"sgt-pma\""), std::string::npos) << alerts;
  EXPECT_NE(alerts.find("\"dataset\":\"guest-default\""), std::string::npos) << alerts;
  EXPECT_NE(alerts.find("\"verdict\":\"drop\""), std::string::npos) << alerts;
  EXPECT_EQ(net.Counts().forbidden, 0u);
  // The dashboard's violations panel and the event log agree: the daemon counts the events.
  std::string violations;
  EXPECT_TRUE(st::PollUntil(
      30s,
      [&] {
        violations = prom.Get("/api/v1/query?query=sovguard_violations_total");
        return violations.find("\"guest\":\"sgt-pma\"") != std::string::npos;
      },
      500ms))
      << violations;
  EXPECT_NE(violations.find("\"reason\":\"residency\""), std::string::npos) << violations;

  guest.Destroy();
  EXPECT_EQ(daemon_->Terminate(), 0) << daemon_->Log();
}

}  // namespace
