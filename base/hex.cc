#include "base/hex.h"

#include <string>

#include "base/error.h"

namespace sovguard::base {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string ToHex(std::span<const uint8_t> bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string s;
  s.reserve(bytes.size() * 2);
  for (uint8_t b : bytes) {
    s.push_back(kDigits[b >> 4]);
    s.push_back(kDigits[b & 0xf]);
  }
  return s;
}

Bytes FromHex(std::string_view hex, std::string_view what) {
  if (hex.size() % 2 != 0)
    throw Error(std::string(what) + ": expected an even number of hex digits, got " +
                std::to_string(hex.size()));
  Bytes out;
  out.reserve(hex.size() / 2);
  for (size_t i = 0; i < hex.size(); i += 2) {
    int hi = HexValue(hex[i]), lo = HexValue(hex[i + 1]);
    if (hi < 0 || lo < 0)
      throw Error(std::string(what) + ": invalid hex digit at offset " +
                  std::to_string(hi < 0 ? i : i + 1));
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

}  // namespace sovguard::base
