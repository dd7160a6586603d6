// Translation of a CompiledPolicy into the datapath's kernel table layouts (pure, no syscalls, so
// it is unit-testable and its cost is measurable apart from the map writes).
//
// NetTablePlan validates the policy and keeps only what it takes to produce any range of any table
// on demand (the sorted prefix lists, the block numbering, the IPv6 first level): the loader
// writes the 32 MiB IPv4 direct table and the other levels a chunk at a time and never holds a
// whole table (the daemon's start-up peak). NetTables is the whole layout in memory, for
// tests and benchmarks; both come from the same NetTablePlan::Fill, byte for byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "bpf/sovguard_abi.h"
#include "policy/compiled.h"

namespace sovguard::net {

struct V6TrieEntry {
  sg_lpm_v6_key key;
  std::uint32_t class_id;
};

// The policy tables of one generation, in sg_net_state.table_digest order (the order of the
// *_outer maps). Every one but kV6Lpm (an LPM trie) is an ARRAY keyed 0..entries-1.
enum class NetTable : std::uint8_t {
  kV4Dir = 0,
  kV4L2 = 1,
  kV6Lpm = 2,
  kV6L1 = 3,
  kV6L2 = 4,
  kClasses = 5,
  kPolicy = 6,
  kV6L3 = 7,
};

class NetTablePlan {
 public:
  // Validates the policy (class ids in range, prefix lengths, host bits clear, no conflicting
  // duplicate prefix, quotas well-formed, dataset indexes) and plans the tables. Throws
  // std::invalid_argument naming the offending field.
  // max_v6_nodes caps the IPv6 nodes below /32 (512 bytes each per generation); /32s that do not
  // fit are resolved by the LPM trie instead (slower: see bench/datapath).
  explicit NetTablePlan(const policy::CompiledPolicy& policy,
                        std::size_t max_v6_nodes = SG_V6_MAX_NODES);

  // Bytes per entry of an array table.
  static std::size_t ValueSize(NetTable table);
  // The array's max_entries in the kernel (entries past Used() are zero).
  std::uint32_t Entries(NetTable table) const;
  // Entries with content, written from key 0 on.
  std::uint32_t Used(NetTable table) const;
  // Writes entries [first, first + count) of an array table (first + count <= Used(table)) in
  // kernel layout to out, which holds count * ValueSize(table) bytes. Each entry is computed on
  // its own: any range costs about its size.
  void Fill(NetTable table, std::uint32_t first, std::uint32_t count, void* out) const;
  // The used entries of an array table in key order, in chunks of at most chunk_bytes (at least
  // one entry each): f(first key, entry count, bytes). Memory: one chunk.
  void ForEachChunk(NetTable table, std::size_t chunk_bytes,
                    const std::function<void(std::uint32_t, std::uint32_t,
                                             std::span<const std::uint8_t>)>& f) const;

  // The /32s (and their longer prefixes) the IPv6 LPM trie resolves: those holding prefixes
  // longer than /64, or that did not fit in max_v6_nodes.
  const std::vector<V6TrieEntry>& v6_trie() const { return v6_trie_; }
  const std::vector<sg_class>& classes() const { return classes_; }
  const sg_net_policy& policy() const { return policy_; }

 private:
  // A /32 holding longer prefixes: v6_[first_prefix, end_prefix) are those, in (addr, len) order.
  struct Split32 {
    std::uint32_t s32 = 0;
    std::uint32_t first_prefix = 0, end_prefix = 0;
    std::uint16_t dflt = 0;  // class of the /32 itself (longest prefix up to /32 covering it)
    std::uint16_t slot = 0;  // its level-2 slot: SG_V6_NODE | node, or SG_V6_TRIE
    std::uint32_t first_node = 0, nodes = 0;  // nodes [first_node, first_node + nodes) are its
  };

  void FillV4Bucket(std::uint32_t bucket, std::uint16_t* out) const;
  void FillV4Block(std::uint32_t block, std::uint16_t* out) const;
  void FillV6Block(std::uint32_t block, std::uint16_t* out) const;
  void FillV6Nodes(std::uint32_t first, std::uint32_t count, std::uint16_t* out) const;
  // Builds the nodes of one /32 numbered from first_node into nodes (cleared first).
  std::optional<std::uint16_t> BuildNodes(const Split32& s, std::uint32_t first_node,
                                          std::vector<std::uint16_t>& nodes, bool* uses_trie) const;

  std::size_t max_v6_nodes_;
  // Deduplicated, sorted by (addr, len): painting a region in this order leaves every slot with
  // its longest covering prefix (a prefix comes before every prefix it contains).
  std::vector<policy::Ipv4Prefix> v4_short_;    // len <= 24
  std::vector<policy::Ipv4Prefix> v4_long_;     // len > 24
  std::vector<std::uint16_t> v4_bucket_class_;  // per direct-table bucket: its prefix up to /12
  std::vector<std::uint32_t> v4_block_slot_;    // per IPv4 block: its /24 (addr >> 8)
  std::vector<std::uint16_t> v4_block_class_;   // per IPv4 block: the class of the /24 itself
  std::vector<std::pair<std::uint32_t, std::uint32_t>> v4_slot_block_;  // (/24, block), by /24
  std::vector<policy::Ipv6Prefix> v6_;
  std::vector<std::uint32_t> v6_l1_;           // level 1 as written (SG_V6_L1_ENTRIES)
  std::vector<std::uint32_t> v6_block_top_;    // per IPv6 block: its /16
  std::vector<std::uint16_t> v6_block_class_;  // per IPv6 block: the class of the /16 itself
  std::vector<Split32> split32_;               // by /32
  std::vector<std::uint32_t> node_owner_;      // indexes into split32_ with nodes, by first_node
  std::uint32_t v6_nodes_ = 0;
  std::vector<V6TrieEntry> v6_trie_;
  std::vector<sg_class> classes_;
  sg_net_policy policy_{};
};

// The whole layout in memory (about 45 MiB with the world table): tests and benchmarks only.
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

NetTables BuildNetTables(const NetTablePlan& plan);
// Validates (as NetTablePlan) and builds every table in memory.
NetTables BuildNetTables(const policy::CompiledPolicy& policy,
                         std::size_t max_v6_nodes = SG_V6_MAX_NODES);

// Reference lookup over the built tables, the same algorithm as the BPF program (for tests).
std::uint32_t LookupV4(const NetTables& tables, std::uint32_t addr_host_order);
std::uint32_t LookupV6(const NetTables& tables, const std::uint8_t (&addr)[16]);

}  // namespace sovguard::net
