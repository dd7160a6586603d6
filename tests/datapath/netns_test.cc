// Real traffic through the residency program: three namespaces (guest G, router R standing in for
// the host with the guest's tap, destination D with an "EU" and a "non-EU" address). The program
// sits on clsact ingress of R's end of the G-R veth, exactly where it sits on a tap.
//   G 192.0.2.2, 2001:db8:1::2  --  R 192.0.2.1 | 198.51.100.1, 203.0.113.1, 2001:db8:e0::1, f0::1
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

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <thread>

#include "enforcer/datapath/frames.h"
#include "enforcer/datapath/net_datapath.h"
#include "tests/datapath/netns.h"

namespace sovguard::datapath {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::Netns;

constexpr std::uint16_t kDE = 0x4445, kUS = 0x5553;

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

sockaddr_storage Addr(const char* ip, std::uint16_t port) {
  sockaddr_storage ss{};
  if (std::strchr(ip, ':')) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, ip, &a->sin6_addr);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, ip, &a->sin_addr);
  }
  return ss;
}
socklen_t Len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}
bool Readable(int fd, std::chrono::milliseconds timeout) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  return ::poll(&p, 1, static_cast<int>(timeout.count())) == 1;
}

// Test policy: 198.51.100.0/24 + 2001:db8:e0::/48 in DE (allowed for dataset 0), 203.0.113.0/24 +
// 2001:db8:f0::/48 in US (allowed for none), the router's own addresses an exception. With
// `split`, the DE/US ranges are given as /25s and /49s and classes are numbered the other way
// round, so a packet mixing two generations' tables would be misclassified.
policy::CompiledPolicy TestPolicy(policy::Mode mode, bool split = false,
                                  std::optional<policy::Quota> quota = std::nullopt) {
  policy::CompiledPolicy p;
  p.datasets.push_back({.id = "patients", .index = 0, .mode = mode, .egress = quota});
  const std::uint16_t de = split ? 2 : 1, us = split ? 1 : 2;
  p.classes.resize(4);
  p.classes[de] = sg_class{.allowed_datasets = 1, .country = kDE};
  p.classes[us] = sg_class{.allowed_datasets = 0, .country = kUS};
  p.classes[3] = sg_class{.allowed_datasets = ~0ULL, .flags = SG_CLASS_EXCEPTION};
  auto v4 = [&](std::uint32_t a, std::uint8_t len, std::uint16_t c) {
    p.ipv4.push_back({.addr = a, .len = len, .class_id = c});
  };
  auto v6 = [&](std::uint8_t third, std::uint8_t fourth, std::uint8_t len, std::uint16_t c) {
    policy::Ipv6Prefix e{};
    e.addr = {0x20, 0x01, 0x0d, 0xb8, 0x00, third, fourth};
    e.len = len;
    e.class_id = c;
    p.ipv6.push_back(e);
  };
  if (split) {
    v4(0xC6336400, 25, de), v4(0xC6336480, 25, de), v4(0xCB007100, 25, us), v4(0xCB007180, 25, us);
    v6(0xe0, 0x00, 49, de), v6(0xe0, 0x80, 49, de), v6(0xf0, 0x00, 49, us), v6(0xf0, 0x80, 49, us);
  } else {
    v4(0xC6336400, 24, de), v4(0xCB007100, 24, us);
    v6(0xe0, 0, 48, de), v6(0xf0, 0, 48, us);
  }
  v4(0xC0000201, 32, 3);
  policy::Ipv6Prefix r{};
  r.addr = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
  r.len = 128;
  r.class_id = 3;
  p.ipv6.push_back(r);
  std::sort(p.ipv4.begin(), p.ipv4.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  std::sort(p.ipv6.begin(), p.ipv6.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  p.digest[0] = split;
  return p;
}

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string base = "sgdp" + std::to_string(::getpid()) + "x" + std::to_string(++counter_);
    g_ = std::make_unique<Netns>(base + "g");
    r_ = std::make_unique<Netns>(base + "r");
    d_ = std::make_unique<Netns>(base + "d");
    r_->Ip("link add r0 type veth peer name g0 netns " + g_->name());
    r_->Ip("link add r1 type veth peer name d0 netns " + d_->name());
    g_->Ip("addr add 192.0.2.2/24 dev g0");
    g_->Ip("addr add 2001:db8:1::2/64 dev g0 nodad");
    g_->Ip("link set g0 up");
    g_->Ip("route add default via 192.0.2.1");
    g_->Ip("-6 route add default via 2001:db8:1::1");
    r_->Ip("addr add 192.0.2.1/24 dev r0");
    r_->Ip("addr add 2001:db8:1::1/64 dev r0 nodad");
    for (const char* a : {"198.51.100.1/24", "203.0.113.1/24"})
      r_->Ip(std::string("addr add ") + a + " dev r1");
    for (const char* a : {"2001:db8:e0::1/64", "2001:db8:f0::1/64"})
      r_->Ip(std::string("addr add ") + a + " dev r1 nodad");
    r_->Ip("link set r0 up");
    r_->Ip("link set r1 up");
    r_->Sysctl("net.ipv4.ip_forward", "1");
    r_->Sysctl("net.ipv6.conf.all.forwarding", "1");
    for (const char* a : {"198.51.100.10/24", "203.0.113.10/24"})
      d_->Ip(std::string("addr add ") + a + " dev d0");
    for (const char* a : {"2001:db8:e0::10/64", "2001:db8:f0::10/64"})
      d_->Ip(std::string("addr add ") + a + " dev d0 nodad");
    d_->Ip("link set d0 up");
    d_->Ip("route add default via 198.51.100.1");
    d_->Ip("-6 route add default via 2001:db8:e0::1");
    tap_ = r_->IfIndex("r0");
    dp_ = std::make_unique<NetDatapath>(
        NetDatapathOptions{.events_per_sec = 100000, .event_burst = 100000});
  }
  void TearDown() override {
    dp_.reset();
    // Nothing of ours may stay on the interface.
    EXPECT_EQ(
        std::system(
            ("ip netns exec " + r_->name() + " tc qdisc show dev r0 | grep -q clsact").c_str()) ==
            0,
        false)
        << "clsact qdisc left behind";
    d_.reset();
    r_.reset();
    g_.reset();
  }
  void Attach(std::uint64_t datasets = 1) {
    dp_->AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = datasets, .netns = r_->path()});
  }

  // UDP socket in D bound to ip:port.
  Fd UdpServer(const char* ip, std::uint16_t port) {
    const auto a = Addr(ip, port);
    Fd s(d_->Socket(a.ss_family, SOCK_DGRAM, 0));
    int big = 4 << 20;
    ::setsockopt(s.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    EXPECT_EQ(::bind(s.get(), reinterpret_cast<const sockaddr*>(&a), Len(a)), 0)
        << ip << " " << std::strerror(errno);
    return s;
  }
  // Sends n datagrams from G to ip:port.
  void UdpSend(const char* ip, std::uint16_t port, int n, std::size_t size = 64) {
    const auto a = Addr(ip, port);
    Fd s(g_->Socket(a.ss_family, SOCK_DGRAM, 0));
    std::vector<char> buf(size, 'x');
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(::sendto(s.get(), buf.data(), buf.size(), 0, reinterpret_cast<const sockaddr*>(&a),
                         Len(a)),
                static_cast<ssize_t>(size))
          << std::strerror(errno);
  }
  // Receives datagrams until `want` arrived or the deadline passed; returns how many.
  static int UdpReceive(int fd, int want, std::chrono::milliseconds deadline) {
    int got = 0;
    const auto end = Clock::now() + deadline;
    char buf[2048];
    while (got < want && Clock::now() < end) {
      if (!Readable(fd, std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now())))
        break;
      while (::recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) ++got;
    }
    return got;
  }
  static int UdpDrain(int fd) {
    int got = 0;
    char buf[2048];
    while (::recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) ++got;
    return got;
  }
  // TCP connect from G; true when the handshake completes within timeout.
  bool TcpConnect(const char* ip, std::uint16_t port, std::chrono::milliseconds timeout) {
    const auto a = Addr(ip, port);
    Fd s(g_->Socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0));
    if (::connect(s.get(), reinterpret_cast<const sockaddr*>(&a), Len(a)) == 0) return true;
    if (errno != EINPROGRESS) return false;
    pollfd p{.fd = s.get(), .events = POLLOUT, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    int err = 0;
    socklen_t len = sizeof(err);
    ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return false;
    const char msg[] = "residency";
    return ::send(s.get(), msg, sizeof(msg), 0) == sizeof(msg);
  }
  // ICMP/ICMPv6 echo from G; true when the reply comes back within timeout.
  bool Ping(const char* ip, std::chrono::milliseconds timeout) {
    const auto a = Addr(ip, 0);
    const bool v6 = a.ss_family == AF_INET6;
    Fd s(g_->Socket(a.ss_family, SOCK_RAW, v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP}));
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
    if (::sendto(s.get(), pkt, sizeof(pkt), 0, reinterpret_cast<const sockaddr*>(&a), Len(a)) !=
        sizeof(pkt))
      return false;
    const auto end = Clock::now() + timeout;
    std::uint8_t buf[1500];
    while (Clock::now() < end) {
      if (!Readable(s.get(),
                    std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now())))
        break;
      const ssize_t n = ::recv(s.get(), buf, sizeof(buf), MSG_DONTWAIT);
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
  std::unique_ptr<Netns> g_, r_, d_;
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
  Fd tcp(d_->Socket(AF_INET6, SOCK_STREAM, 0));
  const auto any = Addr("::", 5001);
  ASSERT_EQ(::bind(tcp.get(), reinterpret_cast<const sockaddr*>(&any), Len(any)), 0);
  ASSERT_EQ(::listen(tcp.get(), 16), 0);

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
  EXPECT_EQ(UdpReceive(eu.get(), 10, 5s), 10);
  EXPECT_EQ(UdpReceive(eu6.get(), 10, 5s), 10);
  EXPECT_EQ(UdpDrain(us.get()), 0);
  EXPECT_EQ(UdpDrain(us6.get()), 0);

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
    dp_->AddGuest({.name = "ghost", .ifindex = 99999, .datasets = 1, .netns = r_->path()});
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
  EXPECT_EQ(UdpReceive(us.get(), 10, 5s), 10);
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
  EXPECT_EQ(UdpReceive(eu.get(), 10, 5s), 10);
  auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.packets, 10u);
  EXPECT_EQ(c.dropped_packets, 10u);
  EXPECT_EQ(c.quota_used_bytes, 10 * kFrame);
  EXPECT_LE(c.quota_used_bytes, kBudget);
  EXPECT_GT(c.quota_used_bytes + kFrame, kBudget) << "stopped more than one frame early";
  EXPECT_EQ(UdpDrain(eu.get()), 0);
  bool quota_event = false;
  for (const auto& e : Events()) quota_event |= e.reason == SG_NET_REASON_QUOTA;
  EXPECT_TRUE(quota_event);
  // Next window: one datagram per try until one gets through (bounded); the kernel resets the
  // window by itself.
  bool resumed = false;
  for (int i = 0; i < 60 && !resumed; ++i) {
    UdpSend("198.51.100.10", 5003, 1, kPayload);
    resumed = UdpReceive(eu.get(), 1, 100ms) == 1;
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
  Fd eu(UdpServer("198.51.100.10", 5004)), us(UdpServer("203.0.113.10", 5004));
  const auto eu_addr = Addr("198.51.100.10", 5004), us_addr = Addr("203.0.113.10", 5004);
  Fd tx(g_->Socket(AF_INET, SOCK_DGRAM, 0));
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> sent_allowed{0}, sent_forbidden{0}, received_allowed{0}, lost{0};
  // Lock-step sender: one forbidden datagram, then one allowed one it waits for (so a slow
  // receiver can never look like a drop); bounded in count and time.
  std::thread sender([&] {
    const auto end = Clock::now() + 120s;
    char msg[32] = "swap";
    while (!done && Clock::now() < end) {
      ::sendto(tx.get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&us_addr),
               Len(us_addr));
      ++sent_forbidden;
      ::sendto(tx.get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&eu_addr),
               Len(eu_addr));
      ++sent_allowed;
      if (UdpReceive(eu.get(), 1, 2s) == 1)
        ++received_allowed;
      else
        ++lost;
    }
  });
  // Traffic must be flowing before the first swap and across every one of them.
  const auto until = Clock::now() + 10s;
  while (received_allowed < 10 && Clock::now() < until) std::this_thread::yield();
  int swaps = 0, swaps_with_traffic = 0;
  for (; swaps < 100; ++swaps) {
    const std::uint64_t before = sent_allowed;
    dp_->ApplyPolicy(swaps % 2 ? a : b);
    swaps_with_traffic += sent_allowed > before;
  }
  done = true;
  sender.join();
  EXPECT_EQ(swaps_with_traffic, 100) << "some swaps happened with no traffic flowing";
  EXPECT_EQ(lost.load(), 0u) << "allowed datagrams wrongly dropped";
  EXPECT_EQ(received_allowed.load(), sent_allowed.load());
  EXPECT_EQ(UdpDrain(us.get()), 0) << "forbidden datagrams delivered";
  const auto c = dp_->ReadCounters(tap_, 0);
  EXPECT_EQ(c.dropped_packets, sent_forbidden.load());
  EXPECT_EQ(dp_->Status().swaps, 101u);
  std::printf("swap test: %d swaps, %llu allowed / %llu forbidden datagrams during them\n", swaps,
              static_cast<unsigned long long>(sent_allowed.load()),
              static_cast<unsigned long long>(sent_forbidden.load()));
}

