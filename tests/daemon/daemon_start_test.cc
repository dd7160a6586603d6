// The newcomer path, for real: sovguardd on embedded defaults finds or starts libvirtd, starts a
// swtpm when there is no hardware TPM (and says so), probes the kernel, applies the shipped policy,
// answers a quote, reports status, and stops cleanly on SIGTERM.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "attestation/eventlog/cel.h"
#include "base/unique_fd.h"
#include "tests/harness/kernel_objects.h"
#include "tests/harness/require.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_test.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;

namespace {

class DaemonStart : public st::HostDaemonTest {
 protected:
  DaemonStart() : HostDaemonTest("daemon") {}
};

TEST_F(DaemonStart, StartsOnEmbeddedDefaultsReportsStatusAndStopsOnSigterm) {
  std::string why;
  int exit_status = -1;
  {
    st::DaemonProcess daemon(dir_,
                             {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"});
    ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;

    const auto status = daemon.Status();
    const std::string log = daemon.Log();
    EXPECT_TRUE(status.at("tpm").at("software").get<bool>());
    EXPECT_EQ(status.at("tpm").at("tcti").get<std::string>(),
              "swtpm:path=" + (daemon.RuntimeDir() / "swtpm/tpm.sock").string());
    EXPECT_NE(log.find("*** SOFTWARE TPM"), std::string::npos)
        << "software TPM must be announced loudly:\n"
        << log;
    EXPECT_NE(log.find("libvirt answers at qemu:///system"), std::string::npos) << log;
    EXPECT_NE(log.find("jurisdiction table"), std::string::npos) << log;
    EXPECT_EQ(status.at("probe").at("paths").size(), 6u);
    EXPECT_TRUE(fs::exists(daemon.RuntimeDir() / "probe.json"));
    EXPECT_NE(st::LivePid(daemon.StateDir() / "swtpm/swtpm.pid"), 0) << "swtpm should be running";

    // The shipped default policy is in force, measured into the TPM-backed log.
    const auto& policy = status.at("policy");
    EXPECT_NE(policy.at("source").get<std::string>().find("default-eu-eea.textproto"),
              std::string::npos);
    ASSERT_EQ(policy.at("datasets").size(), 1u);
    EXPECT_EQ(policy.at("datasets")[0].at("mode").get<std::string>(), "audit");
    EXPECT_EQ(status.at("measurements").at("pcr").get<int>(), 13);

    // `sovguardctl status` renders the same document.
    std::string out;
    EXPECT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " status --runtime-dir " +
                               daemon.RuntimeDir().string(),
                           &out),
              0)
        << out;
    EXPECT_NE(out.find("[SOFTWARE TPM]"), std::string::npos) << out;
    EXPECT_NE(out.find("storage-block-devices"), std::string::npos) << out;
    EXPECT_NE(out.find("default-eu-eea"), std::string::npos) << out;

    // An auditor's quote through the local API carries the quote and the enforcement snapshot.
    const std::string evidence = (dir_ / "evidence.json").string();
    const std::string socket = status.at("api_socket").get<std::string>().substr(5);  // "unix:"
    ASSERT_EQ(
        st::RunShell(st::DaemonProcess::Ctl() + " attest quote --nonce 0011223344556677 --socket " +
                         socket + " -o " + evidence,
                     &out),
        0)
        << out;
    const auto ev = nlohmann::json::parse(st::ReadTextFile(evidence));
    EXPECT_FALSE(ev.at("quote").at("signature").get<std::string>().empty());
    // Two network paths from the probe, five storage paths from the storage datapath.
    EXPECT_EQ(ev.at("snapshot").at("mechanisms").size(), 7u) << ev.at("snapshot").dump(2);

    // Prometheus metrics on loopback: probe results per path, build, software TPM, the policy.
    const std::string url = status.at("metrics").get<std::string>();
    ASSERT_EQ(url.rfind("http://127.0.0.1:", 0), 0u) << daemon.Log();
    ASSERT_NE(url.find("/metrics"), std::string::npos) << url;
    ASSERT_EQ(st::RunShell("curl -sf " + url, &out), 0) << daemon.Log();
    EXPECT_NE(out.find("# TYPE sovguard_probe_path_info gauge"), std::string::npos) << out;
    EXPECT_NE(
        out.find(
            "sovguard_probe_path_info{path=\"storage-block-devices\",mechanism=\"cgroup/dev\""),
        std::string::npos)
        << out;
    EXPECT_NE(out.find("sovguard_tpm_software 1"), std::string::npos) << out;
    EXPECT_NE(out.find("sovguard_policy_dataset_info{dataset=\"default-eu-eea\",mode=\"audit\"} 1"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find("process_resident_memory_bytes "), std::string::npos) << out;
    // Storage path: what guards each storage path is in the status too.
    ASSERT_TRUE(status.contains("storage")) << status.dump(2);
    EXPECT_TRUE(status.at("storage").at("enforced").get<bool>()) << status.dump(2);
    EXPECT_GE(status.at("storage").at("paths").size(), 3u) << status.dump(2);

    exit_status = daemon.Terminate();
    EXPECT_EQ(exit_status, 0) << daemon.Log();
  }
}

// One daemon per runtime directory; stopping keeps enforcing; `--release-enforcement` is the
// explicit way out: measured into the TPM log first, then every filter, storage program and pin
// gone; a daemon started afterwards enforces again.
TEST_F(DaemonStart, OneDaemonPerRuntimeDirAndAnExplicitMeasuredRelease) {
  // Programs of another sovguardd on the same machine cgroup (a node stopped as the README's
  // newcomer leaves it) are not this daemon's: only programs created from here on are.
  const st::BpfIdMark mark = st::MarkBpfIds();
  const auto ours = [&](const std::string& cgroup) {
    std::string lines;
    for (const auto& l : st::CgroupProgramsCreatedSince(cgroup, mark)) lines += l + "\n";
    return lines;
  };
  st::DaemonProcess daemon(dir_, {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"});
  std::string why, out;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const std::string machine = daemon.Status().at("storage").at("machine_cgroup").get<std::string>();
  // A second daemon on the same directories would adopt the first one's datapath: refused.
  EXPECT_EQ(daemon.RunOnce({}, &out), 1) << out;
  EXPECT_NE(out.find("another sovguardd (pid " + std::to_string(daemon.Pid()) + ")"),
            std::string::npos)
      << out;
  EXPECT_NE(daemon.RunOnce({"--release-enforcement"}, &out), 0) << out;
  EXPECT_NE(out.find("another sovguardd"), std::string::npos) << out;
  EXPECT_EQ(daemon.RunOnce({"--force"}, &out), 2) << out;  // --force alone is a usage error

  ASSERT_EQ(daemon.Terminate(), 0) << daemon.Log();
  // Stopped, still enforcing: the storage programs stay attached and pinned.
  ASSERT_TRUE(fs::exists(daemon.PinDir() / "storage"));
  out = ours(machine);
  EXPECT_NE(out.find("cgroup_inet4_connect"), std::string::npos) << out;
  EXPECT_NE(out.find("cgroup_device"), std::string::npos) << out;

  ASSERT_EQ(daemon.RunOnce({"--release-enforcement"}, &out), 0) << out;
  EXPECT_NE(out.find("enforcement released: 0 guest(s) were covered"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(daemon.PinDir())) << out;
  EXPECT_EQ(ours(machine), "") << "left attached by the released daemon";
  // The quoted log says so: the release is its last event.
  const auto log = st::ReadTextFile(daemon.StateDir() / "measurements/cel.bin");
  const auto recs = sovguard::attestation::cel::DecodeLog(
      std::span(reinterpret_cast<const uint8_t*>(log.data()), log.size()));
  ASSERT_FALSE(recs.empty());
  const auto last = sovguard::attestation::cel::DecodeSovguardContent(recs.back().content);
  EXPECT_EQ(last.name, "enforcement");
  EXPECT_EQ(last.detail, "released: 0 taps/cgroups covered");
  // Nothing left to release: says so, succeeds.
  EXPECT_EQ(daemon.RunOnce({"--release-enforcement"}, &out), 0) << out;
  EXPECT_NE(out.find("nothing to release"), std::string::npos) << out;

  // Started again: enforcing again.
  daemon.Restart();
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  EXPECT_TRUE(daemon.Status().at("storage").at("enforced").get<bool>());
  out = ours(machine);
  EXPECT_NE(out.find("cgroup_inet4_connect"), std::string::npos) << out;
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
  EXPECT_EQ(daemon.RunOnce({"--release-enforcement"}, &out), 0) << out;
}

// An exception without ports still loads (older policies) but carries any protocol and port: the
// daemon's log says so once when it loads the policy, in the words `policy check` uses.
TEST_F(DaemonStart, LogsTheAddressOnlyExceptionWarningWhenItLoadsThePolicy) {
  const fs::path src = fs::path(SOVGUARD_SOURCE_DIR) / "policy/data";
  const fs::path data = dir_ / "data";
  fs::create_directories(data);
  fs::create_symlink(src / "world.sgjt", data / "world.sgjt");
  std::string policy = st::ReadTextFile(src / "default-eu-eea.textproto");
  const std::string allow = R"(allow: ["EU", "EEA"])";
  const auto at = policy.find(allow);
  ASSERT_NE(at, std::string::npos) << policy;
  policy.insert(at + allow.size(), R"( exceptions: "resolver")");
  policy += "\nexceptions { name: \"resolver\" cidrs: \"203.0.113.53/32\" reason: \"resolver\" }\n";
  std::ofstream(data / "default-eu-eea.textproto") << policy;

  std::string why, out;
  st::DaemonProcess daemon(dir_, {"--data-dir", data.string()});
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const std::string log = daemon.Log();
  const std::string warning = "<4>sovguardd: policy " +
                              (data / "default-eu-eea.textproto").string() +
                              ": exception \"resolver\" names no ports: it carries any protocol";
  const auto first = log.find(warning);
  EXPECT_NE(first, std::string::npos) << log;
  EXPECT_EQ(log.find(warning, first + 1), std::string::npos) << "logged more than once:\n" << log;
  // `policy check` prints the same sentence (and still accepts the policy).
  EXPECT_EQ(st::RunShell(st::DaemonProcess::Ctl() + " policy check " +
                             (data / "default-eu-eea.textproto").string() + " 2>&1",
                         &out),
            0)
      << out;
  EXPECT_NE(out.find("exception \"resolver\" names no ports: it carries any protocol"),
            std::string::npos)
      << out;
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
  EXPECT_EQ(daemon.RunOnce({"--release-enforcement"}, &out), 0) << out;
}

// Under systemd's watchdog (WatchdogSec=30s in the unit) a main-loop round may take longer than
// the interval on a slow or loaded host (seen under TCG: a tamper round comparing the world table,
// a reload applying it): systemd killed the daemon mid-round. Each round's work now runs under a
// raised bound (WATCHDOG_USEC, at least 5 minutes) that is set back after it; the daemon is the
// service here, this test its systemd (NOTIFY_SOCKET, WATCHDOG_USEC), a reload included.
TEST_F(DaemonStart, UnderTheWatchdogEachRoundWorksUnderARaisedBoundThatIsSetBack) {
  fs::create_directories(dir_);
  const fs::path path = dir_ / "notify.sock";
  const sovguard::base::UniqueFd sock(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ASSERT_TRUE(sock) << std::strerror(errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  ASSERT_EQ(::bind(sock.Get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  const int on = 1;
  ASSERT_EQ(::setsockopt(sock.Get(), SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)), 0);
  constexpr const char* kInterval = "4000000";  // 4 s
  constexpr const char* kRaised = "300000000";  // max(10 intervals, 5 minutes)
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  ::setenv("WATCHDOG_USEC", kInterval, 1);
  st::DaemonProcess daemon(dir_ / "d",
                           {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"});
  ::unsetenv("NOTIFY_SOCKET");
  ::unsetenv("WATCHDOG_USEC");
  std::string why;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;

  // Every message until `done` holds (bounded), as systemd receives them.
  std::vector<std::string> messages;
  const auto receive_until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      pollfd p{.fd = sock.Get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 1000) <= 0) continue;
      // Only the daemon's own messages count, as with the unit's NotifyAccess=main (what it
      // starts, e.g. swtpm, inherits NOTIFY_SOCKET).
      char buf[4096];
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
      iovec iov{.iov_base = buf, .iov_len = sizeof(buf)};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      msg.msg_control = control;
      msg.msg_controllen = sizeof(control);
      const ssize_t n = ::recvmsg(sock.Get(), &msg, 0);
      const cmsghdr* c = CMSG_FIRSTHDR(&msg);
      if (n <= 0 || c == nullptr || c->cmsg_type != SCM_CREDENTIALS) continue;
      ucred cred{};
      std::memcpy(&cred, CMSG_DATA(c), sizeof(cred));
      if (cred.pid == daemon.Pid()) messages.emplace_back(buf, static_cast<std::size_t>(n));
    }
    return done();
  };
  const auto count = [&](const std::string& m) {
    return std::count(messages.begin(), messages.end(), m);
  };
  const std::string raise = std::string("WATCHDOG=1\nWATCHDOG_USEC=") + kRaised;
  const std::string restore = std::string("WATCHDOG=1\nWATCHDOG_USEC=") + kInterval;
  ASSERT_TRUE(receive_until([&] { return count(restore) >= 3; }))
      << testing::PrintToString(messages);
  ASSERT_EQ(::kill(daemon.Pid(), SIGHUP), 0);
  const auto before_reload = count(restore);
  ASSERT_TRUE(receive_until([&] {
    return daemon.Log().find("reload") != std::string::npos && count(restore) >= before_reload + 2;
  })) << daemon.Log();

  EXPECT_EQ(std::count_if(messages.begin(), messages.end(),
                          [](const std::string& m) { return m.starts_with("READY=1"); }),
            1)
      << testing::PrintToString(messages);
  // Raised and set back in pairs (each a ping), each round's work between them.
  bool raised = false;
  for (const auto& m : messages) {
    if (m == raise) {
      EXPECT_FALSE(raised) << "raised twice without being set back: "
                           << testing::PrintToString(messages);
      raised = true;
    } else if (m == restore) {
      EXPECT_TRUE(raised) << "set back without being raised: " << testing::PrintToString(messages);
      raised = false;
    } else if (m.find("WATCHDOG_USEC=") != std::string::npos) {
      ADD_FAILURE() << "unexpected bound: " << m;
    }
  }
  EXPECT_FALSE(raised) << "the last round left the raised bound in place";
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

TEST_F(DaemonStart, AuditorsQuoteOverMutualTlsOnlyWhenAllowListed) {
  const fs::path pki = dir_ / "pki";
  fs::create_directories(pki);
  std::string out;
  ASSERT_EQ(st::RunShell("bash " + std::string(SOVGUARD_SOURCE_DIR) +
                             "/tests/daemon/make_test_pki.sh " + pki.string() + " 2>&1",
                         &out),
            0)
      << out;
  st::DaemonProcess daemon(
      dir_ / "node",
      {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data", "--set",
       "api_listen=127.0.0.1:0", "--set", "api_cert=" + (pki / "server.pem").string(), "--set",
       "api_key=" + (pki / "server.key").string(), "--set",
       "auditor_ca=" + (pki / "ca.pem").string(), "--set",
       "auditor_allowlist=" + (pki / "auditors.allow").string()});
  std::string why;
  ASSERT_TRUE(daemon.WaitReady(std::chrono::seconds(120), &why)) << why;
  const std::string node = daemon.Status().at("api_tls").get<std::string>();
  ASSERT_FALSE(node.empty()) << daemon.Log();

  auto quote = [&](const std::string& who, std::string* text) {
    return st::RunShell(st::DaemonProcess::Ctl() +
                            " attest quote --nonce 8899aabbccddeeff --node " + node + " --cert " +
                            (pki / (who + ".pem")).string() + " --key " +
                            (pki / (who + ".key")).string() + " --ca " + (pki / "ca.pem").string() +
                            " --timeout 20 -o " + (dir_ / (who + ".json")).string() + " 2>&1",
                        text);
  };
  EXPECT_EQ(quote("auditor", &out), 0) << out;
  const auto ev = nlohmann::json::parse(st::ReadTextFile(dir_ / "auditor.json"));
  EXPECT_FALSE(ev.at("quote").at("signature").get<std::string>().empty());
  // Same CA, not on the allow-list: refused.
  EXPECT_NE(quote("intruder", &out), 0) << out;
  EXPECT_NE(out.find("not on the auditor allow-list"), std::string::npos) << out;
  EXPECT_FALSE(fs::exists(dir_ / "intruder.json"));
  EXPECT_EQ(daemon.Terminate(), 0) << daemon.Log();
}

}  // namespace
