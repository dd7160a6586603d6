// bench_datapath_iperf: iperf3 TCP from a guest namespace through a router namespace (where the
// guest's tap would be) to a destination namespace, in one run: no filter, sg_net with the full
// world table on the guest side of the router, and nftables with an interval set of the same
// allowed (EU/EEA) IPv4 prefixes in the router's forward chain (what an operator would use today).
// Client, server and (through veth's same-CPU receive path) the filters all run on one CPU, so
// throughput is bounded by that CPU's work per byte and a filter's cost shows instead of
// drowning in scheduling noise between CPUs.
//   SOVGUARD_BENCH_REDUCED=1  1 round of 1 s per configuration (CI); default 9 rounds of 3 s,
//                             the order of the three configurations rotating every round
//   SOVGUARD_BENCH_ROUNDS=N   rounds (default 9)
//   SOVGUARD_BENCH_CPU=N      the CPU to pin to (default: the last one); -1 leaves it unpinned
//   SOVGUARD_BENCH_STRICT=1   exit 1 when a goal is missed
#include <arpa/inet.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/netns.h"
#include "tests/datapath/world_table.h"

using namespace sovguard::net;
using Clock = std::chrono::steady_clock;
using testing::Netns;
using testing::Sh;

extern char** environ;

namespace {

std::string Capture(const std::string& cmd) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen " + cmd);
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
  if (::pclose(p) != 0) throw std::runtime_error("command failed: " + cmd + "\n" + out);
  return out;
}

// One iperf3 measurement in Gbit/s: a one-off server in D, the client in G.
// UDP mode: 64-byte datagrams at full speed, the figure is thousands of packets received per
// second.
double Iperf(const Netns& g, const Netns& d, int seconds, int port, const std::string& pin,
             bool udp) {
  const std::string srv =
      pin + "ip netns exec " + d.name() + " iperf3 -s -1 -p " + std::to_string(port);
  pid_t pid = 0;
  const char* argv[] = {"/bin/sh", "-c", srv.c_str(), nullptr};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  if (posix_spawn(&pid, "/bin/sh", &fa, nullptr, const_cast<char**>(argv), environ) != 0)
    throw std::runtime_error("spawn iperf3 server");
  posix_spawn_file_actions_destroy(&fa);
  // Wait (bounded) until the server listens.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (
      Capture("ip netns exec " + d.name() + " ss -Hltn sport = :" + std::to_string(port)).empty()) {
    if (Clock::now() > until) throw std::runtime_error("iperf3 server did not start");
  }
  const std::string out = Capture(pin + "ip netns exec " + g.name() +
                                  " iperf3 -J -c 198.51.100.10 -p " + std::to_string(port) +
                                  " -t " + std::to_string(seconds) + (udp ? " -u -l 64 -b 0" : ""));
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto j = nlohmann::json::parse(out);
  if (udp) {
    const auto& sum = j.at("end").at("sum");
    return (sum.at("packets").get<double>() - sum.at("lost_packets").get<double>()) /
           sum.at("seconds").get<double>() / 1e3;
  }
  return j.at("end").at("sum_received").at("bits_per_second").get<double>() / 1e9;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

std::string V4Text(std::uint32_t a, int len) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%u.%u.%u.%u/%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
                a & 255, len);
  return buf;
}

}  // namespace

