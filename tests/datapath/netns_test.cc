// Real traffic through the residency program: three namespaces (guest G, router R standing in for
// the host with the guest's tap, destination D with an "EU" and a "non-EU" address), built by
// testing::Topology with one guest and IPv6. The program sits on clsact ingress of R's end of the
// G-R veth, exactly where it sits on a tap.
//   G 192.0.2.2, 2001:db8:1::2  --  R 192.0.2.1, 2001:db8:1::1 | 198.51.100.1, 203.0.113.1, ...
//   D 198.51.100.10 (DE), 203.0.113.10 (US), 2001:db8:e0::10 (DE), 2001:db8:f0::10 (US)
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <netinet/ip_icmp.h>
#include <poll.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>
#include <tuple>

#include "enforcer/net/frames.h"
#include "enforcer/net/net_datapath.h"
#include "tests/datapath/topology.h"

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::Addr;
using testing::Fd;
using testing::kUS;
using testing::Len;
using testing::LockStepTraffic;
using testing::Topology;
using testing::UdpDrain;
using testing::UdpReceive;

bool Readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// testing::TestPolicy plus the router's own addresses on the guest link as an exception (class 3).
// The /128 also puts 2001:db8::/32 below /64, so its /32 is resolved with the LPM trie behind the
// nodes here.
policy::CompiledPolicy TestPolicy(policy::Mode mode, bool split = false,
                                  std::optional<policy::Quota> quota = std::nullopt) {
  policy::CompiledPolicy p = testing::TestPolicy(mode, split, quota);
  p.ipv4.push_back({.addr = 0xC0000201, .len = 32, .class_id = 3});
  policy::Ipv6Prefix r{};
  r.addr = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  r.len = 128;
  r.class_id = 3;
  p.ipv6.push_back(r);
  std::sort(p.ipv4.begin(), p.ipv4.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  std::sort(p.ipv6.begin(), p.ipv6.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  return p;
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    topo_ = std::make_unique<Topology>(
        "sgdp" + std::to_string(::getpid()) + "x" + std::to_string(++counter_), 1, true);
    tap_ = topo_->tap(0);
    dp_ = std::make_unique<NetDatapath>(
        NetDatapathOptions{.events_per_sec = 100000, .event_burst = 100000});
  }
  void TearDown() override {
    dp_.reset();
    // Nothing of ours may stay on the interface.
    EXPECT_FALSE(topo_->HasClsact(0)) << "clsact qdisc left behind";
    topo_.reset();
  }
  testing::Netns& g() { return topo_->guest(0); }
  testing::Netns& r() { return topo_->router(); }
  testing::Netns& d() { return topo_->dest(); }
  void Attach(std::uint64_t datasets = 1) {
    dp_->AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = datasets, .netns = r().path()});
  }
  // UDP socket in D bound to ip:port.
  Fd UdpServer(const char* ip, std::uint16_t port) { return topo_->UdpServer(ip, port); }
  // Sends n datagrams from G to ip:port.
  void UdpSend(const char* ip, std::uint16_t port, int n, std::size_t size = 64) {
    const auto a = Addr(ip, port);
    Fd s(g().Socket(a.ss_family, SOCK_DGRAM, 0));
    std::vector<char> buf(size, 'x');
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(::sendto(s.Get(), buf.data(), buf.size(), 0, reinterpret_cast<const sockaddr*>(&a),
                         Len(a)),
                static_cast<ssize_t>(size))
          << std::strerror(errno);
  }
  // TCP connect from G; true when the handshake completes within timeout.
  bool TcpConnect(const char* ip, std::uint16_t port, std::chrono::milliseconds timeout) {
    const auto a = Addr(ip, port);
    Fd s(g().Socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0));
    if (::connect(s.Get(), reinterpret_cast<const sockaddr*>(&a), Len(a)) == 0) return true;
    if (errno != EINPROGRESS) return false;
    pollfd p{.fd = s.Get(), .events = POLLOUT, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(s.Get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return false;
    const char msg[] = "residency";
    return ::send(s.Get(), msg, sizeof(msg), 0) == sizeof(msg);
  }
  // ICMP/ICMPv6 echo from G; true when the reply comes back within timeout.
  bool Ping(const char* ip, std::chrono::milliseconds timeout) {
    const auto a = Addr(ip, 0);
    const bool v6 = a.ss_family == AF_INET6;
    Fd s(g().Socket(a.ss_family, SOCK_RAW, v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP}));
    const std::uint16_t id = static_cast<std::uint16_t>(::getpid() ^ ++ping_seq_);
    std::uint8_t pkt[16] = {static_cast<std::uint8_t>(v6 ? ICMP6_ECHO_REQUEST : ICMP_ECHO),
                            0,
                            0,
                            0,
                            static_cast<std::uint8_t>(id >> 8),
                            static_cast<std::uint8_t>(id),
                            0,
                            1};
    if (!v6) {  // the kernel fills the ICMPv6 checksum, not the ICMPv4 one
      std::uint32_t sum = 0;
      for (int i = 0; i < 16; i += 2) sum += (pkt[i] << 8) | pkt[i + 1];
      while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
      pkt[2] = static_cast<std::uint8_t>(~sum >> 8), pkt[3] = static_cast<std::uint8_t>(~sum);
    }
    if (::sendto(s.Get(), pkt, sizeof(pkt), 0, reinterpret_cast<const sockaddr*>(&a), Len(a)) !=
        sizeof(pkt))
      return false;
    const auto end = Clock::now() + timeout;
    std::uint8_t buf[1500];
    while (Clock::now() < end) {
      if (!Readable(s.Get(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now())))
        break;
      const ssize_t n = ::recv(s.Get(), buf, sizeof(buf), MSG_DONTWAIT);
      if (n <= 0) continue;
      const std::uint8_t* icmp =
          v6 ? buf : buf + (buf[0] & 0x0f) * 4;  // raw v4 includes the IP header
      const std::uint8_t reply = v6 ? ICMP6_ECHO_REPLY : ICMP_ECHOREPLY;
      if (icmp[0] == reply && icmp[4] == (id >> 8) && icmp[5] == (id & 0xff)) return true;
    }
    return false;
  }
  std::vector<sg_net_event> Events() {
    std::vector<sg_net_event> out;
    while (dp_->PollEvents(0, [&](const sg_net_event& e) { out.push_back(e); }) > 0) {
    }
    return out;
  }

  static inline int counter_ = 0;
  int ping_seq_ = 0;
  std::unique_ptr<Topology> topo_;
  unsigned tap_ = 0;
  std::unique_ptr<NetDatapath> dp_;
};

