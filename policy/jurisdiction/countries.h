// ISO 3166-1 alpha-2 country codes and the EU/EEA groups sovguard policies name.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace sovguard::policy {

// Every officially assigned ISO 3166-1 alpha-2 code, sorted.
std::span<const std::string_view> IsoCountries();
bool IsIsoCountry(std::string_view code);

// The 27 EU member states (as ISO codes: Greece is GR, which the EU itself writes EL).
std::span<const std::string_view> EuCountries();
bool IsEu(std::string_view code);
// EEA = EU + Iceland, Liechtenstein, Norway.
bool IsEea(std::string_view code);

// Upper-cases a two-letter code and maps EU spellings to ISO (EL -> GR, UK -> GB). Returns nullopt
// unless the result is an assigned ISO code.
std::optional<std::string> NormalizeCountry(std::string_view code);

// Kernel packing: 'D','E' -> 0x4445 (SG_COUNTRY); 0 when the code is not two upper-case letters.
std::uint16_t PackCountry(std::string_view code);
std::string UnpackCountry(std::uint16_t packed);

}  // namespace sovguard::policy
