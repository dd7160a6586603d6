// Benchmark: compile the full world jurisdiction table with the default EU/EEA policy into the
// kernel view. Prints wall seconds per step and the process's peak RSS (getrusage).
//   bench_policy_compile [--table world.sgjt] [--policy P] [--from country-ip-blocks] [--repeat N]
#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "base/hex.h"
#include "policy/compile/compile.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"

namespace {

using Clock = std::chrono::steady_clock;

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

long PeakRssKiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;  // KiB on Linux
}

}  // namespace

int main(int argc, char** argv) {
  using namespace sovguard::policy;
  std::string table_path = std::string(SOVGUARD_SOURCE_DIR) + "/policy/data/world.sgjt";
  std::string policy_path =
      std::string(SOVGUARD_SOURCE_DIR) + "/policy/data/default-eu-eea.textproto";
  std::string from;
  int repeat = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--table")
      table_path = argv[i + 1];
    else if (a == "--policy")
      policy_path = argv[i + 1];
    else if (a == "--from")
      from = argv[i + 1];
    else if (a == "--repeat")
      repeat = std::max(1, std::atoi(argv[i + 1]));
    else {
      std::cerr
          << "usage: bench_policy_compile [--table F] [--policy P] [--from DIR] [--repeat N]\n";
      return 2;
    }
  }
  std::string error;
  if (!from.empty()) {
    const auto t = Clock::now();
    auto built = JurisdictionTable::FromCountryIpBlocks(from, &error);
    if (!built) {
      std::cerr << error << "\n";
      return 1;
    }
    std::cout << "build table from " << from << ": " << Since(t) << " s\n";
  }
  auto t = Clock::now();
  auto table = JurisdictionTable::Load(table_path, &error);
  if (!table) {
    std::cerr << error << "\n";
    return 1;
  }
  std::cout << "load table: " << Since(t) << " s (" << table->v4().size() << " IPv4, "
            << table->v6().size() << " IPv6 prefixes)\n";
  t = Clock::now();
  auto policy = LoadPolicyFiles({policy_path});
  if (!policy.ok()) {
    for (const auto& d : policy.diagnostics) std::cerr << d.ToString() << "\n";
    return 1;
  }
  std::cout << "load policy: " << Since(t) << " s\n";
  double best = 1e9, total = 0;
  std::string digest;
  std::size_t v4 = 0, v6 = 0, classes = 0;
  for (int i = 0; i < repeat; ++i) {
    t = Clock::now();
    const auto compiled = Compile(*policy.policy, *table);
    const double s = Since(t);
    best = std::min(best, s);
    total += s;
    const auto d = sovguard::base::ToHex(compiled.digest);
    if (!digest.empty() && d != digest) {
      std::cerr << "non-deterministic compile: digest changed between runs\n";
      return 1;
    }
    digest = d;
    v4 = compiled.ipv4.size();
    v6 = compiled.ipv6.size();
    classes = compiled.classes.size();
  }
  std::cout << "compile: best " << best << " s, mean " << total / repeat << " s over " << repeat
            << " runs (" << v4 << " IPv4 + " << v6 << " IPv6 entries, " << classes << " classes)\n"
            << "digest: " << digest << "\n"
            << "peak RSS: " << static_cast<double>(PeakRssKiB()) / 1024.0 << " MiB\n";
  return 0;
}
