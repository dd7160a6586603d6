#include "policy/jurisdiction/countries.h"

#include <algorithm>
#include <array>

namespace sovguard::policy {
namespace {

constexpr std::array<std::string_view, 249> kIso = {
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW"};

constexpr std::array<std::string_view, 27> kEu = {
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU",
    "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK"};

}  // namespace

std::span<const std::string_view> IsoCountries() {
  return kIso;
}
bool IsIsoCountry(std::string_view code) {
  return std::binary_search(kIso.begin(), kIso.end(), code);
}
std::span<const std::string_view> EuCountries() {
  return kEu;
}
bool IsEu(std::string_view code) {
  return std::binary_search(kEu.begin(), kEu.end(), code);
}
bool IsEea(std::string_view code) {
  return IsEu(code) || code == "IS" || code == "LI" || code == "NO";
}

std::optional<std::string> NormalizeCountry(std::string_view code) {
  if (code.size() != 2) return std::nullopt;
  std::string up;
  for (char c : code) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    if (c < 'A' || c > 'Z') return std::nullopt;
    up.push_back(c);
  }
  if (up == "EL") up = "GR";  // the EU's own code for Greece
  if (up == "UK") up = "GB";  // common, exceptionally reserved spelling
  if (!IsIsoCountry(up)) return std::nullopt;
  return up;
}

std::uint16_t PackCountry(std::string_view code) {
  if (code.size() != 2) return 0;
  for (char c : code) {
    if (c < 'A' || c > 'Z') return 0;
  }
  return static_cast<std::uint16_t>((static_cast<unsigned>(code[0]) << 8) |
                                    static_cast<unsigned>(code[1]));
}

std::string UnpackCountry(std::uint16_t packed) {
  if (packed == 0) return "";
  return std::string{static_cast<char>(packed >> 8), static_cast<char>(packed & 0xff)};
}

}  // namespace sovguard::policy
