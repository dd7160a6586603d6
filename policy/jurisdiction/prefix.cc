#include "policy/jurisdiction/prefix.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

namespace sovguard::policy {

std::uint32_t IpPrefix::V4() const {
  return (std::uint32_t{addr[0]} << 24) | (std::uint32_t{addr[1]} << 16) |
         (std::uint32_t{addr[2]} << 8) | std::uint32_t{addr[3]};
}

bool IpPrefix::Contains(const IpPrefix& other) const {
  if (v6 != other.v6 || other.len < len) return false;
  const std::size_t full = len / 8u;
  if (std::memcmp(addr.data(), other.addr.data(), full) != 0) return false;
  if (len % 8 == 0) return true;
  const auto mask = static_cast<std::uint8_t>(0xFFu << (8 - len % 8));
  return (addr[full] & mask) == (other.addr[full] & mask);
}

std::string IpPrefix::ToString() const {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(v6 ? AF_INET6 : AF_INET, addr.data(), buf, sizeof buf);
  std::string out(buf);  // appended piecewise: GCC 12 warns falsely (-Wrestrict) on a + chain
  out += '/';
  out += std::to_string(len);
  return out;
}

std::optional<IpPrefix> ParseAddress(std::string_view text) {
  if (text.empty() || text.size() >= INET6_ADDRSTRLEN) return std::nullopt;
  const std::string s(text);
  IpPrefix p;
  if (s.find(':') != std::string::npos) {
    if (inet_pton(AF_INET6, s.c_str(), p.addr.data()) != 1) return std::nullopt;
    p.v6 = true;
    p.len = 128;
  } else {
    if (inet_pton(AF_INET, s.c_str(), p.addr.data()) != 1) return std::nullopt;
    p.len = 32;
  }
  return p;
}

std::optional<IpPrefix> ParsePrefix(std::string_view text, std::string* error) {
  auto fail = [&](std::string why) -> std::optional<IpPrefix> {
    if (error) *error = std::move(why);
    return std::nullopt;
  };
  const auto slash = text.find('/');
  auto p = ParseAddress(text.substr(0, slash));
  if (!p) {
    return fail("expected an IPv4 or IPv6 prefix such as 192.0.2.0/24, got \"" + std::string(text) +
                "\"");
  }
  if (slash != std::string_view::npos) {
    const auto digits = text.substr(slash + 1);
    unsigned len = 0;
    auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), len);
    if (digits.empty() || ec != std::errc() || ptr != digits.data() + digits.size() ||
        len > p->MaxLen()) {
      return fail("prefix length of \"" + std::string(text) + "\" must be 0.." +
                  std::to_string(p->MaxLen()));
    }
    p->len = static_cast<std::uint8_t>(len);
  }
  for (int bit = p->len; bit < p->MaxLen(); ++bit) {
    if (p->addr[bit / 8] & (0x80u >> (bit % 8))) {
      IpPrefix masked = *p;
      for (int b = p->len; b < p->MaxLen(); ++b) {
        masked.addr[b / 8] = static_cast<std::uint8_t>(masked.addr[b / 8] & ~(0x80u >> (b % 8)));
      }
      std::string why = "\"";  // appended piecewise: GCC 12 warns falsely (-Wrestrict)
      why += text;
      why += "\" has host bits set past /" + std::to_string(p->len) + " (did you mean " +
             masked.ToString() + "?)";
      return fail(std::move(why));
    }
  }
  return p;
}

}  // namespace sovguard::policy
