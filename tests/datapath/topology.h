// Test support for real traffic through the residency program: a router namespace R standing in
// for the host, N guest namespaces G_i each joined to R by a veth (R's end r<i> is the guest's
// "tap"), and a destination namespace D with an "EU" and a "non-EU" address.
//   G_i 192.0.2.(4i+2)/30  --  r<i> 192.0.2.(4i+1)/30 | R rd 198.51.100.1, 203.0.113.1
//   D 198.51.100.10 (DE, allowed), 203.0.113.10 (US, forbidden)
// With IPv6 also: G_i 2001:db8:1:i::2/64 -- r<i> 2001:db8:1:i::1/64 | R rd 2001:db8:e0::1,
// 2001:db8:f0::1; D 2001:db8:e0::10 (DE), 2001:db8:f0::10 (US).
// Only documentation addresses; everything is removed on destruction.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/unique_fd.h"
#include "policy/compiled.h"
#include "tests/datapath/netns.h"

namespace sovguard::net::testing {

constexpr std::uint16_t kDE = 0x4445, kUS = 0x5553;

// Test jurisdiction table: 198.51.100.0/24 + 2001:db8:e0::/48 DE (allowed for dataset 0),
// 203.0.113.0/24 + 2001:db8:f0::/48 US (allowed for none). `split`: the same as /25s and /49s with
// class ids swapped (a frame mixing two generations would be misclassified).
policy::CompiledPolicy TestPolicy(policy::Mode mode, bool split = false,
                                  std::optional<policy::Quota> quota = std::nullopt);

using Fd = base::UniqueFd;

sockaddr_storage Addr(const char* ip, std::uint16_t port);
socklen_t Len(const sockaddr_storage& ss);
// Receives datagrams until `want` arrived or the deadline passed; returns how many.
int UdpReceive(int fd, int want, std::chrono::milliseconds deadline);
int UdpDrain(int fd);

class Topology {
 public:
  // prefix: unique per test (namespace names are prefix + "r", "d", "g0"...); at most 60 guests.
  explicit Topology(const std::string& prefix, int guests = 1, bool ipv6 = false);
  ~Topology();
  Netns& router() { return *r_; }
  Netns& dest() { return *d_; }
  Netns& guest(int i) { return *g_.at(static_cast<std::size_t>(i)); }
  int guests() const { return static_cast<int>(g_.size()); }
  unsigned tap(int i) const { return taps_.at(static_cast<std::size_t>(i)); }
  std::string tap_name(int i) const {
    std::string name = "r";  // (GCC 12 -Wrestrict false positive on "r" + std::to_string)
    name += std::to_string(i);
    return name;
  }
  // UDP socket in D bound to ip:port (large receive buffer).
  Fd UdpServer(const char* ip, std::uint16_t port);
  // Unconnected UDP socket in guest i.
  Fd GuestSocket(int i, int family = AF_INET);
  // Whether a clsact qdisc is on tap i.
  bool HasClsact(int i);

 private:
  std::unique_ptr<Netns> r_, d_;
  std::vector<std::unique_ptr<Netns>> g_;
  std::vector<unsigned> taps_;
};

// Lock-step UDP traffic from the guests (round robin): one datagram to the forbidden address, then
// one to the allowed address that it waits for (2 s), so a slow receiver never looks like a drop.
// Runs on its own thread until Stop() or a time bound.
class LockStepTraffic {
 public:
  LockStepTraffic(Topology& topo, std::uint16_t port,
                  std::chrono::seconds bound = std::chrono::seconds(120));
  ~LockStepTraffic();
  // Waits until `n` more allowed datagrams were received than when called (false at the deadline).
  bool WaitExchanges(std::uint64_t n, std::chrono::milliseconds deadline);
  void Stop();
  std::uint64_t sent_allowed() const { return sent_allowed_; }
  std::uint64_t sent_forbidden() const { return sent_forbidden_; }
  std::uint64_t received_allowed() const { return received_allowed_; }
  std::uint64_t lost() const { return lost_; }
  // Sent per guest (allowed = forbidden per guest, up to one in flight).
  std::uint64_t sent_allowed(int guest) const {
    return per_guest_[static_cast<std::size_t>(guest)];
  }
  // Forbidden datagrams that reached D (must stay 0).
  int ForbiddenDelivered() { return UdpDrain(forbidden_.Get()); }
  static constexpr std::size_t kPayload = 32;
  static constexpr std::uint64_t kFrameLen = 14 + 20 + 8 + kPayload;  // skb->len on the tap

 private:
  Fd allowed_, forbidden_;
  std::vector<Fd> tx_;
  std::atomic<bool> done_{false};
  std::atomic<std::uint64_t> sent_allowed_{0}, sent_forbidden_{0}, received_allowed_{0}, lost_{0};
  std::vector<std::atomic<std::uint64_t>> per_guest_;
  std::thread thread_;
};

}  // namespace sovguard::net::testing
