#include "enforcer/metrics/export.h"

#include <chrono>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "base/hex.h"
#include "bpf/sovguard_abi.h"
#include "enforcer/metrics/names.h"

namespace sovguard::metrics {
namespace {

std::string DatasetLabel(const net::DatasetStatus& d) {
  // A dataset the active policy does not name (stale slot) still shows, by its bit index.
  return d.id.empty() ? "#" + std::to_string(d.index) : d.id;
}

}  // namespace

void ExportProbe(Registry& registry, const enforcer::ProbeReport& probe) {
  std::vector<Registry::Sample> paths;
  double unguarded = 0;
  for (const auto& p : probe.paths) {
    paths.push_back({{p.path, p.mechanism, enforcer::ToString(p.guarantee)}, 1});
    if (p.guarantee == enforcer::Guarantee::kNone) ++unguarded;
  }
  registry.Replace(kProbePath, paths);
  registry.Set(kProbePathsUnguarded, {}, unguarded);
}

void ExportNetStatus(Registry& registry, const net::NetStatus& status) {
  using Key = std::pair<std::string, std::string>;  // guest, dataset
  struct Sum {
    net::DatasetCounters c;
    std::optional<std::uint64_t> limit;
  };
  std::map<Key, Sum> sums;
  std::map<std::string, bool> attached;  // every tap of the guest attached
  std::map<std::string, std::uint64_t> suppressed;
  double attached_taps = 0;
  for (const auto& g : status.guests) {
    auto [it, fresh] = attached.try_emplace(g.name, g.attached);
    if (!fresh) it->second = it->second && g.attached;
    if (g.attached) ++attached_taps;
    suppressed[g.name] += g.events_suppressed;
    for (const auto& d : g.datasets) {
      Sum& s = sums[{g.name, DatasetLabel(d)}];
      s.c.packets += d.counters.packets;
      s.c.bytes += d.counters.bytes;
      s.c.dropped_packets += d.counters.dropped_packets;
      s.c.dropped_bytes += d.counters.dropped_bytes;
      s.c.would_drop_packets += d.counters.would_drop_packets;
      s.c.would_drop_bytes += d.counters.would_drop_bytes;
      s.c.quota_used_bytes += d.counters.quota_used_bytes;
      s.c.quota_exceeded += d.counters.quota_exceeded;
      if (d.egress) s.limit = d.egress->bytes;
    }
  }
  const auto u = [](std::uint64_t v) { return static_cast<double>(v); };
  std::vector<Registry::Sample> packets, bytes, used, limit, exceeded, attached_s, suppressed_s;
  for (const auto& [key, s] : sums) {
    const auto& [guest, dataset] = key;
    packets.push_back({{guest, dataset, std::string(kVerdictPass)}, u(s.c.packets)});
    packets.push_back({{guest, dataset, std::string(kVerdictDrop)}, u(s.c.dropped_packets)});
    packets.push_back(
        {{guest, dataset, std::string(kVerdictWouldDrop)}, u(s.c.would_drop_packets)});
    bytes.push_back({{guest, dataset, std::string(kVerdictPass)}, u(s.c.bytes)});
    bytes.push_back({{guest, dataset, std::string(kVerdictDrop)}, u(s.c.dropped_bytes)});
    bytes.push_back({{guest, dataset, std::string(kVerdictWouldDrop)}, u(s.c.would_drop_bytes)});
    exceeded.push_back({{guest, dataset}, u(s.c.quota_exceeded)});
    if (s.limit) {
      used.push_back({{guest, dataset}, u(s.c.quota_used_bytes)});
      limit.push_back({{guest, dataset}, u(*s.limit)});
    }
  }
  for (const auto& [guest, ok] : attached) attached_s.push_back({{guest}, ok ? 1.0 : 0.0});
  for (const auto& [guest, n] : suppressed) suppressed_s.push_back({{guest}, u(n)});
  registry.Replace(kGuestPackets, packets);
  registry.Replace(kGuestBytes, bytes);
  registry.Replace(kGuestQuotaUsed, used);
  registry.Replace(kGuestQuotaLimit, limit);
  registry.Replace(kGuestQuotaExceeded, exceeded);
  registry.Replace(kGuestAttached, attached_s);
  registry.Replace(kGuestEventsSuppressed, suppressed_s);
  registry.Set(kAttachedHooks, {std::string(kTargetTap)}, attached_taps);
  if (status.policy_loaded) {
    registry.Set(kPolicyGeneration, {}, status.active_generation);
  } else {
    registry.Clear(kPolicyGeneration);
  }
  registry.Set(kPolicySwaps, {}, u(status.swaps));
}

void ExportPolicy(Registry& registry, const policy::CompiledPolicy& policy, std::string_view source,
                  std::uint64_t bundle_version) {
  registry.Replace(
      kPolicyInfo,
      {{{base::ToHex(policy.digest), std::string(source), std::to_string(bundle_version)}, 1}});
  std::vector<Registry::Sample> datasets;
  for (const auto& d : policy.datasets) {
    datasets.push_back({{d.id, d.mode == policy::Mode::kEnforce ? "enforce" : "audit"}, 1});
  }
  registry.Replace(kPolicyDataset, datasets);
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  registry.Set(kPolicyAppliedAt, {}, std::chrono::duration<double>(now).count());
}

std::string NetReasonLabel(std::uint32_t reason) {
  switch (reason) {
    case SG_NET_REASON_RESIDENCY:
      return "residency";
    case SG_NET_REASON_UNKNOWN:
      return "unknown_destination";
    case SG_NET_REASON_NON_IP:
      return "non_ip";
    case SG_NET_REASON_MALFORMED:
      return "malformed";
    case SG_NET_REASON_QUOTA:
      return "quota";
    case SG_NET_REASON_NO_POLICY:
      return "no_policy";
  }
  return "reason_" + std::to_string(reason);
}

}  // namespace sovguard::metrics
