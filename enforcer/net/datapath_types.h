// The network datapath's vocabulary shared by its loader (net_datapath) and its rtnetlink layer
// (tc_netlink), so that neither includes the other: the kernel error type, a program's identity
// and a tc filter as a netlink dump reports it.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace sovguard::datapath {

// A failed kernel operation: what failed (with the object it failed on) and the errno.
class DatapathError : public std::runtime_error {
 public:
  DatapathError(const std::string& what, int err);
  int error() const noexcept { return err_; }

 private:
  int err_;
};

// A BPF program as the kernel knows it.
struct ProgramIdentity {
  std::uint32_t id = 0;
  std::string tag;  // 16 hex digits (bpf_prog_info.tag)
  std::string name;
};

// One tc filter of a clsact ingress hook, in the order the kernel runs them.
struct TcFilterInfo {
  std::uint32_t priority = 0;
  std::uint32_t handle = 0;
  std::uint16_t protocol = 0;  // host order (ETH_P_ALL = 3)
  std::string kind;            // "bpf", "u32", "matchall", ...
  ProgramIdentity program;     // kind "bpf" only
  bool direct_action = false;
};

}  // namespace sovguard::datapath
