// Policy validation: turns parsed files into one ValidatedPolicy, or into diagnostics that each
// point at file:line:col and say what was expected. Nothing unknown is accepted silently.
#pragma once

#include <compare>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "policy/compiled.h"
#include "policy/jurisdiction/prefix.h"
#include "policy/parse/diagnostic.h"
#include "policy/parse/parse.h"

namespace sovguard::policy {

struct ZoneModel {
  std::string name;
  std::string jurisdiction;  // ISO code
  std::uint16_t id = 0;      // 1-based, by name order; 0 means "no zone" in sg_class
  std::vector<IpPrefix> prefixes;
};

// One protocol and destination port range an exception carries ("udp/53", "tcp/8000-8080").
struct PortRule {
  std::uint8_t proto = 0;  // IPPROTO_TCP or IPPROTO_UDP
  std::uint16_t lo = 0, hi = 0;
  auto operator<=>(const PortRule&) const = default;
};

struct ExceptionModel {
  std::string name;
  std::string reason;
  std::vector<IpPrefix> prefixes;
  std::vector<PortRule> ports;  // sorted, unique; empty: any protocol and port
};

struct DatasetModel {
  pb::Dataset proto;  // as written (for display and bundles)
  std::string id;
  Mode mode = Mode::kAudit;
  bool any_country = false;          // "ANY": every country in the jurisdiction table
  std::set<std::string> countries;   // ISO codes after expanding EU/EEA and EL -> GR
  std::set<std::string> zones;       // names of allowed operator zones
  std::set<std::string> exceptions;  // names of allowed exceptions
  std::set<std::uint16_t> ethertypes;  // non-IP ethertypes guests holding it may send
  std::vector<std::string> guest_names;
  std::vector<std::string> guest_uuids;  // lower case
  std::vector<std::string> guest_labels;
  bool read_only = false;
  std::optional<Quota> egress, read, write;
  std::optional<std::int64_t> not_before, not_after;
  bool default_for_unlabelled = false;

  bool AllowsCountry(std::string_view iso) const;
};

// The merged, checked policy. Datasets are sorted by id (their index is their bit in every mask),
// zones and exceptions by name, so file order never changes the compiled result.
struct ValidatedPolicy {
  std::vector<DatasetModel> datasets;
  std::vector<ZoneModel> zones;
  std::vector<ExceptionModel> exceptions;
  pb::Policy merged;  // every file's content in the same sorted order

  std::uint64_t DefaultMask() const;
  // The datasets a guest holds: every dataset one of whose selectors matches the libvirt name,
  // UUID (case-insensitive) or a label; a guest that matches none holds the default datasets.
  std::uint64_t DatasetsForGuest(std::string_view name, std::string_view uuid,
                                 const std::vector<std::string>& labels) const;
  const DatasetModel* FindDataset(std::string_view id) const;
};

// What `policy check` warns about in a policy that loads: one line per exception that names no
// ports (it carries any protocol and port), in name order. The daemon logs the same at load.
std::vector<std::string> PolicyWarnings(const ValidatedPolicy& policy);

struct LoadResult {
  std::optional<ValidatedPolicy> policy;
  Diagnostics diagnostics;
  // Accepted but weaker than it looks (an exception without ports): shown, never fatal.
  Diagnostics warnings;
  bool ok() const { return policy.has_value() && diagnostics.empty(); }
};

// `now` (Unix seconds) decides whether a validity window has already ended.
LoadResult Validate(const std::vector<ParsedFile>& files, std::int64_t now = std::time(nullptr));

// Parse + validate: files in text format or JSON.
LoadResult LoadPolicyFiles(const std::vector<std::filesystem::path>& paths,
                           std::int64_t now = std::time(nullptr));
// The same for in-memory contents: (name used in diagnostics, bytes).
LoadResult LoadPolicyBuffers(const std::vector<std::pair<std::string, std::string>>& files,
                             std::int64_t now = std::time(nullptr));

// RFC 3339 ("2026-01-01T00:00:00Z", "2026-01-01T01:00:00+01:00") -> Unix seconds.
std::optional<std::int64_t> ParseRfc3339(std::string_view text);

}  // namespace sovguard::policy
