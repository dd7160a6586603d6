// The live /metrics server on loopback, through a raw socket client (and curl when installed):
// status codes, content type, exposition body, IPv4 and IPv6 loopback, refusal of other addresses,
// bounded request size and idle time, and no descriptor left behind.
#include "enforcer/metrics/http_server.h"
#include "base/unique_fd.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "enforcer/metrics/names.h"

namespace sm = sovguard::metrics;
using namespace std::chrono_literals;

namespace {

std::size_t OpenFds() {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
  return n;
}

// Connects to the server's address, sends `request` and reads until the server closes or the
// deadline passes. Returns what was read; `closed` says whether the server closed the connection.
std::string Exchange(const sm::MetricsServer& server, const std::string& request,
                     std::chrono::milliseconds deadline = 5000ms, bool* closed = nullptr) {
  const auto where = sm::ParseListenAddress(server.address());
  const sovguard::base::UniqueFd s(::socket(where.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  EXPECT_TRUE(s);
  if (::connect(s.Get(), reinterpret_cast<const sockaddr*>(&where.addr), where.len) != 0) {
    ADD_FAILURE() << "connect " << server.address() << ": " << std::strerror(errno);
    return {};
  }
  std::size_t sent = 0;
  while (sent < request.size()) {
    const ssize_t n = ::send(s.Get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) break;  // the server may close early on an oversized request
    sent += static_cast<std::size_t>(n);
  }
  std::string out;
  const auto end = std::chrono::steady_clock::now() + deadline;
  if (closed) *closed = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        end - std::chrono::steady_clock::now());
    if (left <= 0ms) break;
    pollfd p{.fd = s.Get(), .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    const ssize_t n = ::recv(s.Get(), buf, sizeof buf, 0);
    if (n <= 0) {
      if (closed) *closed = true;
      break;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

std::string Get(const sm::MetricsServer& server, const std::string& method,
                const std::string& path) {
  return Exchange(server,
                  method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

int StatusCode(const std::string& response) {
  if (!response.starts_with("HTTP/1.1 ")) return -1;
  return std::stoi(response.substr(9, 3));
}

TEST(MetricsServer, ServesMetricsOnIpv4Loopback) {
  sm::Registry registry;
  registry.DeclareAll(sm::kAllMetrics);
  registry.Inc(sm::kErrors, {std::string(sm::kErrorTpm)}, 3);
  registry.Inc(sm::kGuestPackets, {"vm\"1", "eu-health", std::string(sm::kVerdictDrop)}, 7);
  const std::size_t fds_before = OpenFds();
  {
    sm::MetricsServer server(registry, {.listen = "127.0.0.1:0"});
    ASSERT_NE(server.port(), 0);
    EXPECT_EQ(server.address(), "127.0.0.1:" + std::to_string(server.port()));

    const std::string r = Get(server, "GET", "/metrics");
    ASSERT_EQ(StatusCode(r), 200) << r;
    EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
              std::string::npos)
        << r;
    const std::string body = r.substr(r.find("\r\n\r\n") + 4);
    EXPECT_TRUE(body.starts_with("# HELP ")) << body;
    EXPECT_NE(body.find("\nsovguard_errors_total{kind=\"tpm\"} 3\n"), std::string::npos);
    EXPECT_NE(body.find("\nsovguard_guest_packets_total{guest=\"vm\\\"1\",dataset=\"eu-health\","
                        "verdict=\"drop\"} 7\n"),
              std::string::npos)
        << body;
    // The scrape itself is counted (the counter is bumped before rendering).
    EXPECT_NE(body.find("\nsovguard_metrics_scrapes_total 1\n"), std::string::npos);
    EXPECT_EQ(StatusCode(Get(server, "GET", "/metrics?x=1")), 200);
    EXPECT_EQ(registry.Value(sm::kScrapes), 2);

    EXPECT_EQ(StatusCode(Get(server, "GET", "/")), 404);
    EXPECT_EQ(StatusCode(Get(server, "GET", "/metrics/")), 404);
    EXPECT_EQ(StatusCode(Get(server, "GET", "/../metrics")), 404);
    const std::string post = Exchange(server,
                                      "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                                      "Connection: close\r\n\r\nabcd");
    EXPECT_EQ(StatusCode(post), 405) << post;
    EXPECT_NE(post.find("Allow: GET\r\n"), std::string::npos) << post;
    EXPECT_EQ(StatusCode(Get(server, "DELETE", "/metrics")), 405);
    EXPECT_EQ(registry.Value(sm::kScrapes), 2) << "only GET /metrics counts as a scrape";

    // A request larger than the per-connection memory is refused, not buffered.
    bool closed = false;
    const std::string huge = Exchange(
        server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(64 * 1024, 'a') + "\r\n\r\n",
        5000ms, &closed);
    EXPECT_TRUE(closed);
    EXPECT_TRUE(huge.empty() || StatusCode(huge) >= 400) << huge.substr(0, 200);

    // Garbage is answered with an error (or a close), and the server keeps serving.
    const std::string junk = Exchange(server, "\x01\x02 not http\r\n\r\n", 5000ms, &closed);
    EXPECT_TRUE(closed);
    EXPECT_TRUE(junk.empty() || StatusCode(junk) >= 400) << junk;
    EXPECT_EQ(StatusCode(Get(server, "GET", "/metrics")), 200);
  }
  EXPECT_EQ(OpenFds(), fds_before) << "server left a descriptor open";
}

TEST(MetricsServer, ConcurrentScrapesWhileTheDaemonUpdates) {
  sm::Registry registry;
  registry.DeclareAll(sm::kAllMetrics);
  sm::MetricsServer server(registry, {.listen = "127.0.0.1:0"});
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (int i = 0; i < 100000 && !stop; ++i) {  // bounded: stops with the scrapers at the latest
      registry.Inc(sm::kGuestPackets, {"vm" + std::to_string(i % 50), "eu", "pass"});
      registry.Observe(sm::kTpmQuoteDuration, {}, 0.01 * (i % 7));
    }
  });
  constexpr int kScrapers = 8, kEach = 20;
  std::atomic<int> ok{0};
  std::vector<std::thread> scrapers;
  for (int t = 0; t < kScrapers; ++t) {
    scrapers.emplace_back([&] {
      for (int i = 0; i < kEach; ++i) {
        const std::string r = Get(server, "GET", "/metrics");
        // Every page is complete: it ends with the last family's last line.
        if (StatusCode(r) == 200 && r.ends_with("\n") &&
            r.find("# TYPE sovguard_violations_total counter\n") != std::string::npos)
          ++ok;
      }
    });
  }
  for (auto& s : scrapers) s.join();
  stop = true;
  writer.join();
  EXPECT_EQ(ok.load(), kScrapers * kEach);
  EXPECT_EQ(registry.Value(sm::kScrapes), kScrapers * kEach);
}

TEST(MetricsServer, IdleConnectionsAreClosed) {
  sm::Registry registry;
  sm::MetricsServer server(registry, {.listen = "127.0.0.1:0", .idle_timeout = 1s});
  bool closed = false;
  const auto t0 = std::chrono::steady_clock::now();
  const std::string partial = Exchange(server, "GET /metr", 8000ms, &closed);
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_TRUE(closed) << "a half-sent request must not hold a connection forever";
  EXPECT_LT(took, 5s);
  EXPECT_EQ(StatusCode(Get(server, "GET", "/metrics")), 200);
}

TEST(MetricsServer, ServesOnIpv6LoopbackAndThroughCurl) {
  sm::Registry registry;
  registry.Set(sm::kBuildInfo, {"1.2.3"}, 1);
  sm::MetricsServer server(registry, {.listen = "[::1]:0"});
  EXPECT_EQ(server.address(), "[::1]:" + std::to_string(server.port()));
  const std::string r = Get(server, "GET", "/metrics");
  ASSERT_EQ(StatusCode(r), 200) << r;
  EXPECT_NE(r.find("sovguard_build_info{version=\"1.2.3\"} 1\n"), std::string::npos);
  if (::access("/usr/bin/curl", X_OK) == 0) {
    const std::string cmd = "curl -gsf --max-time 10 http://" + server.address() + "/metrics";
    FILE* p = ::popen(cmd.c_str(), "r");
    ASSERT_NE(p, nullptr);
    std::string out;
    char buf[4096];
    while (const std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    EXPECT_EQ(::pclose(p), 0) << cmd;
    EXPECT_NE(out.find("sovguard_build_info{version=\"1.2.3\"} 1\n"), std::string::npos) << out;
  }
}

TEST(MetricsServer, RefusesNonLoopbackUnlessAllowedAndBadAddresses) {
  sm::Registry registry;
  for (const char* addr : {"0.0.0.0:0", "[::]:0", "192.0.2.1:9477"}) {
    try {
      sm::MetricsServer server(registry, {.listen = addr});
      ADD_FAILURE() << addr << " accepted";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("not a loopback address"), std::string::npos)
          << e.what();
    }
  }
  for (const char* addr : {"", "9477", "127.0.0.1", "127.0.0.1:", "127.0.0.1:65536",
                           "127.0.0.1:12x", "[::1]9477", "::1:9477", "example.org:80"}) {
    EXPECT_THROW(sm::ParseListenAddress(addr), std::invalid_argument) << addr;
  }
  EXPECT_EQ(sm::ParseListenAddress("localhost:80").text, "127.0.0.1:80");
  EXPECT_TRUE(sm::ParseListenAddress("127.8.9.1:1").loopback);
  EXPECT_FALSE(sm::ParseListenAddress("[2001:db8::1]:1").loopback);
  // Explicitly allowed: any address binds (0.0.0.0 here, an ephemeral port).
  sm::MetricsServer open(registry, {.listen = "0.0.0.0:0", .allow_non_loopback = true});
  EXPECT_NE(open.port(), 0);
}

TEST(MetricsServer, BindErrorNamesTheAddress) {
  sm::Registry registry;
  sm::MetricsServer first(registry, {.listen = "127.0.0.1:0"});
  try {
    sm::MetricsServer second(registry, {.listen = first.address()});
    FAIL() << "second bind on " << first.address() << " succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bind " + first.address()), std::string::npos) << e.what();
  }
}

TEST(MetricsServer, CollectorFailureIsA500NotAPartialPage) {
  sm::Registry registry;
  registry.AddCollector([](sm::Registry&) { throw std::runtime_error("map read failed"); });
  std::string logged;
  sm::MetricsServer server(
      registry, {.listen = "127.0.0.1:0", .log = [&](const std::string& m) { logged += m; }});
  EXPECT_EQ(StatusCode(Get(server, "GET", "/metrics")), 500);
  EXPECT_NE(logged.find("map read failed"), std::string::npos) << logged;
  EXPECT_EQ(registry.Value(sm::kErrors, {"metrics"}), 1);
}

}  // namespace