TEST_F(NetnsTest, WithoutProgramEverythingFlows) {
  // The topology itself works: a forbidden destination is reachable until we attach.
  EXPECT_TRUE(Ping("203.0.113.10", 5s));
  EXPECT_TRUE(Ping("2001:db8:f0::10", 5s));
}

TEST_F(NetnsTest, EnforceLetsAllowedThroughAndStopsForbidden) {
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kEnforce));
  Attach();
  Fd tcp(d().Socket(AF_INET6, SOCK_STREAM, 0));
  const auto any = Addr("::", 5001);
  ASSERT_EQ(::bind(tcp.Get(), reinterpret_cast<const sockaddr*>(&any), Len(any)), 0);
  ASSERT_EQ(::listen(tcp.Get(), 16), 0);

  // ICMP
  EXPECT_TRUE(Ping("198.51.100.10", 5s));
  EXPECT_TRUE(Ping("2001:db8:e0::10", 5s));
  EXPECT_FALSE(Ping("203.0.113.10", 1s));
  EXPECT_FALSE(Ping("2001:db8:f0::10", 1s));
  // TCP
  EXPECT_TRUE(TcpConnect("198.51.100.10", 5001, 5s));
  EXPECT_TRUE(TcpConnect("2001:db8:e0::10", 5001, 5s));
  EXPECT_FALSE(TcpConnect("203.0.113.10", 5001, 1s));
  EXPECT_FALSE(TcpConnect("2001:db8:f0::10", 5001, 1s));
  // UDP: forbidden first, then allowed on the same path; once the allowed ones are in, the
  // forbidden ones would have been too.
  Fd eu(UdpServer("198.51.100.10", 5002)), us(UdpServer("203.0.113.10", 5002));
  Fd eu6(UdpServer("2001:db8:e0::10", 5002)), us6(UdpServer("2001:db8:f0::10", 5002));
  UdpSend("203.0.113.10", 5002, 10);
  UdpSend("2001:db8:f0::10", 5002, 10);
  UdpSend("198.51.100.10", 5002, 10);
  UdpSend("2001:db8:e0::10", 5002, 10);
  EXPECT_EQ(UdpReceive(eu.Get(), 10, 5s), 10);
  EXPECT_EQ(UdpReceive(eu6.Get(), 10, 5s), 10);
  EXPECT_EQ(UdpDrain(us.Get()), 0);
  EXPECT_EQ(UdpDrain(us6.Get()), 0);

  const auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_GE(c.packets, 20u + 2u + 2u);
  EXPECT_GE(c.dropped_packets, 20u + 2u + 2u);  // UDP, ICMP, at least one SYN each
  EXPECT_EQ(c.would_drop_packets, 0u);
  bool udp4 = false, tcp6 = false, icmp4 = false;
  for (const auto& e : Events()) {
    EXPECT_EQ(e.verdict, SG_VERDICT_DROP);
    EXPECT_EQ(e.country, kUS) << FormatEvent(e);
    EXPECT_EQ(e.ifindex, tap_);
    const bool to_us4 =
        e.family == 4 && e.dst[0] == 203 && e.dst[1] == 0 && e.dst[2] == 113 && e.dst[3] == 10;
    udp4 |= to_us4 && e.l4proto == IPPROTO_UDP;
    icmp4 |= to_us4 && e.l4proto == IPPROTO_ICMP;
    tcp6 |= e.family == 6 && e.l4proto == IPPROTO_TCP;
  }
  EXPECT_TRUE(udp4 && tcp6 && icmp4);
  const auto st = dp_->Status();
  ASSERT_EQ(st.guests.size(), 1u);
  EXPECT_TRUE(st.guests[0].attached);
  EXPECT_EQ(st.guests[0].datasets.at(0).id, "patients");
  EXPECT_EQ(st.guests[0].datasets.at(0).mode, policy::Mode::kEnforce);

  // Detach: the forbidden destination is reachable again and nothing of ours is left.
  dp_->Detach();
  EXPECT_TRUE(Ping("203.0.113.10", 5s));
}

