// sovguardd's memory with the full world jurisdiction table and the shipped default policy (the
// default configuration): VmRSS/VmHWM right after start-up and after N attestation API calls.
// Goal: <= 64 MiB resident. Measure a Release build: a Debug build carries ASan, whose
// shadow memory and quarantine multiply resident memory.
//
//   bench_daemon_memory [--calls N] [--clients C]
//   SOVGUARD_BENCH_REDUCED=1: N = 200 (CI: checks the benchmark works and prints the figures).
//
// Needs root and no hardware TPM (the daemon then starts a software TPM of its own).
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "attestation/service/attestation_service.grpc.pb.h"
#include "enforcer/metrics/process_metrics.h"
#include "tests/support/daemon_process.h"

namespace fs = std::filesystem;
namespace st = sovguard::test;
namespace sm = sovguard::metrics;
namespace v1 = sovguard::attestation::v1;
using namespace std::chrono_literals;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;
constexpr double kGoalMiB = 64;

// RssAnon/RssFile/RssShmem from /proc/PID/status, in bytes: where the resident memory is.
std::map<std::string, double> RssBreakdown(pid_t pid) {
  std::istringstream in(st::ReadTextFile("/proc/" + std::to_string(pid) + "/status"));
  std::map<std::string, double> out;
  std::string line;
  while (std::getline(in, line)) {
    for (const char* key : {"RssAnon", "RssFile", "RssShmem"}) {
      if (line.starts_with(std::string(key) + ":")) {
        out[key] = std::stod(line.substr(std::string(key).size() + 1)) * 1024;
      }
    }
  }
  return out;
}

// Resident memory by mapping (file path, [heap], [anon]...) from /proc/PID/smaps, largest first:
// where to look when the goal is missed.
void PrintTopMappings(pid_t pid, std::size_t top) {
  std::istringstream in(st::ReadTextFile("/proc/" + std::to_string(pid) + "/smaps"));
  std::map<std::string, double> by_name;
  std::string line, current = "[anon]";
  while (std::getline(in, line)) {
    if (line.starts_with("Rss:")) {
      by_name[current] += std::stod(line.substr(4)) * 1024;
    } else if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
               line.find('-') < line.find(' ')) {
      // "start-end perms offset dev inode [path]": the path is the 6th field, if any.
      std::istringstream f(line);
      std::string field, path;
      for (int i = 0; i < 5; ++i) f >> field;
      std::getline(f >> std::ws, path);
      current = path.empty() ? "[anon]" : path;
    }
  }
  std::vector<std::pair<double, std::string>> sorted;
  for (const auto& [name, rss] : by_name) sorted.emplace_back(rss, name);
  std::sort(sorted.rbegin(), sorted.rend());
  std::cout << "largest resident mappings:\n";
  for (std::size_t i = 0; i < std::min(top, sorted.size()); ++i)
    std::cout << fmt::format("  {:7.1f} MiB  {}\n", sorted[i].first / kMiB, sorted[i].second);
}

void Print(const char* when, pid_t pid) {
  const auto s = sm::ReadProcessStats(pid);
  auto b = RssBreakdown(pid);
  std::cout << fmt::format(
      "{:<28} VmRSS {:7.1f} MiB  VmHWM {:7.1f} MiB  (anon {:.1f}, file {:.1f}, shmem {:.1f})  "
      "threads {}  fds {}\n",
      when, static_cast<double>(s.vm_rss_bytes) / kMiB, static_cast<double>(s.vm_hwm_bytes) / kMiB,
      b["RssAnon"] / kMiB, b["RssFile"] / kMiB, b["RssShmem"] / kMiB, s.threads, s.open_fds);
}

}  // namespace

int main(int argc, char** argv) {
  int calls = std::getenv("SOVGUARD_BENCH_REDUCED") ? 200 : 2000;
  int clients = 10;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--calls") {
      calls = std::stoi(argv[i + 1]);
    } else if (a == "--clients") {
      clients = std::stoi(argv[i + 1]);
    } else {
      std::cerr << "usage: bench_daemon_memory [--calls N] [--clients C]\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cout << "bench_daemon_memory: needs root (BPF, TPM, libvirt); skipped\n";
    return 0;
  }
  if (fs::exists("/dev/tpmrm0")) {
    std::cout << "bench_daemon_memory: hardware TPM present; not extending its PCRs; skipped\n";
    return 0;
  }
  const st::ServicesAsFound services;
  const fs::path dir = fs::temp_directory_path() / ("sg-bench-mem-" + std::to_string(::getpid()));
  int rc = 0;
  try {
    st::DaemonProcess daemon(dir,
                             {"--data-dir", std::string(SOVGUARD_SOURCE_DIR) + "/policy/data"});
    std::string why;
    if (!daemon.WaitReady(180s, &why)) throw std::runtime_error(why);
    const auto status = daemon.Status();
    std::cout << fmt::format("sovguardd {} ({} build of this benchmark), pid {}\n",
                             status.value("version", "?"), SOVGUARD_BENCH_BUILD_TYPE, daemon.Pid());
    Print("after start", daemon.Pid());
    PrintTopMappings(daemon.Pid(), 6);

    const std::string target = status.at("api_socket").get<std::string>();
    std::atomic<int> next{0}, failed{0};
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int c = 0; c < clients; ++c) {
      threads.emplace_back([&] {
        grpc::ChannelArguments args;
        args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
        args.SetMaxReceiveMessageSize(64 << 20);
        auto stub = v1::Attestation::NewStub(
            grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
        for (int i = next++; i < calls; i = next++) {
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + 60s);
          grpc::Status s;
          if (i % 2 == 0) {
            v1::QuoteRequest req;
            req.set_nonce(fmt::format("bench-nonce-{:08}", i));
            v1::Evidence ev;
            s = stub->Quote(&ctx, req, &ev);
          } else {
            v1::Identity id;
            s = stub->GetIdentity(&ctx, v1::IdentityRequest(), &id);
          }
          if (!s.ok()) ++failed;
        }
      });
    }
    for (auto& t : threads) t.join();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << fmt::format(
        "{} API calls (half Quote, half GetIdentity) from {} clients in "
        "{:.1f} s, {} failed\n",
        calls, clients, secs, failed.load());
    Print(fmt::format("after {} calls", calls).c_str(), daemon.Pid());
    PrintTopMappings(daemon.Pid(), 10);
    const auto s = sm::ReadProcessStats(daemon.Pid());
    const double hwm = static_cast<double>(s.vm_hwm_bytes) / kMiB;
    std::cout << fmt::format("peak resident {:.1f} MiB; goal <= {:.0f} MiB: {}\n", hwm, kGoalMiB,
                             hwm <= kGoalMiB ? "met" : "NOT met");
    if (failed > 0) rc = 1;
    if (daemon.Terminate() != 0) {
      std::cerr << "sovguardd did not stop cleanly:\n" << daemon.Log();
      rc = 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_daemon_memory: " << e.what() << "\n";
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  return rc;
}
