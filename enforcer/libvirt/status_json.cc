#include "enforcer/libvirt/status_json.h"

namespace sovguard::libvirt {

nlohmann::json ToJson(const GuestInfo& g) {
  using nlohmann::json;
  const DomainDescription& d = g.domain;
  json labels{{"state", std::string(ToString(d.labels.state))},
              {"datasets", d.labels.datasets},
              {"disks", json::array()}};
  for (const auto& disk : d.labels.disks) {
    labels["disks"].push_back({{"target", disk.target}, {"dataset", disk.dataset}});
  }
  if (!d.labels.error.empty()) {
    labels["error"] = d.labels.error;
  }
  json taps = json::array();
  for (const auto& i : d.interfaces) {
    taps.push_back(
        {{"dev", i.tap}, {"mac", i.mac}, {"type", i.type}, {"model", i.model}, {"alias", i.alias}});
  }
  json disks = json::array();
  for (const auto& k : d.disks) {
    disks.push_back({{"target", k.target},
                     {"source", k.source},
                     {"source_type", k.source_type},
                     {"device", k.device},
                     {"readonly", k.readonly},
                     {"shareable", k.shareable}});
  }
  json cgroup = nullptr;
  if (g.cgroup) {
    cgroup = {{"scope", g.cgroup->scope_path},
              {"process", g.cgroup->process_path},
              {"id", g.cgroup->scope_id},
              {"level", g.cgroup->scope_level}};
  }
  return {{"name", d.name},     {"uuid", d.uuid},   {"id", d.id},
          {"paused", g.paused}, {"labels", labels}, {"datasets", d.labels.AllDatasets()},
          {"taps", taps},       {"disks", disks},   {"qemu_pid", g.qemu_pid},
          {"cgroup", cgroup}};
}

}  // namespace sovguard::libvirt
