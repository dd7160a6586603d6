// What a long-running fleet verifier keeps in step after every round: the nodes' OpenStack
// Placement traits (placement.h) and a Prometheus text file of their verdicts (for
// node_exporter's textfile collector). A node carries sovguard's traits only while its last
// verdict passed and is fresh: a failed check, an unreachable node, or a pass older than
// `stale_after` (a round that took too long) removes them.
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "attestation/verify/live.h"
#include "attestation/verify/placement.h"
#include "enforcer/metrics/metric_def.h"

namespace sovguard::attestation::verify {

// The verifier's metric families (exported to --metrics-file, used by examples/prometheus).
inline constexpr metrics::MetricDef kVerifyNodePass{
    .name = "sovguard_verify_node_pass",
    .type = metrics::MetricType::kGauge,
    .help = "1 when the node's last verdict passed (waivers named in the report), else 0.",
    .labels = {"node"}};
inline constexpr metrics::MetricDef kVerifyNodeLastVerdict{
    .name = "sovguard_verify_node_last_verdict_timestamp_seconds",
    .type = metrics::MetricType::kGauge,
    .help = "Unix time the round that gave the node's last verdict started.",
    .labels = {"node"}};
inline constexpr metrics::MetricDef kVerifyNodeLastPass{
    .name = "sovguard_verify_node_last_pass_timestamp_seconds",
    .type = metrics::MetricType::kGauge,
    .help = "Unix time the round that last passed the node started (absent: never passed).",
    .labels = {"node"}};
inline constexpr metrics::MetricDef kVerifyNodeReachable{
    .name = "sovguard_verify_node_reachable",
    .type = metrics::MetricType::kGauge,
    .help = "1 when the node answered with evidence in its last round, else 0.",
    .labels = {"node"}};
inline constexpr metrics::MetricDef kVerifyNodeFailure{
    .name = "sovguard_verify_node_failure",
    .type = metrics::MetricType::kGauge,
    .help =
        "1 per failing check of the node's last verdict, with its reason code; "
        "reason UNREACHABLE when no evidence was obtained.",
    .labels = {"node", "check", "reason"}};
inline constexpr metrics::MetricDef kVerifyPlacementInStep{
    .name = "sovguard_verify_placement_in_step",
    .type = metrics::MetricType::kGauge,
    .help =
        "1 when the node's Placement traits were brought in step with its verdict in the "
        "last round, 0 when Placement could not be updated.",
    .labels = {"node", "provider"}};
inline constexpr const metrics::MetricDef* kVerifyMetrics[] = {
    &kVerifyNodePass,      &kVerifyNodeLastVerdict, &kVerifyNodeLastPass,
    &kVerifyNodeReachable, &kVerifyNodeFailure,     &kVerifyPlacementInStep};

struct KeeperOptions {
  std::optional<PlacementConfig> placement;  // --placement URL [--placement-token-file F]
  std::vector<std::string> datasets;         // --placement-datasets: one trait each
  std::optional<int> stale_after;            // --stale-after SEC
  std::optional<std::string> metrics_file;   // --metrics-file PATH
  // Consumes a[i] (and its value) when it is one of the options above; throws InputError for a
  // bad value.
  bool ParseArg(const std::vector<std::string>& a, size_t& i);
  bool active() const { return placement || metrics_file; }
};

class FleetKeeper {
 public:
  // Throws InputError for options that cannot work (dataset traits without a pinned policy,
  // two datasets mapping to one trait, no token).
  FleetKeeper(const KeeperOptions& opts, std::vector<FleetNode> nodes,
              std::chrono::seconds stale_after, bool policy_pinned);
  ~FleetKeeper();

  // After a round that started at `started` (results in fleet order): records the verdicts,
  // brings every node's traits in step, writes the metrics file. One "placement:" line per
  // change or error and "placement: in step (N attested)" at the end. False when Placement
  // could not be brought in step for some node.
  bool Round(const std::vector<LiveResult>& results, std::chrono::system_clock::time_point started,
             std::ostream& out);

 private:
  struct NodeState {
    bool verdict = false, passed = false, reachable = false;
    std::chrono::system_clock::time_point last_verdict, last_pass;
    std::vector<std::pair<std::string, std::string>> failures;  // check, reason
    bool in_step = false;
  };
  void WriteMetrics();

  KeeperOptions opts_;
  std::vector<FleetNode> nodes_;
  std::chrono::seconds stale_after_;
  std::set<std::string> traits_;  // what a passing node carries
  std::unique_ptr<PlacementClient> placement_;
  std::vector<NodeState> state_;
};

}  // namespace sovguard::attestation::verify
