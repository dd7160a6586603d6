// Compilation of a validated policy against a jurisdiction table into the kernel's view
// (policy/compiled.h): deterministic, so the same inputs always give the same digest.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "policy/compiled.h"
#include "policy/jurisdiction/prefix.h"
#include "policy/jurisdiction/table.h"
#include "policy/validate/validate.h"

namespace sovguard::policy {

// classes[0] = unknown space (allowed for no dataset); then one class per country of the table
// (sorted by code), per operator zone (by name) and per distinct exception dataset-set, each
// deduplicated by value. Exception prefixes override zones, zones override registry prefixes: a
// lower-priority prefix lying inside a higher-priority one is left out, the rest is decided by
// longest prefix in the kernel.
// Throws std::length_error when the policy needs more than SG_MAX_CLASSES classes.
CompiledPolicy Compile(const ValidatedPolicy& policy, const JurisdictionTable& table);

// The storage section: per-dataset mode, quotas, read-only flag and pools (from
// DatasetModel::proto.storage), and the address tables the storage connect programs use: the
// jurisdiction prefixes of `compiled` plus each network-storage endpoint a dataset lists (port
// ignored: the kernel matches addresses). A dataset that lists endpoints may connect to those only
// (its bit is cleared from every jurisdiction class); one that lists none may connect wherever its
// residency allows. Throws std::length_error past SG_MAX_CLASSES classes,
// std::invalid_argument for a storage entry the validator should have rejected.
CompiledStorage CompileStorage(const ValidatedPolicy& policy, const CompiledPolicy& compiled);

// The canonical byte encoding hashed into CompiledPolicy::digest (documented in README.md).
std::string CanonicalEncoding(const CompiledPolicy& compiled);
std::array<std::uint8_t, 32> ComputeDigest(const CompiledPolicy& compiled);

// User-space longest-prefix lookup over a compiled policy (what the kernel trie answers).
class CompiledLookup {
 public:
  explicit CompiledLookup(const CompiledPolicy& compiled);  // keeps a reference
  // Class id of an address (host prefix); 0 when no prefix covers it.
  std::uint16_t ClassOf(const IpPrefix& address) const;

 private:
  const CompiledPolicy& compiled_;                 // must outlive the lookup
  std::vector<std::uint8_t> lengths4_, lengths6_;  // present prefix lengths, longest first
};

}  // namespace sovguard::policy
