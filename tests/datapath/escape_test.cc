// The residency program against a guest trying to escape it. Three namespaces (testing::Topology):
// guest G, router R (the program on clsact ingress of R's end of the G-R veth, where a tap's filter
// sits, ENFORCE mode) and destination D. R is a permissive router: it forwards IPv4 and IPv6,
// accepts IPv4 source routes and SRv6, and routes the IPv6 prefixes that embed IPv4 addresses
// (6to4, NAT64, IPv4-mapped, Teredo) to D.
//
// Every attack frame is crafted by hand and written raw into G's end of the veth (AF_PACKET); what
// counts is what arrives on D's interface (an AF_PACKET socket in D, matching a marker carried in
// every frame), not what the program believes. Each attack case must deliver 0 frames. Controls in
// the same run must keep working: neighbour discovery and DHCP for the guest's own addresses,
// traffic to an allowed destination. Before each count a "sync" frame to an allowed destination is
// sent behind the case's frames and awaited: once it has arrived, the case's frames would have too.
//
// Test jurisdiction table (documentation ranges only):
//   198.51.100.0/24, 2001:db8:e0::/48             DE, allowed for the guest's dataset
//   203.0.113.0/24, 2001:db8:f0::/48              US, forbidden
//   192.0.2.1, 2001:db8:1::1 (the router)         exception, any protocol
//   2002::/16, 64:ff9b::/96, ::ffff:0:0/96, 2001::/32   mapped to DE (an allowed IPv6 prefix)
//   203.0.113.53 (a resolver in the forbidden country)   exception limited to udp/53
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "enforcer/net/net_datapath.h"
#include "tests/datapath/topology.h"

