// Hex encoding (lower case) and decoding.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "base/bytes.h"

namespace sovguard::base {

std::string ToHex(std::span<const uint8_t> bytes);
inline std::string ToHex(const void* data, std::size_t size) {
  return ToHex(std::span(static_cast<const uint8_t*>(data), size));
}
// Accepts upper or lower case; throws base::Error naming `what` on odd length or a bad digit.
Bytes FromHex(std::string_view hex, std::string_view what = "hex string");

}  // namespace sovguard::base