TEST_F(NetnsTest, FailedAttachLeavesNothingBehind) {
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kEnforce));
  try {
    dp_->AddGuest({.name = "ghost", .ifindex = 99999, .datasets = 1, .netns = r().path()});
    ADD_FAILURE() << "attached to a missing interface";
  } catch (const DatapathError& e) {
    EXPECT_NE(std::string(e.what()).find("ifindex 99999"), std::string::npos) << e.what();
    EXPECT_NE(e.error(), 0);
  }
  EXPECT_TRUE(dp_->Status().guests.empty());
  // The slot is free again and the real tap still attaches.
  Attach();
  EXPECT_EQ(dp_->Status().guests.at(0).slot, 0u);
  EXPECT_FALSE(Ping("203.0.113.10", 1s));
}

TEST_F(NetnsTest, AuditPassesAndCounts) {
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kAudit));
  Attach();
  Fd us(UdpServer("203.0.113.10", 5002));
  UdpSend("203.0.113.10", 5002, 10);
  EXPECT_EQ(UdpReceive(us.Get(), 10, 5s), 10);
  EXPECT_TRUE(Ping("2001:db8:f0::10", 5s));
  const auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.would_drop_packets, 11u);
  EXPECT_EQ(c.dropped_packets, 0u);
  EXPECT_EQ(c.packets, 11u);
  const auto events = Events();
  ASSERT_EQ(events.size(), 11u);
  for (const auto& e : events) EXPECT_EQ(e.verdict, SG_VERDICT_AUDIT);
  EXPECT_EQ(dp_->Status().guests.at(0).datasets.at(0).mode, policy::Mode::kAudit);
}

