#include "tests/harness/kernel_objects.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <utility>

#include "tests/harness/network.h"
#include "tests/harness/process.h"

namespace sovguard::test {
namespace {

std::string Joined(const std::vector<std::string>& argv) {
  std::string s;
  for (const auto& a : argv) {
    s += (s.empty() ? "" : " ") + a;
  }
  return s;
}

// The JSON array a tool prints; empty output is an empty array (bpftool cgroup show with nothing
// attached). A failed command or other output throws.
nlohmann::json JsonArray(const std::vector<std::string>& argv) {
  CommandResult r = Run(argv);
  if (r.exit_code != 0) {
    throw std::runtime_error(Joined(argv) + " failed (exit " + std::to_string(r.exit_code) +
                             "): " + r.err);
  }
  if (r.out.find_first_not_of(" \n") == std::string::npos) {
    return nlohmann::json::array();
  }
  auto j = nlohmann::json::parse(r.out, nullptr, false);
  if (!j.is_array()) {
    throw std::runtime_error(Joined(argv) + " printed no JSON array: " + r.out.substr(0, 200));
  }
  return j;
}

uint64_t JsonArraySize(const std::vector<std::string>& argv) {
  return JsonArray(argv).size();
}

uint64_t MaxId(const nlohmann::json& objects) {
  uint64_t max = 0;
  for (const auto& o : objects) {
    max = std::max(max, o.at("id").get<uint64_t>());
  }
  return max;
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

BpfIdMark MarkBpfIds() {
  return {.program = MaxId(JsonArray({"bpftool", "-j", "prog", "show"})),
          .map = MaxId(JsonArray({"bpftool", "-j", "map", "show"}))};
}

std::vector<std::string> BpfObjectsCreatedSince(const BpfIdMark& mark) {
  std::vector<std::string> created;
  for (const auto& [kind, above] : {std::pair{"prog", mark.program}, std::pair{"map", mark.map}}) {
    for (const auto& o : JsonArray({"bpftool", "-j", kind, "show"})) {
      const uint64_t id = o.at("id").get<uint64_t>();
      if (id > above) {
        created.push_back(std::string(kind) + " " + std::to_string(id) + " " +
                          o.value("type", std::string("?")) + " " +
                          o.value("name", std::string("(no name)")));
      }
    }
  }
  return created;
}

std::vector<std::string> CgroupProgramsCreatedSince(const std::string& cgroup,
                                                    const BpfIdMark& mark) {
  std::vector<std::string> ours;
  if (!std::filesystem::exists(cgroup)) {
    return ours;
  }
  for (const auto& p : JsonArray({"bpftool", "-j", "cgroup", "show", cgroup})) {
    const uint64_t id = p.at("id").get<uint64_t>();
    if (id > mark.program) {
      ours.push_back(std::to_string(id) + " " + p.value("attach_type", std::string("?")) + " " +
                     p.value("name", std::string("(no name)")));
    }
  }
  return ours;
}

std::string ToString(const KernelObjectCounts& c) {
  return "progs=" + std::to_string(c.bpf_programs) + " maps=" + std::to_string(c.bpf_maps) +
         " tc_filters=" + std::to_string(c.tc_filters) +
         " cgroup_attachments=" + std::to_string(c.cgroup_attachments);
}

}  // namespace sovguard::test