namespace sovguard::net {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;
using testing::Fd;
using testing::Topology;
using Bytes = std::vector<std::uint8_t>;
using Mac = std::array<std::uint8_t, 6>;
using V6Addr = std::array<std::uint8_t, 16>;

V6Addr V6(const char* text) {
  V6Addr a{};
  if (inet_pton(AF_INET6, text, a.data()) != 1) throw std::invalid_argument(text);
  return a;
}
std::uint32_t V4(const char* text) {
  in_addr a{};
  if (inet_pton(AF_INET, text, &a) != 1) throw std::invalid_argument(text);
  return ntohl(a.s_addr);
}

void Put16(Bytes& b, std::uint16_t v) {
  b.push_back(static_cast<std::uint8_t>(v >> 8));
  b.push_back(static_cast<std::uint8_t>(v));
}
void Put32(Bytes& b, std::uint32_t v) {
  Put16(b, static_cast<std::uint16_t>(v >> 16));
  Put16(b, static_cast<std::uint16_t>(v));
}
void Append(Bytes& b, const Bytes& more) {
  b.insert(b.end(), more.begin(), more.end());
}

std::uint16_t Checksum(const std::uint8_t* p, std::size_t n, std::uint32_t sum = 0) {
  for (std::size_t i = 0; i + 1 < n; i += 2) sum += (p[i] << 8) | p[i + 1];
  if (n & 1) sum += p[n - 1] << 8;
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<std::uint16_t>(~sum);
}

// "SGESC" + case number: what D's counter looks for.
Bytes Marker(int id) {
  Bytes m = {'S', 'G', 'E', 'S', 'C'};
  Put16(m, static_cast<std::uint16_t>(id));
  m.push_back('!');
  return m;
}

// Ethernet header; tags: 802.1Q (one) or 802.1ad + 802.1Q (two).
Bytes Eth(const Mac& dst, const Mac& src, std::uint16_t type, int tags = 0) {
  Bytes f(dst.begin(), dst.end());
  f.insert(f.end(), src.begin(), src.end());
  for (int i = 0; i < tags; ++i) {
    Put16(f, (tags > 1 && i == 0) ? 0x88A8 : 0x8100);
    Put16(f, static_cast<std::uint16_t>(100 + i));
  }
  Put16(f, type);
  return f;
}

struct Ip4 {
  std::uint32_t src = 0, dst = 0;
  std::uint8_t proto = 17;
  Bytes options;           // padded to 4 bytes by the caller
  std::uint16_t frag = 0;  // flags + offset field (host order)
  std::uint8_t ttl = 64;
};
Bytes Ipv4(const Ip4& h, const Bytes& payload) {
  Bytes b;
  const auto ihl = static_cast<std::uint8_t>(5 + h.options.size() / 4);
  b.push_back(static_cast<std::uint8_t>(0x40 | ihl));
  b.push_back(0);
  Put16(b, static_cast<std::uint16_t>(ihl * 4 + payload.size()));
  Put16(b, 0x1234);
  Put16(b, h.frag);
  b.push_back(h.ttl);
  b.push_back(h.proto);
  Put16(b, 0);
  Put32(b, h.src);
  Put32(b, h.dst);
  Append(b, h.options);
  const std::uint16_t sum = Checksum(b.data(), b.size());
  b[10] = static_cast<std::uint8_t>(sum >> 8), b[11] = static_cast<std::uint8_t>(sum);
  Append(b, payload);
  return b;
}
// UDP header (checksum 0: none, valid for IPv4; D only needs to see the frame) + data.
Bytes Udp(std::uint16_t sport, std::uint16_t dport, const Bytes& data) {
  Bytes b;
  Put16(b, sport);
  Put16(b, dport);
  Put16(b, static_cast<std::uint16_t>(8 + data.size()));
  Put16(b, 0);
  Append(b, data);
  return b;
}
Bytes Tcp(std::uint16_t sport, std::uint16_t dport, const Bytes& data) {
  Bytes b;
  Put16(b, sport);
  Put16(b, dport);
  Put32(b, 1);
  Put32(b, 0);
  b.push_back(0x50);
  b.push_back(0x02);  // SYN
  Put16(b, 65535);
  Put16(b, 0);
  Put16(b, 0);
  Append(b, data);
  return b;
}

struct Ip6 {
  V6Addr src{}, dst{};
  std::uint8_t nh = 59;
  std::uint8_t hop_limit = 64;
};
// IPv6 header + payload; when the last next header is ICMPv6 (first_nh == 58 and no extension
// headers) its checksum is filled in (a router or host checks it on what it accepts).
Bytes Ipv6(const Ip6& h, const Bytes& payload) {
  Bytes b = {0x60, 0, 0, 0};
  Put16(b, static_cast<std::uint16_t>(payload.size()));
  b.push_back(h.nh);
  b.push_back(h.hop_limit);
  b.insert(b.end(), h.src.begin(), h.src.end());
  b.insert(b.end(), h.dst.begin(), h.dst.end());
  Bytes p = payload;
  if (h.nh == 58 && p.size() >= 4) {
    std::uint32_t sum = 0;
    for (int i = 0; i < 16; i += 2) {
      sum += (h.src[i] << 8) | h.src[i + 1];
      sum += (h.dst[i] << 8) | h.dst[i + 1];
    }
    sum += static_cast<std::uint32_t>(p.size()) + 58;
    p[2] = p[3] = 0;
    const std::uint16_t c = Checksum(p.data(), p.size(), sum);
    p[2] = static_cast<std::uint8_t>(c >> 8), p[3] = static_cast<std::uint8_t>(c);
  }
  Append(b, p);
  return b;
}
Bytes Icmp6(std::uint8_t type, const Bytes& body) {
  Bytes b = {type, 0, 0, 0};
  Append(b, body);
  return b;
}

// An IPv6 extension header of 8 * (hdrlen + 1) bytes.
Bytes Ext(std::uint8_t next, std::size_t len8 = 1) {
  Bytes b = {next, static_cast<std::uint8_t>(len8 - 1)};
  b.resize(8 * len8, 0);
  if (len8 == 1) b[2] = 1, b[3] = 4;  // PadN over the rest
  return b;
}
// SRv6 routing header with segments left 1: next segment `via`... the final one `to`.
Bytes Srh(std::uint8_t next, const V6Addr& to, const V6Addr& current) {
  Bytes b = {next, 4, 4, 1, 1, 0, 0, 0};
  b.insert(b.end(), to.begin(), to.end());
  b.insert(b.end(), current.begin(), current.end());
  return b;
}

Mac MacOf(const testing::Netns& ns, const char* ifname) {
  Fd s(ns.Socket(AF_INET, SOCK_DGRAM, 0));
  ifreq ifr{};
  std::snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", ifname);
  if (::ioctl(s.Get(), SIOCGIFHWADDR, &ifr) != 0)
    throw std::runtime_error(std::string("SIOCGIFHWADDR ") + ifname + ": " + std::strerror(errno));
  Mac m{};
  std::memcpy(m.data(), ifr.ifr_hwaddr.sa_data, 6);
  return m;
}

// AF_PACKET socket on one interface of a namespace; counts received (not sent) frames that
// contain a marker.
class Tap {
 public:
  Tap(const testing::Netns& ns, const char* ifname)
      : fd_(ns.Socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL))) {
    ll_.sll_family = AF_PACKET;
    ll_.sll_protocol = htons(ETH_P_ALL);
    ll_.sll_ifindex = static_cast<int>(ns.IfIndex(ifname));
    if (::bind(fd_.Get(), reinterpret_cast<const sockaddr*>(&ll_), sizeof(ll_)) != 0)
      throw std::runtime_error(std::string("bind AF_PACKET: ") + std::strerror(errno));
    int big = 8 << 20;
    ::setsockopt(fd_.Get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
    ll_.sll_halen = 6;
  }
  void Send(const Bytes& f) {
    ASSERT_EQ(::sendto(fd_.Get(), f.data(), f.size(), 0, reinterpret_cast<const sockaddr*>(&ll_),
                       sizeof(ll_)),
              static_cast<ssize_t>(f.size()))
        << std::strerror(errno);
  }
  // Reads what is queued (until `until` is seen or the deadline passes); counts frames with each
  // marker seen so far.
  bool ReadUntil(const Bytes& until, std::chrono::milliseconds deadline) {
    const auto end = Clock::now() + deadline;
    std::uint8_t buf[4096];
    for (;;) {
      sockaddr_ll from{};
      socklen_t fl = sizeof(from);
      const ssize_t n = ::recvfrom(fd_.Get(), buf, sizeof(buf), MSG_DONTWAIT,
                                   reinterpret_cast<sockaddr*>(&from), &fl);
      if (n > 0) {
        if (from.sll_pkttype == PACKET_OUTGOING) continue;
        frames_.emplace_back(buf, buf + n);
        if (Contains(frames_.back(), until)) return true;
        continue;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
      if (left.count() <= 0) return false;
      pollfd p{.fd = fd_.Get(), .events = POLLIN, .revents = 0};
      ::poll(&p, 1, static_cast<int>(left.count()));
    }
  }
  int Count(const Bytes& marker) const {
    return static_cast<int>(std::count_if(frames_.begin(), frames_.end(),
                                          [&](const Bytes& f) { return Contains(f, marker); }));
  }
  const std::vector<Bytes>& frames() const { return frames_; }

 private:
  static bool Contains(const Bytes& f, const Bytes& m) {
    return std::search(f.begin(), f.end(), m.begin(), m.end()) != f.end();
  }
  Fd fd_;
  sockaddr_ll ll_{};
  std::vector<Bytes> frames_;
};

// The netns test policy (testing::TestPolicy: DE allowed, US forbidden, class 3 an any-protocol
// exception) + the router's addresses as that exception + the IPv6 prefixes that embed IPv4
// addresses mapped to DE.
policy::CompiledPolicy EscapePolicy() {
  policy::CompiledPolicy p = testing::TestPolicy(policy::Mode::kEnforce);
  p.ipv4.push_back({.addr = V4("192.0.2.1"), .len = 32, .class_id = 3});
  auto v6 = [&](const char* a, std::uint8_t len, std::uint16_t c) {
    p.ipv6.push_back({.addr = V6(a), .len = len, .class_id = c});
  };
  // A resolver exception limited to udp/53 (class 4, rule set 0).
  p.classes.push_back(
      {.country = 0,
       .flags = SG_CLASS_EXCEPTION | SG_CLASS_PORTS | (0u << SG_CLASS_RULESET_SHIFT)});
  sg_port_ruleset rs{};
  rs.rule[0] = {.datasets = 1, .port_lo = 53, .port_hi = 53, .proto = 17};
  p.port_rulesets.push_back(rs);
  p.ipv4.push_back({.addr = V4("203.0.113.53"), .len = 32, .class_id = 4});
  v6("2001:db8:1::1", 128, 3);
  v6("2002::", 16, 1);
  v6("64:ff9b::", 96, 1);
  v6("::ffff:0:0", 96, 1);
  v6("2001::", 32, 1);
  std::sort(p.ipv4.begin(), p.ipv4.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  std::sort(p.ipv6.begin(), p.ipv6.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  p.digest[2] = 0xE5;
  return p;
}

class EscapeTest : public ::testing::Test {
 protected:
  static constexpr int kRepeat = 20;  // frames per attack case

  void SetUp() override {
    topo_ = std::make_unique<Topology>("sgesc" + std::to_string(::getpid()), 1, true);
    auto& r = topo_->router();
    auto& d = topo_->dest();
    // A permissive router: source routes, SRv6, and routes for the embedding prefixes.
    for (const char* k :
         {"net.ipv4.conf.all.accept_source_route", "net.ipv4.conf.r0.accept_source_route",
          "net.ipv6.conf.all.seg6_enabled", "net.ipv6.conf.r0.seg6_enabled"})
      r.Sysctl(k, "1");
    for (const char* p : {"2002::/16", "64:ff9b::/96", "::ffff:0:0/96", "2001::/32"})
      r.Ip(std::string("-6 route add ") + p + " via 2001:db8:f0::10 dev rd");
    for (const char* p : {"2002::/16", "64:ff9b::/96", "::ffff:0:0/96", "2001::/32"})
      d.Ip(std::string("-6 route add ") + p + " dev d0");
    // Neighbours known before the first frame (a forwarded frame never waits on ND or ARP).
    const Mac dmac = MacOf(d, "d0");
    char lladdr[18];
    std::snprintf(lladdr, sizeof(lladdr), "%02x:%02x:%02x:%02x:%02x:%02x", dmac[0], dmac[1],
                  dmac[2], dmac[3], dmac[4], dmac[5]);
    d.Ip("addr add 203.0.113.53/24 dev d0");
    for (const char* a :
         {"203.0.113.10", "203.0.113.53", "198.51.100.10", "2001:db8:f0::10", "2001:db8:e0::10"})
      r.Ip(std::string("neigh replace ") + a + " lladdr " + lladdr + " dev rd nud permanent");
    router_mac_ = MacOf(r, "r0");
    guest_mac_ = MacOf(topo_->guest(0), "g0");
    dp_ = std::make_unique<NetDatapath>(NetDatapathOptions{});
    dp_->ApplyPolicy(EscapePolicy());
    dp_->AddGuest(
        {.name = "vm-escape", .ifindex = topo_->tap(0), .datasets = 1, .netns = r.path()});
    guest_ = std::make_unique<Tap>(topo_->guest(0), "g0");
    dest_ = std::make_unique<Tap>(d, "d0");
  }
  void TearDown() override {
    guest_.reset();
    dest_.reset();
    dp_.reset();
    topo_.reset();
  }

  Bytes E4(int tags = 0) { return Eth(router_mac_, guest_mac_, 0x0800, tags); }
  Bytes E6(int tags = 0) { return Eth(router_mac_, guest_mac_, 0x86DD, tags); }

  // Sends frames behind which a sync datagram to an allowed destination (IPv4 and IPv6) follows,
  // waits for both syncs at D, and returns how many frames with the marker arrived at D.
  int Deliver(int id, const std::vector<Bytes>& frames) {
    for (const auto& f : frames) guest_->Send(f);
    const int sync_id = 0x7000 + id;
    const Bytes s4 = Marker(sync_id), s6 = Marker(sync_id + 0x800);
    guest_->Send(Eth4Udp(V4("198.51.100.10"), 9, s4));
    guest_->Send(Eth6Udp(V6("2001:db8:e0::10"), 9, s6));
    EXPECT_TRUE(dest_->ReadUntil(s4, 5s)) << "case " << id << ": IPv4 sync frame lost";
    if (!dest_->Count(s6)) {
      EXPECT_TRUE(dest_->ReadUntil(s6, 5s)) << "case " << id << ": IPv6 sync frame lost";
    }
    return dest_->Count(Marker(id));
  }
  Bytes Eth4Udp(std::uint32_t dst, std::uint16_t dport, const Bytes& data) {
    Bytes f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = dst, .proto = 17}, Udp(40000, dport, data)));
    return f;
  }
  Bytes Eth6Udp(const V6Addr& dst, std::uint16_t dport, const Bytes& data) {
    Bytes f = E6();
    Append(f, Ipv6({.src = V6("2001:db8:1::2"), .dst = dst, .nh = 17}, Udp(40000, dport, data)));
    return f;
  }
  static std::vector<Bytes> Times(const Bytes& f, int n = kRepeat) {
    return {static_cast<std::size_t>(n), f};
  }

  const std::uint32_t kGuest4 = V4("192.0.2.2");
  const std::uint32_t kForbidden4 = V4("203.0.113.10");
  const std::uint32_t kAllowed4 = V4("198.51.100.10");
  const V6Addr kGuest6 = V6("2001:db8:1::2");
  const V6Addr kRouter6 = V6("2001:db8:1::1");
  const V6Addr kForbidden6 = V6("2001:db8:f0::10");

  std::unique_ptr<Topology> topo_;
  std::unique_ptr<NetDatapath> dp_;
  std::unique_ptr<Tap> guest_, dest_;
  Mac router_mac_{}, guest_mac_{};
};

