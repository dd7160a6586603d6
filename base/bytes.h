// An owned byte string.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace sovguard::base {

using Bytes = std::vector<uint8_t>;

// The bytes of a string, without a copy.
inline std::span<const uint8_t> AsBytes(std::string_view s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace sovguard::base