TEST_F(NetnsTest, QuotaStopsAtTheBudgetAndResumesNextWindow) {
  constexpr std::size_t kPayload = 972;
  constexpr std::uint64_t kFrame = 14 + 20 + 8 + kPayload;  // skb->len on the tap: whole frame
  constexpr std::uint64_t kBudget = 10 * kFrame + kFrame / 2;
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kEnforce, false,
                              policy::Quota{.bytes = kBudget, .window_seconds = 1}));
  Attach();
  Fd eu(UdpServer("198.51.100.10", 5003));
  const auto start = Clock::now();
  UdpSend("198.51.100.10", 5003, 20, kPayload);
  EXPECT_EQ(UdpReceive(eu.Get(), 10, 5s), 10);
  auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.packets, 10u);
  EXPECT_EQ(c.dropped_packets, 10u);
  EXPECT_EQ(c.quota_used_bytes, 10 * kFrame);
  EXPECT_LE(c.quota_used_bytes, kBudget);
  EXPECT_GT(c.quota_used_bytes + kFrame, kBudget) << "stopped more than one frame early";
  EXPECT_EQ(UdpDrain(eu.Get()), 0);
  bool quota_event = false;
  for (const auto& e : Events()) quota_event |= e.reason == SG_NET_REASON_QUOTA;
  EXPECT_TRUE(quota_event);
  // Next window: one datagram per try until one gets through (bounded); the kernel resets the
  // window by itself.
  bool resumed = false;
  for (int i = 0; i < 60 && !resumed; ++i) {
    UdpSend("198.51.100.10", 5003, 1, kPayload);
    resumed = UdpReceive(eu.Get(), 1, 100ms) == 1;
  }
  EXPECT_TRUE(resumed);
  EXPECT_GE(Clock::now() - start, 900ms) << "resumed before the window ended";
  c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.packets, 11u);
  EXPECT_EQ(c.quota_used_bytes, kFrame);
  const std::string status = FormatStatus(dp_->Status());
  EXPECT_NE(status.find("dataset patients [#0] ENFORCE: passed 11 pkts"), std::string::npos)
      << status;
  EXPECT_NE(
      status.find("quota " + std::to_string(kFrame) + "/" + std::to_string(kBudget) + " B per 1 s"),
      std::string::npos)
      << status;
}

TEST_F(NetnsTest, HundredSwapsUnderTrafficLeakNothingAndDropNothingAllowed) {
  const auto a = TestPolicy(policy::Mode::kEnforce, false);
  const auto b = TestPolicy(policy::Mode::kEnforce, true);
  dp_->ApplyPolicy(a);
  Attach();
  // Lock-step sender: one forbidden datagram, then one allowed one it waits for (so a slow
  // receiver can never look like a drop); bounded in count and time.
  LockStepTraffic traffic(*topo_, 5004);
  // Traffic must be flowing before the first swap and across every one of them.
  traffic.WaitExchanges(10, 10s);
  int swaps = 0, swaps_with_traffic = 0;
  for (; swaps < 100; ++swaps) {
    const std::uint64_t before = traffic.sent_allowed();
    dp_->ApplyPolicy(swaps % 2 ? a : b);
    swaps_with_traffic += traffic.sent_allowed() > before;
  }
  traffic.Stop();
  EXPECT_EQ(swaps_with_traffic, 100) << "some swaps happened with no traffic flowing";
  EXPECT_EQ(traffic.lost(), 0u) << "allowed datagrams wrongly dropped";
  EXPECT_EQ(traffic.received_allowed(), traffic.sent_allowed());
  EXPECT_EQ(traffic.ForbiddenDelivered(), 0) << "forbidden datagrams delivered";
  const auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.dropped_packets, traffic.sent_forbidden());
  EXPECT_EQ(dp_->Status().swaps, 101u);
  std::printf("swap test: %d swaps, %llu allowed / %llu forbidden datagrams during them\n", swaps,
              static_cast<unsigned long long>(traffic.sent_allowed()),
              static_cast<unsigned long long>(traffic.sent_forbidden()));
}

