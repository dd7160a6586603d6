// fio on a protected volume, run from a stand-in guest cgroup (as QEMU's I/O threads would):
// throughput without the storage programs, with them (open check, per-I/O accounting and quota
// check on pread/pwrite), and without again, in one run. Prints MiB/s and the ratio.
// SOVGUARD_BENCH_REDUCED=1: short runs (CI).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>

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
  const int seconds = reduced ? 2 : 10;
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
  int rc = 0;
  try {
    const auto base1 = RunFio(guest, file, seconds);
    std::optional<Result> with;
    std::uint64_t counted = 0;
    {
      StorageDatapath sp(StorageOptions{.machine_cgroup = machine});
      sp.ApplyPolicy(sovguard::bench::OneDatasetPolicy("bench"));
      sp.ProtectVolume(file, "bench", false);
      sp.RegisterGuestCgroup(StorageDatapath::CgroupId(guest),
                             GuestStorage{.name = "bench", .datasets = 1});
      with = RunFio(guest, file, seconds);
      for (const auto& c : sp.ReadCounters()) counted += c.read_bytes + c.write_bytes;
    }
    const auto base2 = RunFio(guest, file, seconds);
    if (!base1 || !with || !base2) throw std::runtime_error("fio failed");
    const double base_iops = (base1->iops + base2->iops) / 2;
    std::cout << fmt::format("fio psync randrw 4k, {} s per run, page cache, from a guest cgroup\n",
                             seconds);
    auto line = [](const char* what, const Result& r) {
      std::cout << fmt::format("  {:<34} read {:8.1f} MiB/s  write {:8.1f} MiB/s  {:9.0f} IOPS\n",
                               what, r.read_mib_s, r.write_mib_s, r.iops);
    };
    line("without storage programs", *base1);
    line("with accounting + checks", *with);
    line("without storage programs (again)", *base2);
    std::cout << fmt::format("  ratio with/without (IOPS, mean of both baselines): {:.3f}\n",
                             with->iops / base_iops);
    std::cout << fmt::format("  bytes counted in the kernel during the run: {} MiB\n",
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
