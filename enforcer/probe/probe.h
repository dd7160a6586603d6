// The kernel probe: which mechanism guards each enforcement path on this kernel, and whether it
// prevents or only detects. Each feature (NetDatapath, StorageDatapath) gives its ladder per path
// (bpf_feature::Feature's ProbeLadder); the probe runs the trials, strongest first, and keeps the
// first that works. The daemon runs it at start, caches it, and reports it everywhere.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "enforcer/bpf_feature/ladder.h"

namespace sovguard::enforcer {

// One vocabulary with both features: prevents, detects-and-kills, counts, none.
using Guarantee = bpf_feature::Guarantee;
using bpf_feature::ToString;
using Attempt = bpf_feature::Attempt;

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
  std::vector<std::string> notes;  // in probe.json's schema; nothing writes one today

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
