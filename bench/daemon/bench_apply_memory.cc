// Where sovguardd's start-up peak comes from: the steps the daemon runs to apply its default
// configuration (shipped policy, full world jurisdiction table), in this process, with the peak
// resident memory of each step (VmHWM reset through /proc/self/clear_refs before it) and the
// resident memory left after it.
//
//   bench_apply_memory [--data-dir DIR] [--apply-twice] [--max-apply-mib N]
//   --max-apply-mib N: exit 1 when NetDatapath::ApplyPolicy raises the peak by more than N MiB
//   over what was resident before it (ctest: the tables must never be held whole).
//
// Needs root (BPF). Measure a Release build (ASan multiplies every figure).
#include <malloc.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "enforcer/net/net_datapath.h"
#include "policy/compile/compile.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

struct Mem {
  double rss = 0, hwm = 0;
};

Mem ReadMem() {
  std::ifstream in("/proc/self/status");
  std::string line;
  Mem m;
  while (std::getline(in, line)) {
    if (line.starts_with("VmRSS:")) m.rss = std::stod(line.substr(6)) * 1024 / kMiB;
    if (line.starts_with("VmHWM:")) m.hwm = std::stod(line.substr(6)) * 1024 / kMiB;
  }
  return m;
}

// "5" resets the peak (VmHWM) to the current resident size (Linux >= 4.0).
void ResetPeak() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  if (!out) throw std::runtime_error("cannot write /proc/self/clear_refs");
}

// Returns how far the step raised the peak above what was resident before it, in MiB.
double Step(const char* name, const std::function<void()>& f) {
  const Mem before = ReadMem();
  ResetPeak();
  const auto t0 = std::chrono::steady_clock::now();
  f();
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const Mem after = ReadMem();
  std::cout << fmt::format("{:<34} {:8.0f} ms  peak {:6.1f} MiB (+{:5.1f})  after {:6.1f} MiB\n",
                           name, ms, after.hwm, after.hwm - before.rss, after.rss);
  return after.hwm - before.rss;
}

}  // namespace

int main(int argc, char** argv) {
  namespace policy = sovguard::policy;
  namespace net = sovguard::net;
  std::string data_dir = std::string(SOVGUARD_SOURCE_DIR) + "/policy/data";
  bool twice = false;
  std::optional<double> max_apply_mib;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--data-dir" && i + 1 < argc) {
      data_dir = argv[++i];
    } else if (a == "--apply-twice") {
      twice = true;
    } else if (a == "--max-apply-mib" && i + 1 < argc) {
      max_apply_mib = std::stod(argv[++i]);
    } else {
      std::cerr
          << "usage: bench_apply_memory [--data-dir DIR] [--apply-twice] [--max-apply-mib N]\n";
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::cout << "bench_apply_memory: needs root (BPF); skipped\n";
    return 0;
  }
  try {
    std::cout << fmt::format("start: VmRSS {:.1f} MiB\n", ReadMem().rss);
    std::optional<policy::ValidatedPolicy> validated;
    std::optional<policy::JurisdictionTable> table;
    policy::CompiledPolicy compiled;
    std::optional<net::NetDatapath> dp;
    Step("load policy (default-eu-eea)", [&] {
      auto r = policy::LoadPolicyFiles({data_dir + "/default-eu-eea.textproto"});
      if (!r.ok()) throw std::runtime_error("default policy invalid");
      validated = std::move(*r.policy);
    });
    Step("load world.sgjt", [&] {
      std::string error;
      table = policy::JurisdictionTable::Load(data_dir + "/world.sgjt", &error);
      if (!table) throw std::runtime_error(error);
    });
    Step("compile", [&] { compiled = policy::Compile(*validated, *table); });
    Step("NetDatapath (load program)", [&] { dp.emplace(); });
    const double apply_mib = Step("NetDatapath::ApplyPolicy", [&] { dp->ApplyPolicy(compiled); });
    if (twice) Step("NetDatapath::ApplyPolicy again", [&] { dp->ApplyPolicy(compiled); });
    Step("CompileStorage", [&] { (void)policy::CompileStorage(*validated, compiled); });
    Step("verify (table hashes)", [&] {
      if (!dp->VerifyAttachments().empty()) throw std::runtime_error("tables differ from digests");
    });
    Step("release table + malloc_trim", [&] {
      table.reset();
      // (`v = {}` would keep the capacity: it assigns an empty initializer_list.)
      std::vector<policy::Ipv4Prefix>().swap(compiled.ipv4);
      std::vector<policy::Ipv6Prefix>().swap(compiled.ipv6);
      ::malloc_trim(0);
    });
    std::cout << fmt::format("end: VmRSS {:.1f} MiB\n", ReadMem().rss);
    if (max_apply_mib) {
      const bool ok = apply_mib <= *max_apply_mib;
      std::cout << fmt::format("ApplyPolicy raised the peak by {:.1f} MiB; limit {:.0f} MiB: {}\n",
                               apply_mib, *max_apply_mib, ok ? "ok" : "EXCEEDED");
      if (!ok) return 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_apply_memory: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
