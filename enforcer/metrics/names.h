// Every metric sovguardd exports, with its help text and labels. The Grafana dashboard
// (examples/grafana/sovguard-dashboard.json) may only query names defined here (a unit test
// checks).
//
// Conventions: prefix sovguard_; counters end in _total; seconds and bytes as base units; an
// *_info gauge is always 1 and carries its facts in labels. Label values are the daemon's own
// identifiers: guest = libvirt domain name, dataset = policy dataset id, path = probe path id.
#pragma once

#include <array>
#include <string_view>

#include "enforcer/metrics/metric_def.h"

namespace sovguard::metrics {

using enum MetricType;

// ---- Guest network traffic (tc program on each tap; read from the per-CPU counter map) ----------
// Counters mirror kernel counters: the daemon Set()s their absolute value.
inline constexpr MetricDef kGuestPackets{
    .name = "sovguard_guest_packets_total",
    .type = kCounter,
    .help = "Frames a guest sent, per held dataset and verdict (pass, drop, would_drop).",
    .labels = {"guest", "dataset", "verdict"}};
inline constexpr MetricDef kGuestBytes{
    .name = "sovguard_guest_bytes_total",
    .type = kCounter,
    .help = "Bytes a guest sent, per held dataset and verdict (pass, drop, would_drop).",
    .labels = {"guest", "dataset", "verdict"}};
inline constexpr std::string_view kVerdictPass = "pass";
inline constexpr std::string_view kVerdictDrop = "drop";             // enforce mode refused it
inline constexpr std::string_view kVerdictWouldDrop = "would_drop";  // audit mode let it pass

inline constexpr MetricDef kGuestQuotaUsed{
    .name = "sovguard_guest_quota_used_bytes",
    .type = kGauge,
    .help = "Egress bytes used in the current quota window, per guest and dataset.",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kGuestQuotaLimit{
    .name = "sovguard_guest_quota_limit_bytes",
    .type = kGauge,
    .help = "Egress budget per quota window, per guest and dataset (absent: no quota).",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kGuestQuotaExceeded{
    .name = "sovguard_guest_quota_exceeded_total",
    .type = kCounter,
    .help = "Frames refused (or audited) because the dataset's egress budget was exhausted.",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kGuestAttached{
    .name = "sovguard_guest_attached",
    .type = kGauge,
    .help = "1 when every tap of the guest carries the residency program, else 0.",
    .labels = {"guest"}};
inline constexpr MetricDef kGuestEventsSuppressed{
    .name = "sovguard_guest_events_suppressed_total",
    .type = kCounter,
    .help =
        "Violation events not emitted (rate limit or full ring); the counters still count them.",
    .labels = {"guest"}};
inline constexpr MetricDef kViolations{
    .name = "sovguard_violations_total",
    .type = kCounter,
    .help = "Violation events received from the kernel, per guest, dataset, reason and verdict.",
    .labels = {"guest", "dataset", "reason", "verdict"}};
// reason values: residency, unknown_destination, non_ip, malformed, quota, no_policy
// (sg_net_reason).

// ---- Storage path ---------------------------------------------------------------------------
inline constexpr MetricDef kStorageReadBytes{
    .name = "sovguard_storage_read_bytes_total",
    .type = kCounter,
    .help = "Bytes QEMU read from protected volumes, per guest and dataset.",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kStorageWriteBytes{
    .name = "sovguard_storage_write_bytes_total",
    .type = kCounter,
    .help = "Bytes QEMU wrote to protected volumes, per guest and dataset.",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kStorageDenied{
    .name = "sovguard_storage_denied_total",
    .type = kCounter,
    .help =
        "Storage accesses denied or killed (opens, block devices, connects, read-only writes, "
        "quotas), per guest and dataset.",
    .labels = {"guest", "dataset"}};
inline constexpr MetricDef kStorageEventsSuppressed{
    .name = "sovguard_storage_events_suppressed_total",
    .type = kCounter,
    .help = "Storage violation events not emitted (rate limit or full ring); denials still count.",
    .labels = {"guest"}};

// ---- Attachments ----------------------------------------------------------------------------
inline constexpr MetricDef kAttachOps{
    .name = "sovguard_attach_operations_total",
    .type = kCounter,
    .help = "Program attach/detach operations per target (tap, cgroup, device) and result.",
    .labels = {"target", "operation", "result"}};
inline constexpr MetricDef kAttachedHooks{
    .name = "sovguard_attached_hooks",
    .type = kGauge,
    .help = "Attachment points currently carrying a sovguard program, per target.",
    .labels = {"target"}};
inline constexpr std::string_view kTargetTap = "tap";
inline constexpr std::string_view kTargetCgroup = "cgroup";
inline constexpr std::string_view kTargetDevice = "device";
inline constexpr std::string_view kOpAttach = "attach";
inline constexpr std::string_view kOpDetach = "detach";
inline constexpr std::string_view kResultOk = "ok";
inline constexpr std::string_view kResultError = "error";
inline constexpr MetricDef kGuestsCovered{
    .name = "sovguard_guests_covered",
    .type = kGauge,
    .help = "Guests the node covers, by label state (valid, absent, invalid).",
    .labels = {"label_state"}};

// ---- Kernel probe ---------------------------------------------------------------------------
inline constexpr MetricDef kProbePath{
    .name = "sovguard_probe_path_info",
    .type = kGauge,
    .help =
        "Mechanism selected for each enforcement path and what it guarantees "
        "(prevents, detects, counts, none). Always 1.",
    .labels = {"path", "mechanism", "guarantee"}};
inline constexpr MetricDef kProbePathsUnguarded{
    .name = "sovguard_probe_paths_unguarded",
    .type = kGauge,
    .help = "Enforcement paths nothing guards on this kernel (guarantee none).",
    .labels = {}};
inline constexpr MetricDef kPathEnforced{
    .name = "sovguard_path_enforced",
    .type = kGauge,
    .help =
        "1 when the enforcement path is guarded right now, 0 when it is not (storage path not "
        "started or not adopted, no mechanism): guests holding a dataset are then refused.",
    .labels = {"path"}};

// ---- TPM and measurements -------------------------------------------------------------------
inline constexpr std::array<double, 12> kTpmQuoteBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                         0.5,   1,    2.5,   5,    10,  30};
inline constexpr MetricDef kTpmQuoteDuration{
    .name = "sovguard_tpm_quote_duration_seconds",
    .type = kHistogram,
    .help = "Time to produce one quote (TPM2_Quote plus evidence assembly).",
    .labels = {},
    .buckets = kTpmQuoteBuckets};
inline constexpr MetricDef kTpmQuotes{.name = "sovguard_tpm_quotes_total",
                                      .type = kCounter,
                                      .help = "Quotes requested, per result (ok, error).",
                                      .labels = {"result"}};
inline constexpr MetricDef kTpmSoftware{
    .name = "sovguard_tpm_software",
    .type = kGauge,
    .help = "1 when the node runs on a software TPM (swtpm), 0 on a hardware TPM.",
    .labels = {}};
inline constexpr MetricDef kMeasurements{
    .name = "sovguard_measurements_total",
    .type = kCounter,
    .help = "Events measured into the sovguard PCR and event log, per kind.",
    .labels = {"kind"}};

// ---- Errors and tamper detection ------------------------------------------------------------
inline constexpr MetricDef kErrors{.name = "sovguard_errors_total",
                                   .type = kCounter,
                                   .help = "Errors the daemon handled, per kind.",
                                   .labels = {"kind"}};
// kind values (extend as needed; keep them short and stable):
inline constexpr std::string_view kErrorAttach = "attach";
inline constexpr std::string_view kErrorDetach = "detach";
inline constexpr std::string_view kErrorLibvirt = "libvirt";
inline constexpr std::string_view kErrorHook = "hook";
inline constexpr std::string_view kErrorTpm = "tpm";
inline constexpr std::string_view kErrorPolicy = "policy";
inline constexpr std::string_view kErrorMapRead = "map_read";
inline constexpr std::string_view kErrorEvents = "events";
inline constexpr std::string_view kErrorApi = "api";
inline constexpr std::string_view kErrorTamperRepair = "tamper_repair";
inline constexpr std::string_view kErrorStatus = "status_write";
inline constexpr std::string_view kErrorMetrics = "metrics";  // a scrape collector failed

inline constexpr MetricDef kTamperFindings{
    .name = "sovguard_tamper_findings_total",
    .type = kCounter,
    .help =
        "Tamper checks that found a problem, per kind "
        "(program_detached, program_replaced, map_mismatch).",
    .labels = {"kind"}};
inline constexpr MetricDef kTamperRepairs{
    .name = "sovguard_tamper_repairs_total",
    .type = kCounter,
    .help = "Re-attachments and map rewrites after a tamper finding, per kind and result.",
    .labels = {"kind", "result"}};
inline constexpr MetricDef kTamperChecks{.name = "sovguard_tamper_checks_total",
                                         .type = kCounter,
                                         .help = "Tamper check rounds run.",
                                         .labels = {}};
inline constexpr MetricDef kTamperLastCheck{
    .name = "sovguard_tamper_last_check_timestamp_seconds",
    .type = kGauge,
    .help = "Unix time of the last completed tamper check round.",
    .labels = {}};

// ---- Policy ---------------------------------------------------------------------------------
inline constexpr MetricDef kPolicyInfo{
    .name = "sovguard_policy_info",
    .type = kGauge,
    .help = "The policy in force: compiled digest (hex), source and bundle version. Always 1.",
    .labels = {"digest", "source", "bundle_version"}};
inline constexpr MetricDef kPolicyGeneration{
    .name = "sovguard_policy_generation",
    .type = kGauge,
    .help = "Active table generation in the kernel (flips on each atomic policy switch).",
    .labels = {}};
inline constexpr MetricDef kPolicySwaps{.name = "sovguard_policy_swaps_total",
                                        .type = kCounter,
                                        .help = "Atomic policy generation switches in the kernel.",
                                        .labels = {}};
inline constexpr MetricDef kPolicyReloads{
    .name = "sovguard_policy_reloads_total",
    .type = kCounter,
    .help = "Policy reloads, per result (ok, rejected: the last good policy stays in force).",
    .labels = {"result"}};
inline constexpr MetricDef kPolicyAppliedAt{.name = "sovguard_policy_applied_timestamp_seconds",
                                            .type = kGauge,
                                            .help = "Unix time the policy in force was applied.",
                                            .labels = {}};
inline constexpr MetricDef kPolicyDataset{
    .name = "sovguard_policy_dataset_info",
    .type = kGauge,
    .help = "Datasets of the policy in force and their mode (enforce, audit). Always 1.",
    .labels = {"dataset", "mode"}};

inline constexpr MetricDef kUncoveredInterfaces{
    .name = "sovguard_uncovered_interfaces_total",
    .type = kCounter,
    .help =
        "Interfaces sovguard cannot filter on guests holding a dataset, per action: refused "
        "(start refused), detach_requested, detached, paused, resumed (once it is gone), gone, "
        "failed.",
    .labels = {"action"}};

// ---- API and hook ---------------------------------------------------------------------------
inline constexpr MetricDef kApiRequests{
    .name = "sovguard_api_requests_total",
    .type = kCounter,
    .help = "Attestation API calls, per method and gRPC status code name.",
    .labels = {"method", "code"}};
inline constexpr MetricDef kHookRequests{
    .name = "sovguard_hook_requests_total",
    .type = kCounter,
    .help = "libvirt qemu hook requests, per operation and result (ok, error).",
    .labels = {"operation", "result"}};

// ---- The daemon itself ----------------------------------------------------------------------
inline constexpr MetricDef kBuildInfo{.name = "sovguard_build_info",
                                      .type = kGauge,
                                      .help = "sovguardd version. Always 1.",
                                      .labels = {"version"}};
inline constexpr MetricDef kStartTime{.name = "sovguard_start_time_seconds",
                                      .type = kGauge,
                                      .help = "Unix time sovguardd became ready.",
                                      .labels = {}};
inline constexpr MetricDef kScrapes{.name = "sovguard_metrics_scrapes_total",
                                    .type = kCounter,
                                    .help = "GET /metrics requests served.",
                                    .labels = {}};
// Process metrics under the names every Prometheus client library uses (filled by
// CollectProcessMetrics, process_metrics.h).
inline constexpr MetricDef kProcessResident{.name = "process_resident_memory_bytes",
                                            .type = kGauge,
                                            .help = "Resident memory size in bytes (VmRSS).",
                                            .labels = {}};
inline constexpr MetricDef kProcessResidentPeak{
    .name = "sovguard_process_resident_memory_peak_bytes",
    .type = kGauge,
    .help = "Peak resident memory size in bytes (VmHWM).",
    .labels = {}};
inline constexpr MetricDef kProcessVirtual{.name = "process_virtual_memory_bytes",
                                           .type = kGauge,
                                           .help = "Virtual memory size in bytes (VmSize).",
                                           .labels = {}};
inline constexpr MetricDef kProcessCpu{.name = "process_cpu_seconds_total",
                                       .type = kCounter,
                                       .help = "User and system CPU time spent in seconds.",
                                       .labels = {}};
inline constexpr MetricDef kProcessOpenFds{.name = "process_open_fds",
                                           .type = kGauge,
                                           .help = "Number of open file descriptors.",
                                           .labels = {}};
inline constexpr MetricDef kProcessThreads{.name = "sovguard_process_threads",
                                           .type = kGauge,
                                           .help = "Number of threads of sovguardd.",
                                           .labels = {}};
inline constexpr MetricDef kProcessStartTime{
    .name = "process_start_time_seconds",
    .type = kGauge,
    .help = "Start time of the process since unix epoch in seconds.",
    .labels = {}};

// Every family above, so the registry can declare them all (HELP/TYPE are exported, and unlabelled
// counters read 0, before the first event).
inline constexpr auto kAllMetrics = std::to_array<const MetricDef*>({&kGuestPackets,
                                                                     &kGuestBytes,
                                                                     &kGuestQuotaUsed,
                                                                     &kGuestQuotaLimit,
                                                                     &kGuestQuotaExceeded,
                                                                     &kGuestAttached,
                                                                     &kGuestEventsSuppressed,
                                                                     &kViolations,
                                                                     &kStorageReadBytes,
                                                                     &kStorageWriteBytes,
                                                                     &kStorageDenied,
                                                                     &kStorageEventsSuppressed,
                                                                     &kAttachOps,
                                                                     &kAttachedHooks,
                                                                     &kUncoveredInterfaces,
                                                                     &kGuestsCovered,
                                                                     &kProbePath,
                                                                     &kProbePathsUnguarded,
                                                                     &kPathEnforced,
                                                                     &kTpmQuoteDuration,
                                                                     &kTpmQuotes,
                                                                     &kTpmSoftware,
                                                                     &kMeasurements,
                                                                     &kErrors,
                                                                     &kTamperFindings,
                                                                     &kTamperRepairs,
                                                                     &kTamperChecks,
                                                                     &kTamperLastCheck,
                                                                     &kPolicyInfo,
                                                                     &kPolicyGeneration,
                                                                     &kPolicySwaps,
                                                                     &kPolicyReloads,
                                                                     &kPolicyAppliedAt,
                                                                     &kPolicyDataset,
                                                                     &kApiRequests,
                                                                     &kHookRequests,
                                                                     &kBuildInfo,
                                                                     &kStartTime,
                                                                     &kScrapes,
                                                                     &kProcessResident,
                                                                     &kProcessResidentPeak,
                                                                     &kProcessVirtual,
                                                                     &kProcessCpu,
                                                                     &kProcessOpenFds,
                                                                     &kProcessThreads,
                                                                     &kProcessStartTime});

}  // namespace sovguard::metrics
