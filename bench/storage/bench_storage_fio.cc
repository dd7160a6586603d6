// fio on a protected volume, run from a stand-in guest cgroup (as QEMU's I/O threads would):
// throughput without the storage programs and with them (open check, per-I/O accounting and quota
// check on pread/pwrite), alternated in one run. Prints MiB/s per run and the ratio.
// SOVGUARD_BENCH_REDUCED=1: short runs (CI).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "bench/storage/bench_storage_util.h"
#include "enforcer/storage/storage_datapath.h"

namespace fs = std::filesystem;
using sovguard::storage::GuestStorage;
using sovguard::storage::StorageDatapath;
using sovguard::storage::StorageOptions;

namespace {

struct Result {
  double read_mib_s = 0, write_mib_s = 0;
  double iops = 0;
};

// Runs fio in `cgroup` (the child joins it before exec) and parses its JSON output. The file stays
// in the page cache (`--invalidate=0`; fio's default drops it before each run, and the run then
// measures the disk behind it, not the programs).
std::optional<Result> RunFio(const fs::path& cgroup, const fs::path& file, int seconds) {
  int out[2];
  if (::pipe(out) != 0) return std::nullopt;
  const pid_t pid = ::fork();
  if (pid == 0) {
    sovguard::bench::JoinCgroupOrExit(cgroup);
    ::dup2(out[1], 1);
    ::close(out[0]);
    const std::string runtime = fmt::format("--runtime={}", seconds);
    const std::string filename = "--filename=" + file.string();
    ::execlp("fio", "fio", "--name=sg", filename.c_str(), "--rw=randrw", "--bs=4k", "--size=64m",
             "--ioengine=psync", "--invalidate=0", "--time_based", runtime.c_str(),
             "--output-format=json", nullptr);
    ::_exit(127);
  }
  ::close(out[1]);
  std::string json;
  char buf[4096];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;)
    json.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return std::nullopt;
  const auto j = nlohmann::json::parse(json, nullptr, false);
  if (j.is_discarded()) return std::nullopt;
  const auto& job = j.at("jobs").at(0);
  Result r;
  r.read_mib_s = job.at("read").at("bw_bytes").get<double>() / (1 << 20);
  r.write_mib_s = job.at("write").at("bw_bytes").get<double>() / (1 << 20);
  r.iops = job.at("read").at("iops").get<double>() + job.at("write").at("iops").get<double>();
  return r;
}

}  // namespace

int main() {
  const bool reduced = std::getenv("SOVGUARD_BENCH_REDUCED") != nullptr;
  const int seconds = reduced ? 2 : 3;
  std::optional<sovguard::bench::StorageBenchScene> scene;
  try {
    scene.emplace("sgt-storage-bench");
  } catch (const std::exception& e) {
    std::cerr << "bench_storage_fio: " << e.what() << "\n";
    return 1;
  }
  const fs::path& machine = scene->machine();
  const fs::path& guest = scene->guest();
  const fs::path file = scene->dir() / "volume.img";
  {
    std::ofstream f(file, std::ios::binary);
    const std::string chunk(1 << 20, 'b');
    for (int i = 0; i < 64; ++i) f << chunk;
  }
  // Runs without and with the programs alternate (without first and last), so a drift of the
  // host's speed during the bench weighs on both sides alike; the ratio is of the means.
  const int pairs = reduced ? 1 : 9;
  int rc = 0;
  try {
    std::vector<Result> without, with;
    std::uint64_t counted = 0;
    for (int i = 0; i <= pairs; ++i) {
      const auto base = RunFio(guest, file, seconds);
      if (!base) throw std::runtime_error("fio failed");
      without.push_back(*base);
      if (i == pairs) break;
      StorageDatapath sp(StorageOptions{.machine_cgroup = machine});
      sp.ApplyPolicy(sovguard::bench::OneDatasetPolicy("bench"));
      sp.ProtectVolume(file, "bench", false);
      sp.RegisterGuestCgroup(StorageDatapath::CgroupId(guest),
                             GuestStorage{.name = "bench", .datasets = 1});
      const auto r = RunFio(guest, file, seconds);
      if (!r) throw std::runtime_error("fio failed");
      with.push_back(*r);
      for (const auto& c : sp.ReadCounters()) counted += c.read_bytes + c.write_bytes;
    }
    const auto mean = [](const std::vector<Result>& rs) {
      double iops = 0;
      for (const auto& r : rs) iops += r.iops;
      return iops / static_cast<double>(rs.size());
    };
    std::cout << fmt::format(
        "fio psync randrw 4k, {} s per run, page cache, from a guest cgroup, {} runs without and "
        "{} "
        "with the storage programs, alternated\n",
        seconds, without.size(), with.size());
    auto line = [](const std::string& what, const Result& r) {
      std::cout << fmt::format("  {:<34} read {:8.1f} MiB/s  write {:8.1f} MiB/s  {:9.0f} IOPS\n",
                               what, r.read_mib_s, r.write_mib_s, r.iops);
    };
    for (std::size_t i = 0; i < without.size(); ++i) {
      line(fmt::format("without storage programs ({})", i + 1), without[i]);
      if (i < with.size()) line(fmt::format("with accounting + checks ({})", i + 1), with[i]);
    }
    // Each "with" run against the mean of the two runs around it; the median of those is not
    // moved by one run the host slowed down.
    std::vector<double> pair;
    for (std::size_t i = 0; i < with.size(); ++i)
      pair.push_back(with[i].iops / ((without[i].iops + without[i + 1].iops) / 2));
    std::string pairs_text;
    for (const double r : pair) pairs_text += fmt::format(" {:.3f}", r);
    std::sort(pair.begin(), pair.end());
    std::cout << fmt::format("  ratio with/without (IOPS, mean of each side): {:.3f}\n",
                             mean(with) / mean(without));
    std::cout << fmt::format(
        "  ratio of each run with/its two neighbours without:{}; median {:.3f}\n", pairs_text,
        pair[pair.size() / 2]);
    std::cout << fmt::format("  bytes counted in the kernel during the runs: {} MiB\n",
                             counted >> 20);
    if (counted == 0) {
      std::cerr << "nothing was counted: the accounting did not run\n";
      rc = 1;
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_storage_fio: " << e.what() << "\n";
    rc = 1;
  }
  return rc;
}
