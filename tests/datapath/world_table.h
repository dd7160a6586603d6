// Test support: the full world jurisdiction table from shared/data/country-ip-blocks as a
// CompiledPolicy (one class per country). Stand-in until policy/ ships its jurisdiction library;
// replace LoadWorldTable with that library's output then.
//   dataset 0 "eu-eea" (enforce): allowed in the EU/EEA countries
//   dataset 1 "de-only" (audit):  allowed in DE only
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "policy/compiled.h"

namespace sovguard::net::testing {

struct WorldTable {
  policy::CompiledPolicy policy;
  std::vector<std::string> country_of_class;  // class id -> "DE" ("" for class 0)
  std::uint16_t ClassOf(const std::string& cc) const;
};

// Reads <dir>/country/<cc>/ipv4-aggregated.txt and ipv6-aggregated.txt for every country.
// Throws std::runtime_error naming file:line on a malformed line.
WorldTable LoadWorldTable(const std::string& dir);

// Maps the documentation ranges used by netns tests and benchmarks to countries of the table:
// 198.51.100.0/24 and 2001:db8:e0::/48 -> DE, 203.0.113.0/24 and 2001:db8:f0::/48 -> US,
// 192.0.2.0/24 and 2001:db8:1::/64 -> a policy exception class (the host side).
void AddDocumentationRanges(WorldTable& table);

bool IsEuEea(const std::string& cc);
std::string DefaultWorldTableDir();

}  // namespace sovguard::net::testing
