#include "enforcer/bpf_feature/finding.h"

namespace sovguard::bpf_feature {

std::string_view FindingKindName(FindingKind kind) {
  switch (kind) {
    case FindingKind::kProgramReplaced:
      return "program-replaced";
    case FindingKind::kGuestEntryAltered:
      return "guest-entry-altered";
    case FindingKind::kTapMissing:
      return "tap-missing";
    case FindingKind::kFilterMissing:
      return "filter-missing";
    case FindingKind::kFilterBypass:
      return "filter-bypass";
    case FindingKind::kGenerationAltered:
      return "generation-altered";
    case FindingKind::kPolicyTableAltered:
      return "policy-table-altered";
    case FindingKind::kProgramDetached:
      return "program-detached";
    case FindingKind::kLinkBroken:
      return "link-broken";
    case FindingKind::kPinMissing:
      return "pin-missing";
    case FindingKind::kPolicyMapAltered:
      return "policy-map-altered";
    case FindingKind::kMachineCgroupReplaced:
      return "machine-cgroup-replaced";
    case FindingKind::kAdoptedStateAltered:
      return "adopted-state-altered";
  }
  return "?";
}

std::string ToString(Guarantee g) {
  switch (g) {
    case Guarantee::kPrevents:
      return "prevents";
    case Guarantee::kDetectsAndKills:
      return "detects-and-kills";
    case Guarantee::kCounts:
      return "counts";
    case Guarantee::kNone:
      return "none";
  }
  return "none";
}

}  // namespace sovguard::bpf_feature