// Payload that makes a frame of about 1,400 bytes worth tunnelling.
Bytes Bulk(int id, std::size_t size = 1340) {
  Bytes b = Marker(id);
  b.resize(size, 'T');
  return b;
}

TEST_F(EscapeTest, NoAttackFrameReachesAForbiddenDestination) {
  struct Case {
    std::string name;
    std::vector<Bytes> frames;
  };
  std::vector<Case> cases;
  int next = 1;
  auto add = [&](std::string name, std::vector<Bytes> frames) {
    cases.push_back({std::move(name), std::move(frames)});
  };
  auto id = [&] { return next++; };

  // ND types 133-137, hop limit 255, unicast to a global forbidden address, 1,400 bytes.
  for (std::uint8_t type = 133; type <= 137; ++type) {
    const int n = id();
    Bytes f = E6();
    Append(f, Ipv6({.src = kGuest6, .dst = kForbidden6, .nh = 58, .hop_limit = 255},
                   Icmp6(type, Bulk(n))));
    add("ND type " + std::to_string(type) + " to a global forbidden address", Times(f));
  }
  // ND to a forbidden address under link-local and all-nodes disguises: the same program must
  // only let link-scope destinations through unclassified.
  {
    const int n = id();
    Bytes f = E6();
    Append(f, Ipv6({.src = V6("fe80::2"), .dst = kForbidden6, .nh = 58, .hop_limit = 255},
                   Icmp6(136, Bulk(n))));
    add("NA from a link-local source to a global forbidden address", Times(f));
  }
  // MLD (report, done, query, MLDv2 report) to a global forbidden address.
  for (std::uint8_t type : std::initializer_list<std::uint8_t>{130, 131, 132, 143}) {
    const int n = id();
    Bytes f = E6();
    Append(f, Ipv6({.src = kGuest6, .dst = kForbidden6, .nh = 58, .hop_limit = 64},
                   Icmp6(type, Bulk(n, 200))));
    add("MLD type " + std::to_string(type) + " to a global forbidden address", Times(f));
  }
  // IPv4 options: 10+ NOPs then a loose / strict source route through the router (an allowed
  // exception address) to the forbidden destination.
  for (std::uint8_t srr : std::initializer_list<std::uint8_t>{0x83, 0x89}) {
    for (int nops : {10, 12, 30}) {
      const int n = id();
      Bytes opts(static_cast<std::size_t>(nops), 1);
      opts.insert(opts.end(), {srr, 7, 4});
      Put32(opts, kForbidden4);
      while (opts.size() % 4) opts.push_back(0);
      if (opts.size() > 40) continue;
      Bytes f = E4();
      Append(f, Ipv4({.src = kGuest4, .dst = V4("192.0.2.1"), .proto = 17, .options = opts},
                     Udp(40000, 9, Bulk(n, 200))));
      add(std::string(srr == 0x83 ? "LSRR" : "SSRR") + " after " + std::to_string(nops) + " NOPs",
          Times(f));
    }
  }
  // IPv6 routing header (SRv6, segments left 1) through the router to the forbidden address.
  {
    const int n = id();
    Bytes f = E6();
    Bytes p = Srh(17, kForbidden6, kRouter6);
    Append(p, Udp(40000, 9, Bulk(n, 200)));
    Append(f, Ipv6({.src = kGuest6, .dst = kRouter6, .nh = 43}, p));
    add("SRv6 routing header, segments left 1", Times(f));
  }
  // A deep extension-header chain hiding the routing header.
  for (int depth : {5, 6, 8}) {
    const int n = id();
    Bytes p;
    for (int i = 0; i < depth; ++i) Append(p, Ext(i + 1 < depth ? 60 : 43));
    Append(p, Srh(17, kForbidden6, kRouter6));
    Append(p, Udp(40000, 9, Bulk(n, 200)));
    Bytes f = E6();
    Append(f, Ipv6({.src = kGuest6, .dst = kRouter6, .nh = 60}, p));
    add(std::to_string(depth) + " destination-option headers, then SRv6", Times(f));
  }
  // Fragments (first and non-first), IPv4 and IPv6.
  {
    const int n1 = id();
    Bytes f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4, .proto = 17, .frag = 0x2000},
                   Udp(40000, 9, Bulk(n1, 200))));
    add("IPv4 first fragment", Times(f));
    const int n2 = id();
    f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4, .proto = 17, .frag = 100}, Bulk(n2, 200)));
    add("IPv4 non-first fragment", Times(f));
    const int n3 = id();
    f = E6();
    Bytes p = {17, 0, 0, 1, 0, 0, 0, 7};  // offset 0, more fragments
    Append(p, Udp(40000, 9, Bulk(n3, 200)));
    Append(f, Ipv6({.src = kGuest6, .dst = kForbidden6, .nh = 44}, p));
    add("IPv6 first fragment", Times(f));
    const int n4 = id();
    f = E6();
    p = {17, 0, 0, 0xC8, 0, 0, 0, 7};  // offset 25 * 8, last
    Append(p, Bulk(n4, 200));
    Append(f, Ipv6({.src = kGuest6, .dst = kForbidden6, .nh = 44}, p));
    add("IPv6 non-first fragment", Times(f));
  }
  // 802.1Q and QinQ.
  for (int tags : {1, 2}) {
    const int n = id();
    Bytes f = E4(tags);
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4}, Udp(40000, 9, Bulk(n, 200))));
    add(std::to_string(tags) + " VLAN tag(s)", Times(f));
  }
  // IPv6 destinations embedding the forbidden IPv4 address under an allowed IPv6 prefix.
  const std::vector<std::pair<const char*, const char*>> embedded = {
      {"IPv4-mapped", "::ffff:203.0.113.10"},
      {"6to4", "2002:cb00:710a::1"},
      {"NAT64", "64:ff9b::203.0.113.10"},
      {"Teredo server", "2001:0:cb00:710a::39cc:9bf5"},     // client 198.51.100.10 (allowed)
      {"Teredo client", "2001:0:c633:640a:0:0:34ff:8ef5"},  // client ~0x34ff8ef5 = 203.0.113.10
  };
  for (const auto& [what, addr] : embedded) {
    const int n = id();
    Bytes f = E6();
    Append(f, Ipv6({.src = kGuest6, .dst = V6(addr), .nh = 17}, Udp(40000, 9, Bulk(n, 200))));
    add(std::string(what) + " " + addr, Times(f));
  }
  // Tunnels to a forbidden outer address: GRE, IP-in-IP, VXLAN.
  {
    Bytes inner = Ipv4({.src = kGuest4, .dst = kAllowed4}, Udp(40000, 9, Marker(0)));
    const int g = id();
    Bytes gre = {0, 0, 0x08, 0x00};
    Append(gre, inner);
    Append(gre, Marker(g));
    Bytes f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4, .proto = 47}, gre));
    add("GRE to a forbidden outer address", Times(f));
    const int ipip = id();
    Bytes in2 = inner;
    Append(in2, Marker(ipip));
    f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4, .proto = 4}, in2));
    add("IP-in-IP to a forbidden outer address", Times(f));
    const int vx = id();
    Bytes vxlan = {0x08, 0, 0, 0, 0, 0, 0x2a, 0};
    Append(vxlan, Eth(router_mac_, guest_mac_, 0x0800));
    Append(vxlan, inner);
    Append(vxlan, Marker(vx));
    f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kForbidden4}, Udp(40000, 4789, vxlan)));
    add("VXLAN to a forbidden outer address", Times(f));
  }
  // Spoofed source MAC and IP.
  {
    const int n = id();
    Bytes f = Eth(router_mac_, {0x02, 0xde, 0xad, 0xbe, 0xef, 0x01}, 0x0800);
    Append(f, Ipv4({.src = V4("198.51.100.99"), .dst = kForbidden4}, Udp(40000, 9, Bulk(n, 200))));
    add("spoofed source MAC and IP", Times(f));
    const int n6 = id();
    f = Eth(router_mac_, {0x02, 0xde, 0xad, 0xbe, 0xef, 0x02}, 0x86DD);
    Append(f, Ipv6({.src = V6("2001:db8:e0::99"), .dst = kForbidden6, .nh = 17},
                   Udp(40000, 9, Bulk(n6, 200))));
    add("spoofed source MAC and IPv6", Times(f));
  }

  // The udp/53 resolver exception carries nothing else: another port, TCP, fragments.
  {
    const std::uint32_t resolver = V4("203.0.113.53");
    const int other_port = id();
    Bytes f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = resolver}, Udp(40000, 54, Bulk(other_port, 200))));
    add("resolver exception (udp/53), udp/54", Times(f));
    const int tcp = id();
    f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = resolver, .proto = 6}, Tcp(40000, 53, Bulk(tcp, 200))));
    add("resolver exception (udp/53), tcp/53", Times(f));
    const int first = id();
    f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = resolver, .frag = 0x2000},
                   Udp(40000, 53, Bulk(first, 200))));
    add("resolver exception (udp/53), first fragment to port 53", Times(f));
    const int later = id();
    f = E4();
    Bytes looks_like_dns = Udp(40000, 53, Bulk(later, 200));
    Append(f, Ipv4({.src = kGuest4, .dst = resolver, .frag = 50}, looks_like_dns));
    add("resolver exception (udp/53), non-first fragment", Times(f));
  }

  int leaked_cases = 0;
  for (std::size_t i = 0; i < cases.size(); ++i) {
    const int case_id = static_cast<int>(i) + 1;
    const int got = Deliver(case_id, cases[i].frames);
    std::printf("escape case %2d %-58s sent %3zu delivered %d\n", case_id, cases[i].name.c_str(),
                cases[i].frames.size(), got);
    EXPECT_EQ(got, 0) << cases[i].name;
    leaked_cases += got > 0;
  }
  EXPECT_EQ(leaked_cases, 0);
  EXPECT_GE(dp_->ReadCounters(topo_->tap(0), 0).dropped_packets, 1u);
}

