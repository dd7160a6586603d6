#include "enforcer/net/frames.h"

namespace sovguard::net::frames {
namespace {

void Put16(std::vector<std::uint8_t>& f, std::uint16_t v) {
  f.push_back(static_cast<std::uint8_t>(v >> 8));
  f.push_back(static_cast<std::uint8_t>(v));
}

// Destination/source MACs, then tags (outer 802.1ad when there are two), then ethertype.
std::vector<std::uint8_t> Ethernet(std::uint16_t ethertype, int vlan_tags) {
  std::vector<std::uint8_t> f = {0x52, 0x54, 0x00, 0x00, 0x00, 0x01,
                                 0x52, 0x54, 0x00, 0x00, 0x00, 0x02};
  for (int i = 0; i < vlan_tags; ++i) {
    Put16(f, (vlan_tags > 1 && i == 0) ? 0x88A8 : 0x8100);
    Put16(f, static_cast<std::uint16_t>(100 + i));
  }
  Put16(f, ethertype);
  return f;
}

}  // namespace

std::vector<std::uint8_t> Ipv4(std::uint32_t dst, int vlan_tags, std::uint8_t protocol,
                               std::uint16_t sport, std::uint16_t dport, std::uint32_t src) {
  auto f = Ethernet(0x0800, vlan_tags);
  const std::uint16_t l4_len = protocol == 17 ? 8 : 20;
  const std::uint16_t total = static_cast<std::uint16_t>(20 + l4_len);
  const std::uint8_t ip[20] = {0x45,
                               0,
                               static_cast<std::uint8_t>(total >> 8),
                               static_cast<std::uint8_t>(total),
                               0,
                               1,
                               0x40,
                               0,
                               64,
                               protocol,
                               0,
                               0,
                               static_cast<std::uint8_t>(src >> 24),
                               static_cast<std::uint8_t>(src >> 16),
                               static_cast<std::uint8_t>(src >> 8),
                               static_cast<std::uint8_t>(src),
                               static_cast<std::uint8_t>(dst >> 24),
                               static_cast<std::uint8_t>(dst >> 16),
                               static_cast<std::uint8_t>(dst >> 8),
                               static_cast<std::uint8_t>(dst)};
  f.insert(f.end(), ip, ip + 20);
  Put16(f, sport);
  Put16(f, dport);
  f.resize(f.size() + l4_len - 4, 0);
  return f;
}

std::vector<std::uint8_t> Ipv6(const std::array<std::uint8_t, 16>& dst, int vlan_tags,
                               std::uint8_t next_header, std::uint8_t hop_limit) {
  auto f = Ethernet(0x86DD, vlan_tags);
  const std::uint8_t hdr[8] = {0x60, 0, 0, 0, 0, 20, next_header, hop_limit};
  f.insert(f.end(), hdr, hdr + 8);
  const std::uint8_t src[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
  f.insert(f.end(), src, src + 16);
  f.insert(f.end(), dst.begin(), dst.end());
  f.resize(f.size() + 20, 0);
  return f;
}

std::vector<std::uint8_t> Raw(std::uint16_t ethertype, std::size_t payload_len, int vlan_tags) {
  auto f = Ethernet(ethertype, vlan_tags);
  f.resize(f.size() + payload_len, 0);
  return f;
}

}  // namespace sovguard::net::frames
