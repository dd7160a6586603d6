#include "tests/datapath/topology.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <tuple>

namespace sovguard::net::testing {

using Clock = std::chrono::steady_clock;

policy::CompiledPolicy TestPolicy(policy::Mode mode, bool split,
                                  std::optional<policy::Quota> quota) {
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
  std::sort(p.ipv4.begin(), p.ipv4.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  std::sort(p.ipv6.begin(), p.ipv6.end(),
            [](auto& a, auto& b) { return std::tie(a.addr, a.len) < std::tie(b.addr, b.len); });
  p.digest[0] = split;
  p.digest[1] = static_cast<std::uint8_t>(mode);
  return p;
}

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

int UdpReceive(int fd, int want, std::chrono::milliseconds deadline) {
  int got = 0;
  const auto end = Clock::now() + deadline;
  char buf[2048];
  while (got < want && Clock::now() < end) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now());
    pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&p, 1, static_cast<int>(left.count()) + 1) != 1) break;
    while (got<want&& ::recv(fd, buf, sizeof(buf), MSG_DONTWAIT)> 0) ++got;
  }
  return got;
}

int UdpDrain(int fd) {
  int got = 0;
  char buf[2048];
  while (::recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0) ++got;
  return got;
}

Topology::Topology(const std::string& prefix, int guests, bool ipv6) {
  if (guests < 1 || guests > 60) throw std::invalid_argument("Topology: 1..60 guests");
  r_ = std::make_unique<Netns>(prefix + "r");
  d_ = std::make_unique<Netns>(prefix + "d");
  r_->Ip("link add rd type veth peer name d0 netns " + d_->name());
  for (const char* a : {"198.51.100.1/24", "203.0.113.1/24"})
    r_->Ip(std::string("addr add ") + a + " dev rd");
  r_->Ip("link set rd up");
  r_->Sysctl("net.ipv4.ip_forward", "1");
  for (const char* a : {"198.51.100.10/24", "203.0.113.10/24"})
    d_->Ip(std::string("addr add ") + a + " dev d0");
  d_->Ip("link set d0 up");
  d_->Ip("route add default via 198.51.100.1");
  if (ipv6) {
    for (const char* a : {"2001:db8:e0::1/64", "2001:db8:f0::1/64"})
      r_->Ip(std::string("addr add ") + a + " dev rd nodad");
    r_->Sysctl("net.ipv6.conf.all.forwarding", "1");
    for (const char* a : {"2001:db8:e0::10/64", "2001:db8:f0::10/64"})
      d_->Ip(std::string("addr add ") + a + " dev d0 nodad");
    d_->Ip("-6 route add default via 2001:db8:e0::1");
  }
  for (int i = 0; i < guests; ++i) {
    g_.push_back(std::make_unique<Netns>(prefix + "g" + std::to_string(i)));
    Netns& g = *g_.back();
    const std::string r = tap_name(i);
    const std::string base = "192.0.2.";
    r_->Ip("link add " + r + " type veth peer name g0 netns " + g.name());
    r_->Ip("addr add " + base + std::to_string(4 * i + 1) + "/30 dev " + r);
    r_->Ip("link set " + r + " up");
    g.Ip("addr add " + base + std::to_string(4 * i + 2) + "/30 dev g0");
    g.Ip("link set g0 up");
    g.Ip("route add default via " + base + std::to_string(4 * i + 1));
    if (ipv6) {
      char net[32];
      std::snprintf(net, sizeof(net), "2001:db8:1:%x::", i);
      r_->Ip("addr add " + std::string(net) + "1/64 dev " + r + " nodad");
      g.Ip("addr add " + std::string(net) + "2/64 dev g0 nodad");
      g.Ip("-6 route add default via " + std::string(net) + "1");
    }
    taps_.push_back(r_->IfIndex(r));
  }
}

Topology::~Topology() {
  g_.clear();
  d_.reset();
  r_.reset();
}

Fd Topology::UdpServer(const char* ip, std::uint16_t port) {
  const auto a = Addr(ip, port);
  Fd s(d_->Socket(a.ss_family, SOCK_DGRAM, 0));
  int big = 4 << 20;
  ::setsockopt(s.Get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big));
  if (::bind(s.Get(), reinterpret_cast<const sockaddr*>(&a), Len(a)) != 0)
    throw std::runtime_error(std::string("bind ") + ip + ": " + std::strerror(errno));
  return s;
}

Fd Topology::GuestSocket(int i, int family) {
  return Fd(guest(i).Socket(family, SOCK_DGRAM, 0));
}

bool Topology::HasClsact(int i) {
  std::string cmd = "ip netns exec ";
  cmd += r_->name();
  cmd += " tc qdisc show dev ";
  cmd += tap_name(i);
  cmd += " | grep -q clsact";
  return std::system(cmd.c_str()) == 0;
}

LockStepTraffic::LockStepTraffic(Topology& topo, std::uint16_t port, std::chrono::seconds bound)
    : allowed_(topo.UdpServer("198.51.100.10", port)),
      forbidden_(topo.UdpServer("203.0.113.10", port)),
      per_guest_(static_cast<std::size_t>(topo.guests())) {
  for (int i = 0; i < topo.guests(); ++i) tx_.push_back(topo.GuestSocket(i));
  thread_ = std::thread([this, port, bound] {
    const auto allowed = Addr("198.51.100.10", port), forbidden = Addr("203.0.113.10", port);
    const auto end = Clock::now() + bound;
    char msg[kPayload] = "lockstep";
    for (std::size_t n = 0; !done_ && Clock::now() < end; ++n) {
      const std::size_t i = n % tx_.size();
      ::sendto(tx_[i].Get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&forbidden),
               Len(forbidden));
      ++sent_forbidden_;
      ::sendto(tx_[i].Get(), msg, sizeof(msg), 0, reinterpret_cast<const sockaddr*>(&allowed),
               Len(allowed));
      ++sent_allowed_;
      ++per_guest_[i];
      if (UdpReceive(allowed_.Get(), 1, std::chrono::seconds(2)) == 1)
        ++received_allowed_;
      else
        ++lost_;
    }
  });
}

LockStepTraffic::~LockStepTraffic() {
  Stop();
}

void LockStepTraffic::Stop() {
  done_ = true;
  if (thread_.joinable()) thread_.join();
}

bool LockStepTraffic::WaitExchanges(std::uint64_t n, std::chrono::milliseconds deadline) {
  const std::uint64_t target = received_allowed_ + n;
  const auto end = Clock::now() + deadline;
  while (received_allowed_ < target && Clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));  // polling a counter, bounded
  return received_allowed_ >= target;
}

}  // namespace sovguard::net::testing
