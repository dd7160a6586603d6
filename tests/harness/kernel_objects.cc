#include "tests/harness/kernel_objects.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tests/harness/network.h"
#include "tests/harness/process.h"

namespace sovguard::test {
namespace {

uint64_t JsonArraySize(const std::vector<std::string>& argv) {
  CommandResult r = Run(argv);
  if (r.exit_code != 0 || r.out.empty()) {
    return 0;
  }
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  return j.is_array() ? j.size() : 0;
}

}  // namespace

KernelObjectCounts CountKernelObjects(const std::vector<std::string>& devices,
                                      const std::string& cgroup_dir) {
  KernelObjectCounts c;
  c.bpf_programs = JsonArraySize({"bpftool", "-j", "prog", "show"});
  c.bpf_maps = JsonArraySize({"bpftool", "-j", "map", "show"});
  for (const auto& dev : devices) {
    if (!LinkExists(dev)) {
      continue;
    }
    for (const char* dir : {"ingress", "egress"}) {
      c.tc_filters += JsonArraySize({"tc", "-j", "filter", "show", "dev", dev, dir});
    }
  }
  if (!cgroup_dir.empty() && std::filesystem::exists(cgroup_dir)) {
    for (const auto& e : std::filesystem::recursive_directory_iterator(cgroup_dir)) {
      if (!e.is_directory()) {
        continue;
      }
      c.cgroup_attachments += JsonArraySize({"bpftool", "-j", "cgroup", "show", e.path().string()});
    }
    c.cgroup_attachments += JsonArraySize({"bpftool", "-j", "cgroup", "show", cgroup_dir});
  }
  return c;
}

std::string ToString(const KernelObjectCounts& c) {
  return "progs=" + std::to_string(c.bpf_programs) + " maps=" + std::to_string(c.bpf_maps) +
         " tc_filters=" + std::to_string(c.tc_filters) +
         " cgroup_attachments=" + std::to_string(c.cgroup_attachments);
}

}  // namespace sovguard::test