// Controls, in the same topology and policy: what a guest legitimately needs still works.
TEST_F(EscapeTest, ControlsStillWork) {
  int n = 0x400;
  // Traffic to an allowed destination, IPv4 and IPv6: every frame arrives.
  {
    const int a4 = ++n, a6 = ++n;
    std::vector<Bytes> frames;
    for (int i = 0; i < kRepeat; ++i) frames.push_back(Eth4Udp(kAllowed4, 9, Bulk(a4, 200)));
    for (int i = 0; i < kRepeat; ++i)
      frames.push_back(Eth6Udp(V6("2001:db8:e0::10"), 9, Bulk(a6, 200)));
    const int t4 = ++n;
    Bytes syn = E4();
    Append(syn, Ipv4({.src = kGuest4, .dst = kAllowed4, .proto = 6}, Tcp(40000, 443, Marker(t4))));
    frames.push_back(syn);
    Deliver(a4, frames);
    EXPECT_EQ(dest_->Count(Marker(a4)), kRepeat);
    EXPECT_EQ(dest_->Count(Marker(a6)), kRepeat);
    EXPECT_EQ(dest_->Count(Marker(t4)), 1);
  }
  // The resolver exception on its port: every datagram arrives.
  {
    const int dns = ++n;
    std::vector<Bytes> frames;
    for (int i = 0; i < kRepeat; ++i)
      frames.push_back(Eth4Udp(V4("203.0.113.53"), 53, Bulk(dns, 60)));
    EXPECT_EQ(Deliver(dns, frames), kRepeat) << "udp/53 to the resolver exception";
  }
  // The relay case, stated: a tunnel whose outer address is allowed delivers to that allowed host
  // whatever the inner (forbidden) destination; residency by destination cannot see through it.
  {
    const int g = ++n;
    Bytes gre = {0, 0, 0x08, 0x00};
    Append(gre, Ipv4({.src = kGuest4, .dst = kForbidden4}, Udp(40000, 9, Marker(g))));
    Bytes f = E4();
    Append(f, Ipv4({.src = kGuest4, .dst = kAllowed4, .proto = 47}, gre));
    EXPECT_EQ(Deliver(g, {f}), 1) << "GRE to an allowed outer address reaches that host";
  }
  // An address embedding an allowed IPv4 address under an allowed prefix passes.
  {
    const int e = ++n;
    Deliver(e, {Eth6Udp(V6("2002:c633:640a::1"), 9, Bulk(e, 200))});
    EXPECT_EQ(dest_->Count(Marker(e)), 1) << "6to4 of an allowed IPv4 address";
  }

  // Neighbour discovery of the router, multicast (solicited-node) and unicast (unreachability
  // detection of the gateway's global address, which the policy allows as an exception): each
  // solicitation is answered by an advertisement back in the guest.
  auto solicit = [&](const V6Addr& dst, const Mac& dst_mac, const V6Addr& src) {
    Bytes body = {0, 0, 0, 0};
    body.insert(body.end(), kRouter6.begin(), kRouter6.end());
    body.insert(body.end(), {1, 1});  // source link-layer address option
    body.insert(body.end(), guest_mac_.begin(), guest_mac_.end());
    Bytes f = Eth(dst_mac, guest_mac_, 0x86DD);
    Append(f, Ipv6({.src = src, .dst = dst, .nh = 58, .hop_limit = 255}, Icmp6(135, body)));
    return f;
  };
  auto advertised = [&] {
    // An NA (type 136) for the router's address arrives at the guest's interface.
    const auto end = Clock::now() + 5s;
    while (Clock::now() < end) {
      for (const auto& fr : guest_->frames()) {
        if (fr.size() >= 14 + 40 + 24 && fr[12] == 0x86 && fr[13] == 0xDD && fr[20] == 58 &&
            fr[54] == 136 && std::equal(kRouter6.begin(), kRouter6.end(), fr.begin() + 62))
          return true;
      }
      guest_->ReadUntil(Marker(0x7fff), 50ms);
    }
    return false;
  };
  const Mac solicited_mac = {0x33, 0x33, 0xff, 0x00, 0x00, 0x01};
  guest_->Send(solicit(V6("ff02::1:ff00:1"), solicited_mac, kGuest6));
  EXPECT_TRUE(advertised()) << "multicast NS to the router's solicited-node address";
  testing::Sh("ip netns exec " + topo_->router().name() + " ip -6 neigh flush dev r0");
  guest_ = std::make_unique<Tap>(topo_->guest(0), "g0");
  guest_->Send(solicit(kRouter6, router_mac_, kGuest6));
  EXPECT_TRUE(advertised()) << "unicast NS to the router's global address (NUD)";

  // DHCP: the guest's broadcast discover reaches the host's DHCP server port.
  {
    Fd dhcp(topo_->router().Socket(AF_INET, SOCK_DGRAM, 0));
    const auto any = testing::Addr("0.0.0.0", 67);
    int on = 1;
    ::setsockopt(dhcp.Get(), SOL_SOCKET, SO_BROADCAST, &on, sizeof(on));
    ASSERT_EQ(::bind(dhcp.Get(), reinterpret_cast<const sockaddr*>(&any), testing::Len(any)), 0)
        << std::strerror(errno);
    Bytes f = Eth({0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, guest_mac_, 0x0800);
    Bytes discover(240, 0);
    discover[0] = 1, discover[1] = 1, discover[2] = 6;
    Append(f, Ipv4({.src = 0, .dst = 0xFFFFFFFF, .proto = 17}, Udp(68, 67, discover)));
    guest_->Send(f);
    EXPECT_EQ(testing::UdpReceive(dhcp.Get(), 1, 5s), 1) << "DHCP discover";
  }
}

}  // namespace
}  // namespace sovguard::net