// A guest that tags its own frames (802.1Q, QinQ) on its tap is classified by the inner
// destination: the kernel moves the outer tag to metadata before tc ingress, the parser walks what
// is left in the data. Frames are written raw into the guest's end (this kernel has no VLAN
// devices), so only the program's verdicts are observed, through its counters.
TEST_F(NetnsTest, VlanTaggedGuestFramesAreClassifiedToo) {
  dp_->ApplyPolicy(TestPolicy(policy::Mode::kEnforce));
  Attach();
  Fd raw(g_->Socket(AF_PACKET, SOCK_RAW, 0));
  sockaddr_ll ll{};
  ll.sll_family = AF_PACKET;
  ll.sll_ifindex = static_cast<int>(g_->IfIndex("g0"));
  ll.sll_halen = 6;
  auto send = [&](const std::vector<std::uint8_t>& f) {
    ASSERT_EQ(::sendto(raw.get(), f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&ll),
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
    first.AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = 1, .netns = r_->path()});
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
    second.AddGuest({.name = "vm-g", .ifindex = tap_, .datasets = 1, .netns = r_->path()});
    EXPECT_TRUE(Ping("2001:db8:e0::10", 5s));
    EXPECT_FALSE(Ping("2001:db8:f0::10", 1s));
    EXPECT_GE(second.ReadCounters(tap_, 0).dropped_packets, 1u);
    second.Unpin();
  }
  EXPECT_NE(::stat((std::string(dir) + "/sg_guests").c_str(), &st), 0) << "pins left behind";
  // The first object created the clsact qdisc and left it to its successor: remove it here.
  testing::Sh("ip netns exec " + r_->name() + " tc qdisc del dev r0 clsact");
  EXPECT_TRUE(Ping("203.0.113.10", 5s));
}

}  // namespace
}  // namespace sovguard::datapath
