// Counts of kernel objects a test must not leak: BPF programs and maps (system-wide, via
// bpftool), tc filters on given devices, and BPF programs attached to cgroups under a directory.
// A tool that fails (bpftool, tc) throws std::runtime_error naming it: a count never defaults to 0.
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

// The highest BPF program and map ids that exist now. The kernel hands out ids in increasing
// order, so an object with a higher id was created after the mark.
struct BpfIdMark {
  uint64_t program = 0;
  uint64_t map = 0;
};
BpfIdMark MarkBpfIds();
// BPF programs and maps that exist now and were created after `mark`, one line each
// ("prog ID TYPE NAME" / "map ID TYPE NAME"): what a test created and has not freed.
std::vector<std::string> BpfObjectsCreatedSince(const BpfIdMark& mark);
// BPF programs attached to the cgroup directory `cgroup` (itself, not below) that were created
// after `mark`, one "ID ATTACH_TYPE NAME" line each: a test's own attachments, told apart from
// another sovguardd's on the same cgroup. Empty when the directory does not exist.
std::vector<std::string> CgroupProgramsCreatedSince(const std::string& cgroup,
                                                    const BpfIdMark& mark);

}  // namespace sovguard::test