// A guest that tags its own frames (802.1Q, QinQ) on its tap is classified by the inner
// destination: the kernel moves the outer tag to metadata before tc ingress, the parser walks what
// is left in the data. Frames are written raw into the guest's end (this kernel has no VLAN
// devices), so only the program's verdicts are observed, through its counters.
TEST_F(NetnsTest, VlanTaggedGuestFramesAreClassifiedToo) {
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kEnforce));
  Attach();
  Fd raw(g().Socket(AF_PACKET, SOCK_RAW, 0));
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_ifindex = static_cast<int>(g().IfIndex("g0"));
  ll.sll_halen = 6;
  auto send = [&](const std::vector<std::uint8_t>& f) {
    ASSERT_EQ(::sendto(raw.Get(), f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&ll),
                       sizeof(ll)),
              static_cast<ssize_t>(f.size()))
        << std::strerror(errno);
  };
  auto wait_for = [&](auto pred) {
    const auto end = Clock::now() + 5s;
    while (!pred(dp_->ReadCounters(tap_, 0)) && Clock::now() < end) std::this_thread::yield();
    return pred(dp_->ReadCounters(tap_, 0));
  };
  for (int tags : {1, 2}) {
    const auto before = dp_->ReadCounters(tap_, 0);
    send(frames::Ipv4(0xCB00710A, tags, 17));  // 203.0.113.10: US
    send(frames::Ipv4(0xC633640A, tags, 17));  // 198.51.100.10: DE
    EXPECT_TRUE(wait_for([&](const DatasetCounters& c) {
      return c.dropped_packets == before.dropped_packets + 1 && c.packets == before.packets + 1;
    })) << tags
        << " tag(s)";
  }
  std::array<std::uint8_t, 16> us6{0x20, 0x01, 0x0d, 0xb8, 0, 0xf0, 0, 0,
                                   0,    0,    0,    0,    0, 0,    0, 0x10};
  const auto before = dp_->ReadCounters(tap_, 0);
  send(frames::Ipv6(us6, 1));
  EXPECT_TRUE(wait_for(
      [&](const DatasetCounters& c) { return c.dropped_packets == before.dropped_packets + 1; }));
}

// Groundwork for restarts: with a pin directory the maps outlive the object, the tc filter stays
// (detach_on_destroy = false) and keeps enforcing with no daemon at all, and a successor adopts the
// maps (active policy included) and takes the filter over.
TEST_F(NetnsTest, PinnedMapsKeepEnforcingAcrossARestart) {
  char dir[] = "/tmp/sgdp-bpffs-XXXXXX";
  ASSERT_NE(::mkdtemp(dir), nullptr);
  ASSERT_EQ(::mount("bpf", dir, "bpf", 0, nullptr), 0) << std::strerror(errno);
  struct Cleanup {
    const char* d;
    ~Cleanup() {
      ::umount2(d, MNT_DETACH);
      ::rmdir(d);
    }
  } cleanup{dir};
  NetDatapathOptions opts{.pin_dir = dir, .detach_on_destroy = false};
  {
    NetDatapath first(opts);
    first.ApplyPolicy(TestPolicy(policy::Mode::kEnforce));
    first.AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = 1, .netns = r().path()});
    EXPECT_TRUE(Ping("198.51.100.10", 5s));
  }
  struct stat st {};
  EXPECT_EQ(::stat((std::string(dir) + "/sg_guests").c_str(), &st), 0) << "maps not pinned";
  // No daemon: the filter still enforces.
  EXPECT_TRUE(Ping("198.51.100.10", 5s));
  EXPECT_FALSE(Ping("203.0.113.10", 1s));
  {
    NetDatapath second(NetDatapathOptions{.pin_dir = dir});
    EXPECT_TRUE(second.policy_loaded()) << "active generation not adopted";
    second.AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = 1, .netns = r().path()});
    EXPECT_TRUE(Ping("2001:db8:e0::10", 5s));
    EXPECT_FALSE(Ping("2001:db8:f0::10", 1s));
    EXPECT_GE(second.ReadCounters(tap_, 0).dropped_packets, 1u);
    second.Unpin();
  }
  EXPECT_NE(::stat((std::string(dir) + "/sg_guests").c_str(), &st), 0) << "pins left behind";
  // The first object created the clsact qdisc and left it to its successor: remove it here.
  testing::Sh("ip netns exec " + r().name() + " tc qdisc del dev r0 clsact");
  EXPECT_TRUE(Ping("203.0.113.10", 5s));
}

}  // namespace
}  // namespace sovguard::net
