// What each feature gives the kernel probe: per enforcement path, its mechanisms strongest first,
// each with the guarantee it gives and a trial that loads and attaches the feature's real
// programs on this kernel (never a version number). The probe room runs the trials and reports.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace sovguard::bpf_feature {

// One vocabulary for both features, in status, metrics, the probe table and measured events.
enum class Guarantee { kPrevents, kDetectsAndKills, kCounts, kNone };
std::string ToString(Guarantee g);  // "prevents", "detects-and-kills", "counts", "none"

// One trial of a mechanism: ok, or why not (errno text and stage, and what the kernel must offer).
struct Attempt {
  std::string mechanism;  // e.g. "bpf-lsm:file_open"
  bool ok = false;
  std::string error;  // empty when ok
};

struct ProbeRung {
  Guarantee guarantee = Guarantee::kNone;
  // Never throws for a missing kernel feature: that is a failed attempt with its reason.
  std::function<Attempt()> attempt;
};

struct ProbePath {
  std::string path;              // stable id: guest-network-egress, storage-open, ...
  std::vector<ProbeRung> rungs;  // strongest first; the first that works is selected
};

}  // namespace sovguard::bpf_feature
