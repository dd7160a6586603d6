// Raw rtnetlink for what libbpf 1.1's bpf_tc_* API cannot do: list every filter of a clsact
// ingress hook in run order (to see foreign filters in front of ours) and delete one whatever its
// kind or protocol. Both act on the calling thread's network namespace.
#pragma once

#include <cstdint>
#include <vector>

#include "enforcer/net/datapath_types.h"

namespace sovguard::datapath::detail {

// Filters of clsact ingress of ifindex, in run order; empty when the device has no clsact qdisc.
// Throws DatapathError for other failures (e.g. ENODEV when the device is gone).
std::vector<TcFilterInfo> DumpIngressFilters(std::uint32_t ifindex);
// Whether ifindex has a clsact qdisc (a qdisc dump; lets callers skip a create that would fail
// with EEXIST and have libbpf log the kernel's complaint).
bool HasClsact(std::uint32_t ifindex);
// Deletes one filter (exact priority, protocol, handle and kind).
void DeleteIngressFilter(std::uint32_t ifindex, const TcFilterInfo& filter);
// id, tag and name of a loaded program (tag/name empty if it is gone).
ProgramIdentity ProgramById(std::uint32_t id);
ProgramIdentity ProgramByFd(int fd);

}  // namespace sovguard::datapath::detail
