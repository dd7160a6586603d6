// The jurisdiction table: which country each IPv4/IPv6 prefix is delegated to. Built from the
// country-ip-blocks folder (and optionally a MaxMind/DB-IP country .mmdb), shipped in a compact,
// versioned, checksummed binary format (.sgjt, see policy/README.md), looked up by longest prefix.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/jurisdiction/prefix.h"

namespace sovguard::policy {

struct TableEntry {
  IpPrefix prefix;
  std::uint16_t country = 0;  // PackCountry() of the ISO code

  auto operator<=>(const TableEntry&) const = default;
};

struct TableLookup {
  std::string country;  // ISO code
  bool eu = false;
  bool eea = false;
  IpPrefix matched;  // the registry prefix that decided
};

class JurisdictionTable {
 public:
  inline static constexpr char kMagic[4] = {'S', 'G', 'J', 'T'};
  static constexpr std::uint16_t kFormatVersion = 1;

  // Reads <dir>/<cc>/ipv4-aggregated.txt and ipv6-aggregated.txt for every country folder. A
  // prefix claimed by two countries is dropped (it becomes unknown space, allowed for nobody).
  static std::optional<JurisdictionTable> FromCountryIpBlocks(const std::filesystem::path& dir,
                                                              std::string* error);
  // Adds every country network of a MaxMind GeoLite2/GeoIP2-Country or DB-IP country database;
  // its prefixes take precedence over registry prefixes that are identical.
  bool AddMmdb(const std::filesystem::path& path, std::string* error);

  // The .sgjt encoding: deterministic for the same content.
  std::string Serialize() const;
  static std::optional<JurisdictionTable> Deserialize(std::string_view bytes, std::string* error);
  bool Save(const std::filesystem::path& path, std::string* error) const;
  static std::optional<JurisdictionTable> Load(const std::filesystem::path& path,
                                               std::string* error);

  // Longest-prefix match of one address (a host prefix); nullopt when no registry covers it.
  std::optional<TableLookup> Lookup(const IpPrefix& address) const;
  std::optional<TableLookup> Lookup(std::string_view address) const;

  // Entries sorted by (address, length).
  const std::vector<TableEntry>& v4() const { return v4_; }
  const std::vector<TableEntry>& v6() const { return v6_; }
  // Sorted ISO codes of every country with at least one prefix.
  std::vector<std::string> Countries() const;
  const std::string& source() const { return source_; }
  std::size_t dropped_conflicts() const { return dropped_conflicts_; }

  // For tests and tools: build from entries directly (sorted, conflicts dropped).
  static JurisdictionTable FromEntries(std::vector<TableEntry> entries, std::string source);

 private:
  void Finish();  // sort, drop conflicting duplicates, build the lookup index

  std::vector<TableEntry> v4_, v6_;
  std::string source_;
  std::size_t dropped_conflicts_ = 0;
  // Prefix lengths present, longest first: a lookup binary-searches the sorted entries once per
  // length, so loading needs no index beyond the sorted vectors themselves.
  std::vector<std::uint8_t> lengths4_, lengths6_;
};

}  // namespace sovguard::policy
