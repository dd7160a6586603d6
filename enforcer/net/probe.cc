// ProbeNetDatapath and NetDatapath::ProbeLadder: the real program, loaded and run once each way
// on this kernel.
#include <exception>

#include "enforcer/net/frames.h"
#include "enforcer/net/net_datapath.h"

namespace sovguard::net {

std::optional<std::string> ProbeNetDatapath() {
  try {
    NetDatapath dp(NetDatapathOptions{.events_per_sec = 0});
    policy::CompiledPolicy p;
    p.datasets.push_back({.id = "probe", .index = 0, .mode = policy::Mode::kEnforce});
    p.classes.push_back(sg_class{});                                          // 0: unknown
    p.classes.push_back(sg_class{.allowed_datasets = 1, .country = 0x5A5A});  // 1: "ZZ"
    p.ipv4.push_back({.addr = 0xC0000200, .len = 24, .class_id = 1});         // 192.0.2.0/24
    dp.ApplyPolicy(p);
    dp.AddGuest({.name = "probe", .ifindex = 1, .datasets = 1, .attach = false});
    const auto allowed = dp.TestRun(frames::Ipv4(0xC0000201));
    const auto forbidden = dp.TestRun(frames::Ipv4(0xC6336401));  // 198.51.100.1: unknown
    if (allowed.retval != SG_TC_ACT_OK)
      return "an allowed frame got tc verdict " + std::to_string(allowed.retval) +
             ", expected pass";
    if (forbidden.retval != SG_TC_ACT_SHOT)
      return "a forbidden frame got tc verdict " + std::to_string(forbidden.retval) +
             ", expected drop";
    return std::nullopt;
  } catch (const std::exception& e) {
    return std::string("network datapath unavailable: ") + e.what();
  }
}

namespace {

bpf_feature::Attempt TryNetDatapath(std::string mechanism) {
  bpf_feature::Attempt a{.mechanism = std::move(mechanism)};
  try {
    if (auto why = ProbeNetDatapath()) {
      a.error = *why;
    } else {
      a.ok = true;
    }
  } catch (const std::exception& e) {
    a.error = e.what();
  }
  return a;
}

}  // namespace

std::vector<bpf_feature::ProbePath> NetDatapath::ProbeLadder() {
  using bpf_feature::Guarantee;
  // A tc program that loads, and drops what it should, prevents: on clsact ingress of the tap
  // for what the guest sends, on its egress for what the guest receives.
  return {{"guest-network-egress",
           {{Guarantee::kPrevents, [] { return TryNetDatapath("tc-clsact:ingress"); }}}},
          {"guest-network-ingress",
           {{Guarantee::kPrevents, [] { return TryNetDatapath("tc-clsact:egress"); }}}}};
}

}  // namespace sovguard::net
