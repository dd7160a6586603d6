// The daemon's status structures exported as metrics: taps of one guest summed, guests that went
// away removed, probe paths and policy facts as info series.
#include "enforcer/metrics/export.h"

#include <gtest/gtest.h>

#include "enforcer/metrics/names.h"

namespace sm = sovguard::metrics;
namespace dp = sovguard::net;
namespace en = sovguard::enforcer;

namespace {

dp::DatasetStatus Dataset(std::uint8_t index, std::string id, std::uint64_t packets,
                          std::uint64_t dropped, std::optional<std::uint64_t> quota = {}) {
  dp::DatasetStatus d;
  d.index = index;
  d.id = std::move(id);
  d.counters.packets = packets;
  d.counters.bytes = packets * 100;
  d.counters.dropped_packets = dropped;
  d.counters.dropped_bytes = dropped * 60;
  d.counters.quota_used_bytes = 1000;
  d.counters.quota_exceeded = 2;
  if (quota) d.egress = sovguard::policy::Quota{.bytes = *quota, .window_seconds = 60};
  return d;
}

TEST(ExportNetStatus, SumsTapsOfAGuestAndDropsGuestsThatLeft) {
  dp::NetStatus st;
  st.policy_loaded = true;
  st.active_generation = 1;
  st.swaps = 4;
  dp::GuestStatus tap0{.name = "vm1", .ifindex = 10, .attached = true, .events_suppressed = 5};
  tap0.datasets = {Dataset(0, "eu-health", 10, 1, 5000), Dataset(3, "", 1, 0)};
  dp::GuestStatus tap1{.name = "vm1", .ifindex = 11, .attached = false, .events_suppressed = 1};
  tap1.datasets = {Dataset(0, "eu-health", 5, 2, 5000)};
  dp::GuestStatus other{.name = "vm2", .ifindex = 12, .attached = true};
  other.datasets = {Dataset(0, "eu-health", 7, 0)};
  st.guests = {tap0, tap1, other};

  sm::Registry r;
  sm::ExportNetStatus(r, st);
  EXPECT_EQ(r.Value(sm::kGuestPackets, {"vm1", "eu-health", "pass"}), 15);
  EXPECT_EQ(r.Value(sm::kGuestPackets, {"vm1", "eu-health", "drop"}), 3);
  EXPECT_EQ(r.Value(sm::kGuestBytes, {"vm1", "eu-health", "drop"}), 180);
  EXPECT_EQ(r.Value(sm::kGuestPackets, {"vm1", "#3", "pass"}), 1) << "unnamed slot by its index";
  EXPECT_EQ(r.Value(sm::kGuestQuotaLimit, {"vm1", "eu-health"}), 5000);
  EXPECT_EQ(r.Value(sm::kGuestQuotaUsed, {"vm1", "eu-health"}), 2000);
  EXPECT_FALSE(r.Has(sm::kGuestQuotaLimit, {"vm2", "eu-health"})) << "no quota, no limit series";
  EXPECT_EQ(r.Value(sm::kGuestAttached, {"vm1"}), 0) << "one tap of vm1 is not attached";
  EXPECT_EQ(r.Value(sm::kGuestAttached, {"vm2"}), 1);
  EXPECT_EQ(r.Value(sm::kGuestEventsSuppressed, {"vm1"}), 6);
  EXPECT_EQ(r.Value(sm::kAttachedHooks, {"tap"}), 2);
  EXPECT_EQ(r.Value(sm::kPolicyGeneration), 1);
  EXPECT_EQ(r.Value(sm::kPolicySwaps), 4);

  st.guests = {tap0};
  sm::ExportNetStatus(r, st);
  EXPECT_FALSE(r.Has(sm::kGuestPackets, {"vm2", "eu-health", "pass"}));
  EXPECT_FALSE(r.Has(sm::kGuestAttached, {"vm2"}));
  EXPECT_EQ(r.Value(sm::kGuestPackets, {"vm1", "eu-health", "pass"}), 10);
  EXPECT_EQ(r.Value(sm::kGuestAttached, {"vm1"}), 1);
}

TEST(ExportProbe, OneInfoSeriesPerPathAndUnguardedCount) {
  en::ProbeReport probe;
  probe.paths.push_back(
      {.path = "guest-network-egress", .mechanism = "tc", .guarantee = en::Guarantee::kPrevents});
  probe.paths.push_back(
      {.path = "storage-open", .mechanism = "none", .guarantee = en::Guarantee::kNone});
  sm::Registry r;
  sm::ExportProbe(r, probe);
  EXPECT_EQ(r.Value(sm::kProbePath, {"guest-network-egress", "tc", "prevents"}), 1);
  EXPECT_EQ(r.Value(sm::kProbePath, {"storage-open", "none", "none"}), 1);
  EXPECT_EQ(r.Value(sm::kProbePathsUnguarded), 1);
}

TEST(ExportPolicy, DigestSourceAndDatasets) {
  sovguard::policy::CompiledPolicy p;
  p.digest[0] = 0xab;
  p.datasets.push_back({.id = "eu-health", .index = 0, .mode = sovguard::policy::Mode::kEnforce});
  p.datasets.push_back({.id = "de-tax", .index = 1, .mode = sovguard::policy::Mode::kAudit});
  sm::Registry r;
  sm::ExportPolicy(r, p, "bundle.sgb", 7);
  const std::string digest = "ab" + std::string(62, '0');
  EXPECT_EQ(r.Value(sm::kPolicyInfo, {digest, "bundle.sgb", "7"}), 1);
  EXPECT_EQ(r.Value(sm::kPolicyDataset, {"de-tax", "audit"}), 1);
  EXPECT_GT(r.Value(sm::kPolicyAppliedAt), 1.7e9);
  p.digest[0] = 0xcd;
  sm::ExportPolicy(r, p, "bundle.sgb", 8);
  EXPECT_FALSE(r.Has(sm::kPolicyInfo, {digest, "bundle.sgb", "7"})) << "one policy in force";
  EXPECT_EQ(sm::NetReasonLabel(SG_NET_REASON_QUOTA), "quota");
  EXPECT_EQ(sm::NetReasonLabel(99), "reason_99");
}

}  // namespace
