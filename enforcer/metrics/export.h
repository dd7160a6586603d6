// Turns the daemon's own status structures into the metrics of names.h, so the daemon wires
// metrics with a few calls instead of one Set() per field. Library sovguard_metrics_export.
#pragma once

#include <cstdint>
#include <string_view>

#include "enforcer/metrics/registry.h"
#include "enforcer/net/net_datapath.h"
#include "enforcer/probe/probe.h"
#include "policy/compiled.h"

namespace sovguard::metrics {

// sovguard_probe_path_info (one series per path) and sovguard_probe_paths_unguarded.
void ExportProbe(Registry& registry, const enforcer::ProbeReport& probe);

// Per guest and dataset: packets/bytes by verdict, quota used/limit/exceeded, attached, events
// suppressed; sovguard_attached_hooks{target="tap"}; policy generation and swaps. Every per-guest
// family is replaced as a whole, so guests that went away disappear. Taps of one guest are summed.
void ExportNetStatus(Registry& registry, const net::NetStatus& status);

// sovguard_policy_info, sovguard_policy_dataset_info and sovguard_policy_applied_timestamp_seconds
// (now). Call after each successful apply.
void ExportPolicy(Registry& registry, const policy::CompiledPolicy& policy, std::string_view source,
                  std::uint64_t bundle_version);

// Label value for a kernel net event reason (enum sg_net_reason): residency, unknown_destination,
// non_ip, malformed, quota, no_policy; "reason_N" for a value this build does not know.
std::string NetReasonLabel(std::uint32_t reason);

}  // namespace sovguard::metrics
