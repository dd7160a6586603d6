// SHA-256 of each policy table of a generation, computed once from the tables as built and again
// from the kernel maps: the tamper check compares the two.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>

#include "base/sha256.h"
#include "bpf/sovguard_abi.h"
#include "enforcer/net/tables.h"

namespace sovguard::net {

using Sha256 = std::array<std::uint8_t, 32>;
using TableDigests = std::array<Sha256, SG_NET_TABLES>;

// Names in sg_net_state.table_digest order (the order of the *_outer maps in ApplyPolicy).
inline constexpr std::array<std::string_view, SG_NET_TABLES> kTableNames = {
    "v4_dir", "v4_l2", "v6_lpm", "v6_l1", "v6_l2", "classes", "policy", "v6_l3"};
static_assert(kTableNames[static_cast<std::size_t>(NetTable::kV4Dir)] == "v4_dir" &&
              kTableNames[static_cast<std::size_t>(NetTable::kV6Lpm)] == "v6_lpm" &&
              kTableNames[static_cast<std::size_t>(NetTable::kV6L3)] == "v6_l3");

// Incremental SHA-256, for tables hashed a chunk at a time as they are written.
class TableHasher : public base::Sha256Hasher {
 public:
  // Hashes `size` zero bytes (the unwritten tail of an ARRAY map).
  void Zeros(std::size_t size);
};

// Canonical form per table: arrays hash their values in key order over all max_entries (a policy
// with no blocks still has one zero block); the trie hashes its (key, value) pairs sorted bytewise.
TableDigests DigestTables(const NetTables& tables);
// The same digests from a plan, chunk by chunk (no table is held whole).
TableDigests DigestTables(const NetTablePlan& plan, std::size_t chunk_bytes = 1u << 20);
Sha256 DigestTrie(std::span<const V6TrieEntry> entries);
// The same canonical digest, read back from a kernel map (ARRAY or LPM_TRIE).
Sha256 DigestMap(int map_fd);

}  // namespace sovguard::net
