// Counts of kernel objects a test must not leak: BPF programs and maps (system-wide, via
// bpftool), tc filters on given devices, and BPF programs attached to cgroups under a directory.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sovguard::test {

struct KernelObjectCounts {
  uint64_t bpf_programs = 0;
  uint64_t bpf_maps = 0;
  uint64_t tc_filters = 0;  // on the devices asked for (ingress + egress), existing ones only
  uint64_t cgroup_attachments = 0;  // under the cgroup directory asked for
  bool operator==(const KernelObjectCounts&) const = default;
};

KernelObjectCounts CountKernelObjects(const std::vector<std::string>& devices = {},
                                      const std::string& cgroup_dir = {});
std::string ToString(const KernelObjectCounts& c);

}  // namespace sovguard::test
