// One vocabulary for what a tamper check finds, for both features, and the verbs every feature
// implements. A finding's kind name is what operators and auditors see (log KIND field, the
// sovguard_tamper_findings_total label, the measured "tamper:<kind>" event the verifier's
// enforcement.continuity check reads): names never change without the docs and tests that
// show them.
#pragma once

#include <concepts>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "enforcer/bpf_feature/ladder.h"

namespace sovguard::bpf_feature {

enum class FindingKind {
  // Either feature.
  kProgramReplaced,    // "program-replaced": another program runs where ours should
  kGuestEntryAltered,  // "guest-entry-altered": a guest's kernel entry differs from ours
  // Network feature (tc filter on each guest tap).
  kTapMissing,          // "tap-missing": the tap (ifindex + name) is gone: reconcile with libvirt
  kFilterMissing,       // "filter-missing": no clsact qdisc or no filter at our handle/priority
  kFilterBypass,        // "filter-bypass": a foreign filter runs before ours
  kGenerationAltered,   // "generation-altered": active generation or an inner map swapped
  kPolicyTableAltered,  // "policy-table-altered": a table of the active generation differs
  // Storage feature (links on the machine cgroup and tracepoints).
  kProgramDetached,        // "program-detached": our cgroup link no longer attaches our program
  kLinkBroken,             // "link-broken": a link of ours cannot be queried any more
  kPinMissing,             // "pin-missing": the pinned link is gone or another link
  kPolicyMapAltered,       // "policy-map-altered": a policy table differs from what was written
  kMachineCgroupReplaced,  // "machine-cgroup-replaced": the machine cgroup is another cgroup now
  kAdoptedStateAltered,    // "adopted-state-altered": pinned tables changed while no daemon ran
};
// The kind's name, e.g. "filter-bypass".
std::string_view FindingKindName(FindingKind kind);
inline std::ostream& operator<<(std::ostream& out, FindingKind kind) {
  return out << FindingKindName(kind);
}

// What a tamper check found: the kind, the kernel object it concerns (program, map, guest) and
// one line for logs and measured events.
struct Finding {
  FindingKind kind = FindingKind::kProgramReplaced;
  std::string object;
  std::string detail;
};

// What Repair put back, and what it could not (the daemon acts on those: reconcile, apply the
// policy again, start the feature over).
template <class F>
struct RepairResult {
  std::vector<F> repaired;
  std::vector<F> remaining;
};

// The verbs every BPF feature implements, so the daemon and the probe drive both the same way:
// probe (the feature's mechanism ladder per path, ladder.h), apply a compiled policy atomically,
// verify what the kernel runs against what was written, repair what can be put back, detach
// (stop enforcing).
template <class T>
concept Feature = requires(T& f, const T& cf, const typename T::Policy& policy,
                           const typename T::VerifyOptions& options) {
  requires std::derived_from<typename T::Finding, Finding>;
  { T::ProbeLadder() } -> std::same_as<std::vector<ProbePath>>;
  f.ApplyPolicy(policy);
  { cf.VerifyAttachments(options) } -> std::same_as<std::vector<typename T::Finding>>;
  { f.Repair(options) } -> std::same_as<RepairResult<typename T::Finding>>;
  f.Detach();
};

}  // namespace sovguard::bpf_feature