int main() {
  const bool reduced = std::getenv("SOVGUARD_BENCH_REDUCED") != nullptr;
  const bool strict = std::getenv("SOVGUARD_BENCH_STRICT") != nullptr;
  const int seconds = reduced ? 1 : 3;
  const char* rounds_env = std::getenv("SOVGUARD_BENCH_ROUNDS");
  const int rounds = reduced ? 1 : rounds_env ? std::max(1, std::atoi(rounds_env)) : 9;
  const char* cpu_env = std::getenv("SOVGUARD_BENCH_CPU");
  const long cpu = cpu_env ? std::atol(cpu_env) : ::sysconf(_SC_NPROCESSORS_ONLN) - 1;
  const std::string pin = cpu >= 0 ? "taskset -c " + std::to_string(cpu) + " " : "";
  try {
    auto world = testing::LoadWorldTable(testing::DefaultWorldTableDir());
    testing::AddDocumentationRanges(world);
    const std::string base = "sgbench" + std::to_string(::getpid());
    Netns g(base + "g"), r(base + "r"), d(base + "d");
    r.Ip("link add r0 type veth peer name g0 netns " + g.name());
    r.Ip("link add r1 type veth peer name d0 netns " + d.name());
    g.Ip("addr add 192.0.2.2/24 dev g0");
    g.Ip("link set g0 up");
    g.Ip("route add default via 192.0.2.1");
    r.Ip("addr add 192.0.2.1/24 dev r0");
    r.Ip("addr add 198.51.100.1/24 dev r1");
    r.Ip("link set r0 up");
    r.Ip("link set r1 up");
    r.Sysctl("net.ipv4.ip_forward", "1");
    d.Ip("addr add 198.51.100.10/24 dev d0");
    d.Ip("link set d0 up");
    d.Ip("route add default via 198.51.100.1");
    const unsigned tap = r.IfIndex("r0");

    // nftables: the allowed set of dataset 0 (EU/EEA + the DE-mapped test range) as intervals.
    const std::string nft_file = "/tmp/" + base + ".nft";
    std::size_t nft_prefixes = 0;
    {
      std::ofstream f(nft_file);
      f << "table ip sgbench {\n set allow { type ipv4_addr; flags interval; auto-merge; elements "
           "= {\n";
      bool first = true;
      for (const auto& e : world.policy.ipv4)
        if (world.policy.classes[e.class_id].allowed_datasets & 1) {
          f << (first ? "" : ",\n") << V4Text(e.addr, e.len);
          first = false;
          ++nft_prefixes;
        }
      f << "\n } }\n chain sgforward { type filter hook forward priority 0; policy accept;\n"
        << "  iifname \"r0\" ip daddr != @allow drop\n }\n}\n";
    }

    NetDatapath dp;
    auto t = Clock::now();
    dp.ApplyPolicy(world.policy);
    const double sg_load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
    double nft_load_ms = 0;
    bool goal = true;
    int port = 5301;
    // "tcp": segmentation offload on, as on a virtio guest's tap (up to 64 KiB frames cross the
    // filter once), so a filter's per-packet cost hides in the copy cost. "udp64"
    // (SOVGUARD_BENCH_UDP=1): 64-byte UDP datagrams, every packet crosses the filter and the
    // per-packet cost shows. (TCP with gso_max_segs 1 was tried: the sender then caps every
    // configuration at ~0.5 Gbit/s, within noise of each other.)
    std::vector<std::string> modes = {"tcp"};
    if (std::getenv("SOVGUARD_BENCH_UDP")) modes.push_back("udp64");
    for (const std::string& mode : modes) {
      const bool udp = mode == "udp64";
      std::map<std::string, std::vector<double>> gbps;
      const char* order[] = {"none", "sg_net", "nftables"};
      for (int round = 0; round < rounds; ++round) {
        // Rotate which configuration goes first so slow drift does not favour one of them.
        for (int k = 0; k < 3; ++k) {
          const std::string which = order[(round + k) % 3];
          if (which == "none") {
            gbps["none"].push_back(Iperf(g, d, seconds, port++, pin, udp));
          } else if (which == "sg_net") {
            dp.AddGuest({.name = "bench", .ifindex = tap, .datasets = 1, .netns = r.path()});
            gbps["sg_net"].push_back(Iperf(g, d, seconds, port++, pin, udp));
            const auto c = dp.ReadCounters(tap, 0);
            dp.RemoveGuest(tap);
            if (c.packets == 0) throw std::runtime_error("sg_net saw no traffic: not attached?");
            if (c.dropped_packets != 0)
              throw std::runtime_error("sg_net dropped allowed iperf traffic");
          } else {
            t = Clock::now();
            Sh("ip netns exec " + r.name() + " nft -f " + nft_file);
            nft_load_ms = std::chrono::duration<double, std::milli>(Clock::now() - t).count();
            gbps["nftables"].push_back(Iperf(g, d, seconds, port++, pin, udp));
            Sh("ip netns exec " + r.name() + " nft delete table ip sgbench");
          }
        }
      }
      const double none = Median(gbps["none"]), sg = Median(gbps["sg_net"]),
                   nft = Median(gbps["nftables"]);
      auto runs = [&](const char* k) {
        std::string out;
        char buf[32];
        for (double v : gbps[k]) {
          std::snprintf(buf, sizeof(buf), out.empty() ? "%.2f" : " %.2f", v);
          out += buf;
        }
        return out;
      };
      std::printf("[%s] iperf3 G -> R -> D over veth, %d round(s) of %d s, %s, median %s\n",
                  mode.c_str(), rounds, seconds,
                  cpu >= 0 ? ("pinned to CPU " + std::to_string(cpu)).c_str() : "unpinned",
                  udp ? "kpps received" : "Gbit/s");
      std::printf("  no filter : %6.2f  [%s]\n", none, runs("none").c_str());
      std::printf("  sg_net    : %6.2f  [%s]  %.1f%% of no filter\n", sg, runs("sg_net").c_str(),
                  100 * sg / none);
      std::printf("  nftables  : %6.2f  [%s]  %.1f%% of no filter\n", nft, runs("nftables").c_str(),
                  100 * nft / none);
      // Rounds interleave the three configurations; per-round ratios cancel part of the drift.
      std::vector<double> sg_ratio, nft_ratio;
      for (std::size_t i = 0; i < gbps["none"].size(); ++i) {
        sg_ratio.push_back(gbps["sg_net"][i] / gbps["none"][i]);
        nft_ratio.push_back(gbps["nftables"][i] / gbps["none"][i]);
      }
      std::printf("  median of per-round ratios: sg_net %.1f%%, nftables %.1f%%\n",
                  100 * Median(sg_ratio), 100 * Median(nft_ratio));
      if (!udp) goal = goal && sg >= 0.95 * none && sg > nft;
    }
    std::remove(nft_file.c_str());
    std::printf(
        "sg_net: world table %zu v4 + %zu v6 prefixes, load %.0f ms; nftables: interval set "
        "of %zu allowed IPv4 prefixes, load %.0f ms\n",
        world.policy.ipv4.size(), world.policy.ipv6.size(), sg_load_ms, nft_prefixes, nft_load_ms);
    std::printf("goal (>= 95%% of no filter and faster than nftables): %s\n",
                goal ? "met" : "MISSED");
    return strict && !goal ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_datapath_iperf: %s\n", e.what());
    return 1;
  }
}
