// Raw rtnetlink for what libbpf 1.1's bpf_tc_* API cannot do: list every filter of a clsact
// ingress hook in run order (to see foreign filters in front of ours) and delete one whatever its
// kind or protocol. Both act on the calling thread's network namespace.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "enforcer/net/datapath_types.h"

namespace sovguard::net::detail {

// Our filter on a tap's clsact ingress: the 'SG' handle at a fixed priority, so that only our own
// filter is ever replaced or removed.
inline constexpr std::uint32_t kTcHandle = 0x5347;
inline constexpr std::uint32_t kTcPriority = 1;

// Runs f on a thread that has joined the network namespace at path (tc works per namespace), or on
// the calling thread when path is empty. Throws DatapathError when the namespace cannot be joined;
// an exception of f is rethrown here.
void InNetns(const std::string& path, const std::function<void()>& f);

template <class F>
auto InNetnsResult(const std::string& path, F&& f) {
  decltype(f()) result{};
  InNetns(path, [&] { result = f(); });
  return result;
}

// Filters of clsact ingress of ifindex, in run order; empty when the device has no clsact qdisc.
// Throws DatapathError for other failures (e.g. ENODEV when the device is gone).
std::vector<TcFilterInfo> DumpIngressFilters(std::uint32_t ifindex);
// Whether ifindex has a clsact qdisc (a qdisc dump; lets callers skip a create that would fail
// with EEXIST and have libbpf log the kernel's complaint).
bool HasClsact(std::uint32_t ifindex);
// Deletes one filter (exact priority, protocol, handle and kind).
void DeleteIngressFilter(std::uint32_t ifindex, const TcFilterInfo& filter);

}  // namespace sovguard::net::detail
