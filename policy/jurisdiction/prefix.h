// IP prefixes (CIDR) for both families, parsed strictly: host bits past the length are an error.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sovguard::policy {

struct IpPrefix {
  bool v6 = false;
  std::array<std::uint8_t, 16> addr{};  // network byte order; IPv4 in the first 4 bytes
  std::uint8_t len = 0;

  auto operator<=>(const IpPrefix&) const = default;
  std::uint8_t MaxLen() const { return v6 ? 128 : 32; }
  std::uint32_t V4() const;                    // host byte order
  bool Contains(const IpPrefix& other) const;  // same family and other lies inside this
  std::string ToString() const;
};

// "192.0.2.0/24", "2001:db8::/32"; a bare address is a host prefix (/32, /128). On failure
// `error` says what was expected.
std::optional<IpPrefix> ParsePrefix(std::string_view text, std::string* error = nullptr);
// A bare address only (no "/len").
std::optional<IpPrefix> ParseAddress(std::string_view text);

}  // namespace sovguard::policy
