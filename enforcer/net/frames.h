// Crafted Ethernet frames for BPF_PROG_TEST_RUN (probe, tests, benchmarks). Checksums are not
// computed: the classifier never reads them.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace sovguard::net::frames {

// Ethernet (+ vlan_tags 802.1Q/802.1ad tags) + IPv4 header + a TCP header of zeros.
std::vector<std::uint8_t> Ipv4(std::uint32_t dst_host_order, int vlan_tags = 0,
                               std::uint8_t protocol = 6, std::uint16_t sport = 40000,
                               std::uint16_t dport = 443,
                               std::uint32_t src_host_order = 0xC0000202);
// Ethernet (+ tags) + IPv6 header + a TCP header of zeros.
std::vector<std::uint8_t> Ipv6(const std::array<std::uint8_t, 16>& dst, int vlan_tags = 0,
                               std::uint8_t next_header = 6, std::uint8_t hop_limit = 64);
// Ethernet with an arbitrary ethertype and payload.
std::vector<std::uint8_t> Raw(std::uint16_t ethertype, std::size_t payload_len, int vlan_tags = 0);

}  // namespace sovguard::net::frames
