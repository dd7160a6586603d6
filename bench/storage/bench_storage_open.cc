// Cost of one open()+close() from a stand-in guest cgroup holding the dataset, in one run:
//   none        no storage programs, no fanotify mark (baseline, measured first and last)
//   tracepoint  the tracepoint + SIGKILL rung alone (forced fallback)
//   fanotify    the fanotify rung (FAN_OPEN_PERM answered by this process, tracepoints underneath)
// for a protected volume (allowed: the guest holds its dataset) and for an unprotected file in the
// same directory. Prints ns per open and the ratios to the baseline.
// SOVGUARD_BENCH_REDUCED=1: fewer opens (CI).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>

#include "bench/storage/bench_storage_util.h"
#include "enforcer/storage/storage_datapath.h"

namespace fs = std::filesystem;
using namespace sovguard::storage;  // NOLINT

namespace {

// ns per open()+close() of `file`, measured by a child that joined `cgroup`.
std::optional<double> OpenCost(const fs::path& cgroup, const fs::path& file, long opens) {
  int out[2];
  if (::pipe(out) != 0) return std::nullopt;
  const pid_t pid = ::fork();
  if (pid == 0) {
    sovguard::bench::JoinCgroupOrExit(cgroup);
    for (long i = 0; i < opens / 10; ++i) ::close(::open(file.c_str(), O_RDONLY));  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < opens; ++i) {
      const int f = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
      if (f < 0) ::_exit(101);
      ::close(f);
    }
    const double ns =
        std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
        static_cast<double>(opens);
    if (::write(out[1], &ns, sizeof ns) != sizeof ns) ::_exit(102);
    ::_exit(0);
  }
  ::close(out[1]);
  double ns = 0;
  const bool got = ::read(out[0], &ns, sizeof ns) == sizeof ns;
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!got || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::fprintf(stderr, "opener failed (status %d)\n", status);
    return std::nullopt;
  }
  return ns;
}

}  // namespace

int main() {
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_storage_open: needs root\n");
    return 1;
  }
  const long opens = std::getenv("SOVGUARD_BENCH_REDUCED") ? 5000 : 100000;
  std::optional<sovguard::bench::StorageBenchScene> scene;
  try {
    scene.emplace("sgt-bench-open");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_storage_open: %s\n", e.what());
    return 1;
  }
  const fs::path& machine = scene->machine();
  const fs::path& guest = scene->guest();
  const fs::path protected_file = scene->dir() / "protected.img",
                 plain = scene->dir() / "plain.img";
  std::ofstream(protected_file) << "x";
  std::ofstream(plain) << "x";

  int rc = 0;
  struct Row {
    const char* name;
    double protected_ns = 0, plain_ns = 0;
  };
  Row rows[4] = {{"none"}, {"tracepoint"}, {"fanotify"}, {"none (again)"}};
  auto measure = [&](Row& row) {
    const auto a = OpenCost(guest, protected_file, opens);
    const auto b = OpenCost(guest, plain, opens);
    if (!a || !b) rc = 1;
    row.protected_ns = a.value_or(0);
    row.plain_ns = b.value_or(0);
  };
  try {
    measure(rows[0]);
    for (int i : {1, 2}) {
      StorageDatapath sp(
          StorageOptions{.machine_cgroup = machine, .force_tracepoint_fallback = i == 1});
      sp.ApplyPolicy(sovguard::bench::OneDatasetPolicy("health"));
      sp.RegisterGuestCgroup(StorageDatapath::CgroupId(guest),
                             GuestStorage{.name = "bench", .datasets = 1});
      sp.ProtectVolume(protected_file, "health", false);
      const std::string mech = sp.Status().Find("storage-open")->mechanism;
      std::printf("%s: storage-open %s\n", rows[i].name, mech.c_str());
      if (i == 2 && mech != "fanotify:open_perm") {
        std::fprintf(stderr, "fanotify rung not selected (%s)\n", mech.c_str());
        rc = 1;
      }
      measure(rows[i]);
    }
    measure(rows[3]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_storage_open: %s\n", e.what());
    rc = 1;
  }
  const double base_p = (rows[0].protected_ns + rows[3].protected_ns) / 2;
  const double base_u = (rows[0].plain_ns + rows[3].plain_ns) / 2;
  std::printf("%ld opens each, from a guest cgroup holding the dataset\n", opens);
  std::printf("%-14s %16s %8s %16s %8s\n", "config", "protected ns", "ratio", "unprotected ns",
              "ratio");
  for (const Row& r : rows) {
    std::printf("%-14s %16.0f %8.2f %16.0f %8.2f\n", r.name, r.protected_ns,
                base_p > 0 ? r.protected_ns / base_p : 0, r.plain_ns,
                base_u > 0 ? r.plain_ns / base_u : 0);
  }
  return rc;
}
