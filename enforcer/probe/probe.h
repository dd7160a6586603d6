// The kernel probe: which mechanism guards each enforcement path on this kernel, found by loading
// and attaching the real programs (never by reading version numbers), and whether it prevents or
// only detects. The daemon runs it at start, caches it, and reports it everywhere.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "enforcer/storage/storage_ladder.h"

namespace sovguard::enforcer {

// One vocabulary with the storage path: prevents, detects-and-kills, counts, none.
using Guarantee = storage::Guarantee;
using storage::ToString;

struct Attempt {
  std::string mechanism;  // e.g. "bpf-lsm:file_open"
  bool ok = false;
  std::string error;  // why it failed (errno text and stage), empty when ok
};

struct PathResult {
  std::string path;       // stable id: guest-network-egress, storage-open, ...
  std::string mechanism;  // the one selected, "none" when every attempt failed
  Guarantee guarantee = Guarantee::kNone;
  std::vector<Attempt> attempts;  // strongest first
};

struct ProbeReport {
  std::string kernel;     // uname release
  std::string probed_at;  // UTC, ISO 8601
  std::vector<PathResult> paths;
  std::vector<std::string> notes;  // e.g. "tracefs was not mounted: mounted it"

  const PathResult* Find(const std::string& path) const;
};

// Every path the probe reports, in the order it reports them.
const std::vector<std::string>& ProbePaths();

// Loads and attaches the real programs (needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN). Never throws
// for a missing kernel feature: that is a failed attempt with its reason.
ProbeReport RunProbe();

nlohmann::json ToJson(const ProbeReport& report);
ProbeReport ProbeReportFromJson(const nlohmann::json& j);  // throws nlohmann::json::exception
std::string ToTable(const ProbeReport& report);

}  // namespace sovguard::enforcer
