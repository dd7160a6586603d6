// Translation of a CompiledPolicy into the datapath's kernel table layouts (pure, no syscalls, so
// it is unit-testable and its cost is measurable apart from the map writes).
#pragma once

#include <cstdint>
#include <vector>

#include "bpf/sovguard_abi.h"
#include "policy/compiled.h"

namespace sovguard::datapath {

struct V6TrieEntry {
  sg_lpm_v6_key key;
  std::uint32_t class_id;
};

struct NetTables {
  // Class id per /24 (index addr >> 8), laid out exactly as the SG_V4_DIR_BUCKETS x
  // sg_v4_dir_bucket array map; SG_V4_DIR_BLOCK | block where longer prefixes exist under that /24.
  std::vector<std::uint16_t> v4_dir;
  // Second level: SG_V4_BLOCK_SLOTS class ids per block (one per address), as the sg_v4_block map.
  std::vector<std::uint16_t> v4_blocks;
  // IPv6 level 1 (per /16) and the level-2 blocks (SG_V6_BLOCK_SLOTS class ids per block, one
  // per /32), laid out as the sg_v6_block array map.
  std::vector<std::uint32_t> v6_l1;
  std::vector<std::uint16_t> v6_blocks;
  // Nodes below /32 (SG_V6_NODE_SLOTS class ids or node references per node, bytes 4..7 of the
  // address), laid out as the sg_v6_node array map.
  std::vector<std::uint16_t> v6_nodes;
  // Only for the /32s whose nodes end in SG_V6_TRIE (prefixes longer than /64, or out of nodes):
  // their /32 with its own class plus every longer prefix under it.
  std::vector<V6TrieEntry> v6_trie;
  std::vector<sg_class> classes;
  sg_net_policy policy{};
};

// Validates the policy (class ids in range, prefix lengths, host bits clear, no conflicting
// duplicate prefix, quotas well-formed, dataset indexes) and builds the tables. Throws
// std::invalid_argument naming the offending field.
// max_v6_nodes caps the IPv6 nodes below /32 (512 bytes each per generation); /32s that do not
// fit are resolved by the LPM trie instead (slower: see bench/datapath).
NetTables BuildNetTables(const policy::CompiledPolicy& policy,
                         std::size_t max_v6_nodes = SG_V6_MAX_NODES);

// Reference lookup over the built tables, the same algorithm as the BPF program (for tests).
std::uint32_t LookupV4(const NetTables& tables, std::uint32_t addr_host_order);
std::uint32_t LookupV6(const NetTables& tables, const std::uint8_t (&addr)[16]);

}  // namespace sovguard::datapath
