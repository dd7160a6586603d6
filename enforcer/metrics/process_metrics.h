// Memory, CPU, fds and threads of a process from /proc, for the process_* metrics and the daemon
// memory benchmark.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "enforcer/metrics/registry.h"

namespace sovguard::metrics {

struct ProcessStats {
  std::uint64_t vm_rss_bytes = 0;   // VmRSS
  std::uint64_t vm_hwm_bytes = 0;   // VmHWM: peak RSS
  std::uint64_t vm_size_bytes = 0;  // VmSize
  std::uint64_t threads = 0;
  std::uint64_t open_fds = 0;
  double cpu_seconds = 0;         // utime + stime
  double start_time_seconds = 0;  // Unix time
};

// Reads /proc/PID/{status,stat,fd} (0 = self). Throws std::runtime_error naming the file and field.
ProcessStats ReadProcessStats(pid_t pid = 0);

// Sets the process_* gauges/counters of names.h from ReadProcessStats(). Register it with
// registry.AddCollector(CollectProcessMetrics) to refresh them at every scrape.
void CollectProcessMetrics(Registry& registry);

}  // namespace sovguard::metrics
