// rtnetlink attribute walking without the kernel's RTA_* pointer macros (they trip
// -Wold-style-cast/-Wsign-*): every attribute's length is checked against what is left, and
// headers are copied out (no unaligned reads).
#pragma once

#include <linux/rtnetlink.h>

#include <cstddef>
#include <cstring>
#include <string>

namespace sovguard::enforcer::rtnl {

// Calls f(type, payload, payload_size) for every attribute in [data, data + len); stops at the
// first malformed one.
template <typename F>
void ForEachAttr(const char* data, std::size_t len, F&& f) {
  while (len >= sizeof(rtattr)) {
    rtattr a{};
    std::memcpy(&a, data, sizeof(a));
    if (a.rta_len < sizeof(rtattr) || a.rta_len > len) return;
    f(a.rta_type, data + RTA_LENGTH(0), a.rta_len - RTA_LENGTH(0));
    const std::size_t step = RTA_ALIGN(a.rta_len);
    if (step >= len) return;
    data += step;
    len -= step;
  }
}

// A string attribute's text (NUL-terminated or not).
inline std::string AttrString(const char* p, std::size_t n) {
  return {p, strnlen(p, n)};
}

}  // namespace sovguard::enforcer::rtnl
