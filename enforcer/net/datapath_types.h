// The network datapath's vocabulary shared by its loader (net_datapath) and its rtnetlink layer
// (tc_netlink), so that neither includes the other: the kernel error type and a program's
// identity (both the BPF-feature toolkit's) and a tc filter as a netlink dump reports it.
#pragma once

#include <cstdint>
#include <string>

#include "enforcer/bpf_feature/bpf_feature.h"

namespace sovguard::net {

using DatapathError = bpf_feature::Error;
using bpf_feature::ProgramIdentity;

// One tc filter of a clsact ingress hook, in the order the kernel runs them.
struct TcFilterInfo {
  std::uint32_t priority = 0;
  std::uint32_t handle = 0;
  std::uint16_t protocol = 0;  // host order (ETH_P_ALL = 3)
  std::string kind;            // "bpf", "u32", "matchall", ...
  ProgramIdentity program;     // kind "bpf" only
  bool direct_action = false;
};

}  // namespace sovguard::net
