#include "enforcer/metrics/process_metrics.h"

#include <time.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>

#include "base/file.h"
#include "enforcer/metrics/names.h"

namespace sovguard::metrics {
namespace {

std::string ProcDir(pid_t pid) {
  return pid == 0 ? std::string("/proc/self") : "/proc/" + std::to_string(pid);
}

// "VmRSS:    1234 kB" -> bytes.
std::uint64_t StatusKb(const std::string& status, const std::string& key, const std::string& path) {
  const auto pos = status.find("\n" + key + ":");
  if (pos == std::string::npos) throw std::runtime_error(path + ": no " + key + " line");
  std::istringstream line(status.substr(pos + key.size() + 2));
  std::uint64_t value = 0;
  std::string unit;
  if (!(line >> value)) throw std::runtime_error(path + ": " + key + ": expected a number");
  line >> unit;
  return unit == "kB" ? value * 1024 : value;
}

}  // namespace

ProcessStats ReadProcessStats(pid_t pid) {
  const std::string dir = ProcDir(pid);
  ProcessStats st;
  const std::string status_path = dir + "/status";
  const std::string status = "\n" + base::ReadFileText(status_path);
  st.vm_rss_bytes = StatusKb(status, "VmRSS", status_path);
  st.vm_hwm_bytes = StatusKb(status, "VmHWM", status_path);
  st.vm_size_bytes = StatusKb(status, "VmSize", status_path);
  st.threads = StatusKb(status, "Threads", status_path);

  // /proc/PID/stat: the command may contain spaces and ')': fields start after the last ')'.
  const std::string stat_path = dir + "/stat";
  const std::string stat = base::ReadFileText(stat_path);
  const auto close = stat.rfind(')');
  if (close == std::string::npos) throw std::runtime_error(stat_path + ": no ')' after comm");
  std::istringstream fields(stat.substr(close + 2));
  std::string f;
  // Field 3 (state) is the first after comm; utime=14, stime=15, starttime=22 (proc(5)).
  unsigned long long utime = 0, stime = 0, starttime = 0;
  for (int i = 3; i <= 22 && (fields >> f); ++i) {
    if (i == 14) utime = std::stoull(f);
    if (i == 15) stime = std::stoull(f);
    if (i == 22) starttime = std::stoull(f);
  }
  const long hz = ::sysconf(_SC_CLK_TCK);
  if (hz <= 0) throw std::runtime_error("sysconf(_SC_CLK_TCK) failed");
  st.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(hz);
  timespec now_real{}, now_boot{};
  ::clock_gettime(CLOCK_REALTIME, &now_real);
  ::clock_gettime(CLOCK_BOOTTIME, &now_boot);
  const double boot_at = static_cast<double>(now_real.tv_sec - now_boot.tv_sec) +
                         static_cast<double>(now_real.tv_nsec - now_boot.tv_nsec) / 1e9;
  st.start_time_seconds = boot_at + static_cast<double>(starttime) / static_cast<double>(hz);

  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++st.open_fds;
  }
  if (ec) throw std::runtime_error(dir + "/fd: " + ec.message());
  return st;
}

void CollectProcessMetrics(Registry& registry) {
  const ProcessStats st = ReadProcessStats();
  registry.Set(kProcessResident, {}, static_cast<double>(st.vm_rss_bytes));
  registry.Set(kProcessResidentPeak, {}, static_cast<double>(st.vm_hwm_bytes));
  registry.Set(kProcessVirtual, {}, static_cast<double>(st.vm_size_bytes));
  registry.Set(kProcessThreads, {}, static_cast<double>(st.threads));
  registry.Set(kProcessOpenFds, {}, static_cast<double>(st.open_fds));
  registry.Set(kProcessCpu, {}, st.cpu_seconds);
  registry.Set(kProcessStartTime, {}, st.start_time_seconds);
}

}  // namespace sovguard::metrics
