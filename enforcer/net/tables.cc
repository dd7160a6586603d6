#include "enforcer/net/tables.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>

namespace sovguard::net {
namespace {

constexpr std::uint32_t kV4DirSlots = SG_V4_DIR_BUCKETS * SG_V4_DIR_SLOTS;  // one per /24
static_assert(kV4DirSlots == (1u << 24));
static_assert(SG_V4_DIR_SLOTS == (1u << 12), "a bucket is the /24s of one /12");
static_assert(SG_V4_BLOCK_SLOTS == 256 && SG_V6_BLOCK_SLOTS == 65536 && SG_V6_L1_ENTRIES == 65536);
static_assert(SG_MAX_CLASSES <= SG_V4_DIR_BLOCK, "class ids must not collide with the block flag");
static_assert(SG_MAX_CLASSES < SG_V6_TRIE, "class ids must not collide with the trie marker");

[[noreturn]] void Invalid(const std::string& what) {
  throw std::invalid_argument("compiled policy: " + what);
}

bool V6HostBitsClear(const std::array<std::uint8_t, 16>& a, std::uint8_t len) {
  for (unsigned bit = len; bit < 128; ++bit)
    if (a[bit / 8] & (0x80u >> (bit % 8))) return false;
  return true;
}

std::string V4Text(std::uint32_t a, unsigned len) {
  return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." +
         std::to_string((a >> 8) & 255) + "." + std::to_string(a & 255) + "/" + std::to_string(len);
}

template <class P>
bool AddrLenLess(const P& a, const P& b) {
  return a.addr != b.addr ? a.addr < b.addr : a.len < b.len;
}

bool V4Contains(const policy::Ipv4Prefix& p, std::uint32_t a) {
  return p.len == 0 || ((p.addr ^ a) >> (32 - p.len)) == 0;
}

bool PrefixMatches(const std::uint8_t* prefix, const std::uint8_t* addr, unsigned len) {
  if (std::memcmp(prefix, addr, len / 8) != 0) return false;
  if (len % 8 == 0) return true;
  const auto m = static_cast<std::uint8_t>(0xff00u >> (len % 8));
  return (prefix[len / 8] & m) == (addr[len / 8] & m);
}

bool V6Contains(const policy::Ipv6Prefix& p, const std::array<std::uint8_t, 16>& a) {
  return PrefixMatches(p.addr.data(), a.data(), p.len);
}

std::uint32_t Top16(const policy::Ipv6Prefix& e) {
  return static_cast<std::uint32_t>((e.addr[0] << 8) | e.addr[1]);
}
std::uint32_t Next16(const policy::Ipv6Prefix& e) {
  return static_cast<std::uint32_t>((e.addr[2] << 8) | e.addr[3]);
}
std::array<std::uint8_t, 16> V6Addr(std::uint32_t top32) {
  return {static_cast<std::uint8_t>(top32 >> 24), static_cast<std::uint8_t>(top32 >> 16),
          static_cast<std::uint8_t>(top32 >> 8), static_cast<std::uint8_t>(top32)};
}

// For each query address (ascending, each the first address of a region no prefix of up to
// max_len bits splits), the class of the longest prefix of up to max_len bits containing it (0:
// none). One sweep over the (addr, len)-sorted prefixes, which are nested or disjoint: the chain
// holds the prefixes containing the current point, outermost first.
template <class P, class A, class Contains>
std::vector<std::uint16_t> LongestCovering(const std::vector<P>& sorted, unsigned max_len,
                                           const std::vector<A>& queries, Contains contains) {
  std::vector<std::uint16_t> out;
  out.reserve(queries.size());
  std::vector<const P*> chain;
  std::size_t i = 0;
  for (const A& q : queries) {
    for (; i < sorted.size() && sorted[i].addr <= q; ++i) {
      if (sorted[i].len > max_len) continue;
      while (!chain.empty() && !contains(*chain.back(), sorted[i].addr)) chain.pop_back();
      chain.push_back(&sorted[i]);
    }
    while (!chain.empty() && !contains(*chain.back(), q)) chain.pop_back();
    out.push_back(chain.empty() ? 0 : chain.back()->class_id);
  }
  return out;
}

// The slot value for a region of depth*8 bits holding `longer` prefixes (all longer than that,
// in (addr, len) order) whose own class is dflt: a node painted with them, recursively. Prefixes
// longer than /64 leave the decision to the trie (*uses_trie). Nodes are numbered from
// first_node + the nodes already in `nodes`; nullopt when that passes max_nodes.
std::optional<std::uint16_t> BuildV6Node(std::vector<std::uint16_t>& nodes,
                                         std::uint32_t first_node, std::size_t max_nodes,
                                         unsigned depth, std::uint16_t dflt,
                                         const std::vector<const policy::Ipv6Prefix*>& longer,
                                         bool* uses_trie) {
  if (depth == 8) {
    *uses_trie = true;
    return static_cast<std::uint16_t>(SG_V6_TRIE);
  }
  const std::size_t local = nodes.size() / SG_V6_NODE_SLOTS;
  const std::size_t node = first_node + local;
  if (node >= max_nodes) return std::nullopt;
  nodes.resize(nodes.size() + SG_V6_NODE_SLOTS, dflt);
  const std::size_t base = local * SG_V6_NODE_SLOTS;
  const unsigned end_bits = 8 * (depth + 1);
  std::map<std::uint8_t, std::vector<const policy::Ipv6Prefix*>> deeper;
  for (const auto* e : longer) {
    if (e->len <= end_bits) {
      std::fill_n(nodes.begin() + static_cast<std::ptrdiff_t>(base + e->addr[depth]),
                  1u << (end_bits - e->len), e->class_id);
    } else {
      deeper[e->addr[depth]].push_back(e);
    }
  }
  for (const auto& [slot, list] : deeper) {
    const auto v =
        BuildV6Node(nodes, first_node, max_nodes, depth + 1, nodes[base + slot], list, uses_trie);
    if (!v) return std::nullopt;
    nodes[base + slot] = *v;
  }
  return static_cast<std::uint16_t>(SG_V6_NODE | node);
}

}  // namespace

NetTablePlan::NetTablePlan(const policy::CompiledPolicy& p, std::size_t max_v6_nodes)
    : max_v6_nodes_(std::min<std::size_t>(max_v6_nodes, SG_V6_MAX_NODES)) {
  if (p.classes.empty()) Invalid("classes: class 0 (unknown address space) is missing");
  if (p.classes.size() > SG_MAX_CLASSES)
    Invalid("classes: " + std::to_string(p.classes.size()) + " classes, at most " +
            std::to_string(SG_MAX_CLASSES));
  if (p.datasets.size() > SG_MAX_DATASETS)
    Invalid("datasets: " + std::to_string(p.datasets.size()) + " datasets, at most " +
            std::to_string(SG_MAX_DATASETS));
  classes_ = p.classes;
  // Class 0 is allowed for nobody, whatever the input says (fail closed).
  classes_[0].allowed_datasets = 0;
  classes_[0].flags &= ~(SG_CLASS_EXCEPTION | SG_CLASS_PORTS);
  policy_.n_classes = static_cast<std::uint32_t>(p.classes.size());
  if (p.port_rulesets.size() > SG_PORT_RULESETS)
    Invalid("port_rulesets: " + std::to_string(p.port_rulesets.size()) + " rule sets, at most " +
            std::to_string(SG_PORT_RULESETS));
  policy_.n_rulesets = static_cast<std::uint32_t>(p.port_rulesets.size());
  for (std::size_t i = 0; i < p.port_rulesets.size(); ++i) {
    for (const auto& r : p.port_rulesets[i].rule) {
      if (r.datasets != 0 && ((r.proto != 6 && r.proto != 17) || r.port_lo > r.port_hi))
        Invalid("port_rulesets[" + std::to_string(i) +
                "]: a rule needs protocol 6 (tcp) or 17 (udp) and port_lo <= port_hi");
    }
    policy_.rulesets[i] = p.port_rulesets[i];
  }
  for (std::size_t i = 1; i < classes_.size(); ++i) {
    if ((classes_[i].flags & SG_CLASS_PORTS) &&
        (classes_[i].flags >> SG_CLASS_RULESET_SHIFT) >= p.port_rulesets.size())
      Invalid("classes[" + std::to_string(i) + "]: port rule set out of range");
  }
  for (std::size_t i = 0; i < p.datasets.size(); ++i) {
    const auto& d = p.datasets[i];
    if (d.index != i)
      Invalid("datasets[" + std::to_string(i) + "].index is " + std::to_string(d.index) +
              ", expected " + std::to_string(i));
    if (d.mode == policy::Mode::kEnforce) policy_.enforce_mask |= 1ull << i;
    if (d.egress) {
      if (d.egress->bytes == 0 || d.egress->window_seconds == 0)
        Invalid("datasets[" + std::to_string(i) + "].egress: bytes and window_seconds must be > 0");
      if (d.egress->window_seconds > UINT64_MAX / 1000000000ull)
        Invalid("datasets[" + std::to_string(i) + "].egress.window_seconds is too large");
      policy_.quota_mask |= 1ull << i;
      policy_.ds[i].quota_bytes = d.egress->bytes;
      policy_.ds[i].quota_window_ns = d.egress->window_seconds * 1000000000ull;
    }
  }

  // ---- IPv4 ----
  std::size_t n_short = 0;
  for (std::size_t i = 0; i < p.ipv4.size(); ++i) {
    const auto& e = p.ipv4[i];
    auto invalid = [&](const char* what) {
      Invalid("ipv4[" + std::to_string(i) + "] " + V4Text(e.addr, e.len) + ": " + what);
    };
    if (e.len > 32) invalid("prefix length > 32");
    if (e.class_id >= p.classes.size()) invalid("class_id out of range");
    const std::uint32_t mask = e.len == 0 ? 0 : ~0u << (32 - e.len);
    if (e.addr & ~mask) invalid("bits past the prefix length are set");
    n_short += e.len <= 24;
  }
  v4_short_.reserve(n_short);
  v4_long_.reserve(p.ipv4.size() - n_short);
  for (const auto& e : p.ipv4) (e.len <= 24 ? v4_short_ : v4_long_).push_back(e);
  // Conflicting duplicates: the first in (len, addr) order is reported.
  std::optional<policy::Ipv4Prefix> conflict;
  for (auto* list : {&v4_short_, &v4_long_}) {
    std::sort(list->begin(), list->end(), AddrLenLess<policy::Ipv4Prefix>);
    for (std::size_t i = 1; i < list->size(); ++i) {
      const auto& a = (*list)[i - 1];
      const auto& b = (*list)[i];
      if (a.addr == b.addr && a.len == b.len && a.class_id != b.class_id &&
          (!conflict || std::pair(b.len, b.addr) < std::pair(conflict->len, conflict->addr)))
        conflict = b;
    }
    list->erase(std::unique(list->begin(), list->end(),
                            [](const auto& a, const auto& b) {
                              return a.addr == b.addr && a.len == b.len;
                            }),
                list->end());
  }
  if (conflict)
    Invalid("ipv4 " + V4Text(conflict->addr, conflict->len) +
            ": listed twice with different classes");
  // The class of each bucket (/12) from the prefixes up to /12, painted in (addr, len) order.
  v4_bucket_class_.assign(SG_V4_DIR_BUCKETS, 0);
  for (const auto& e : v4_short_)
    if (e.len <= 12)
      std::fill_n(v4_bucket_class_.begin() + (e.addr >> 20), 1u << (12 - e.len), e.class_id);
  // /24s that hold longer prefixes get a block of per-address class ids, numbered in the order
  // the /24s first appear in (len, addr) order.
  std::vector<std::uint32_t> slots;  // distinct /24s, ascending
  for (const auto& e : v4_long_)
    if (slots.empty() || slots.back() != e.addr >> 8) slots.push_back(e.addr >> 8);
  {
    std::vector<std::uint32_t> order(v4_long_.size());
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      return v4_long_[a].len < v4_long_[b].len;
    });
    std::vector<std::uint32_t> block_at(slots.size(), std::numeric_limits<std::uint32_t>::max());
    for (const std::uint32_t i : order) {
      const auto pos = static_cast<std::size_t>(
          std::lower_bound(slots.begin(), slots.end(), v4_long_[i].addr >> 8) - slots.begin());
      if (block_at[pos] != std::numeric_limits<std::uint32_t>::max()) continue;
      if (v4_block_slot_.size() >= SG_V4_DIR_BLOCK)
        Invalid("ipv4: more than " + std::to_string(SG_V4_DIR_BLOCK) +
                " /24s hold longer prefixes");
      block_at[pos] = static_cast<std::uint32_t>(v4_block_slot_.size());
      v4_block_slot_.push_back(slots[pos]);
    }
    std::vector<std::uint32_t> starts(slots.size());
    for (std::size_t i = 0; i < slots.size(); ++i) starts[i] = slots[i] << 8;
    const auto cls = LongestCovering(v4_short_, 24, starts, V4Contains);
    v4_block_class_.resize(slots.size());
    v4_slot_block_.reserve(slots.size());
    for (std::size_t i = 0; i < slots.size(); ++i) {
      v4_block_class_[block_at[i]] = cls[i];
      v4_slot_block_.emplace_back(slots[i], block_at[i]);
    }
  }

  // ---- IPv6 ----
  // Per-entry checks and conflicting duplicates are reported at the first offending index.
  std::size_t bad = p.ipv6.size();
  std::string bad_what;
  for (std::size_t i = 0; i < p.ipv6.size() && bad == p.ipv6.size(); ++i) {
    const auto& e = p.ipv6[i];
    if (e.len > 128) {
      bad_what = "prefix length > 128";
    } else if (e.class_id >= p.classes.size()) {
      bad_what = "class_id out of range";
    } else if (!V6HostBitsClear(e.addr, e.len)) {
      bad_what = "bits past the prefix length are set";
    } else {
      continue;
    }
    bad = i;
  }
  {
    std::vector<std::uint32_t> order(p.ipv6.size());
    std::iota(order.begin(), order.end(), 0u);
    std::sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
      const auto& x = p.ipv6[a];
      const auto& y = p.ipv6[b];
      if (x.addr != y.addr) return x.addr < y.addr;
      return x.len != y.len ? x.len < y.len : a < b;
    });
    std::size_t distinct = 0;
    for (std::size_t k = 0, first = 0; k < order.size(); ++k) {
      const auto& e = p.ipv6[order[k]];
      if (k == 0 || e.addr != p.ipv6[order[first]].addr || e.len != p.ipv6[order[first]].len) {
        first = k;
        ++distinct;
      } else if (e.class_id != p.ipv6[order[first]].class_id && order[k] < bad) {
        bad = order[k];
        bad_what = "listed twice with different classes";
      }
    }
    if (bad < p.ipv6.size()) Invalid("ipv6[" + std::to_string(bad) + "]: " + bad_what);
    v6_.reserve(distinct);
    for (const std::uint32_t i : order)
      if (v6_.empty() || v6_.back().addr != p.ipv6[i].addr || v6_.back().len != p.ipv6[i].len)
        v6_.push_back(p.ipv6[i]);
  }
  // Level 1: prefixes up to /16, painted in (addr, len) order.
  v6_l1_.assign(SG_V6_L1_ENTRIES, 0);
  for (const auto& e : v6_)
    if (e.len <= 16) std::fill_n(v6_l1_.begin() + Top16(e), 1u << (16 - e.len), e.class_id);
  // Level 2: one block per /16 holding longer prefixes, numbered in the order the /16s first
  // appear in (len, addr) order, starting from the /16's own class.
  {
    std::vector<std::uint32_t> order;
    for (std::uint32_t i = 0; i < v6_.size(); ++i)
      if (v6_[i].len > 16) order.push_back(i);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::uint32_t a, std::uint32_t b) { return v6_[a].len < v6_[b].len; });
    std::vector<bool> has_block(SG_V6_L1_ENTRIES, false);
    for (const std::uint32_t i : order) {
      const std::uint32_t top = Top16(v6_[i]);
      if (has_block[top]) continue;
      has_block[top] = true;
      v6_block_top_.push_back(top);
      v6_block_class_.push_back(static_cast<std::uint16_t>(v6_l1_[top]));
    }
  }
  // /32s holding longer prefixes: nodes of 8-bit strides down to /64 (what most lookups of /48
  // assignments need); the trie only where prefixes longer than /64 exist or nodes run out, with
  // the /32's own class as its fallback. Nodes are numbered in /32 order.
  for (std::uint32_t i = 0; i < v6_.size(); ++i) {
    if (v6_[i].len <= 32) continue;
    const std::uint32_t s32 = (Top16(v6_[i]) << 16) | Next16(v6_[i]);
    if (split32_.empty() || split32_.back().s32 != s32) split32_.push_back({s32, i, i});
    split32_.back().end_prefix = i + 1;  // a /32's longer prefixes are contiguous
  }
  {
    std::vector<std::array<std::uint8_t, 16>> starts;
    starts.reserve(split32_.size());
    for (const auto& s : split32_) starts.push_back(V6Addr(s.s32));
    const auto cls = LongestCovering(v6_, 32, starts, V6Contains);
    for (std::size_t k = 0; k < split32_.size(); ++k) split32_[k].dflt = cls[k];
  }
  std::vector<std::uint16_t> scratch;
  for (std::uint32_t k = 0; k < split32_.size(); ++k) {
    auto& s = split32_[k];
    bool uses_trie = false;
    const auto node = BuildNodes(s, v6_nodes_, scratch, &uses_trie);
    if (node) {
      s.first_node = v6_nodes_;
      s.nodes = static_cast<std::uint32_t>(scratch.size() / SG_V6_NODE_SLOTS);
      v6_nodes_ += s.nodes;
      node_owner_.push_back(k);
      if (!uses_trie) {
        s.slot = *node;
        continue;
      }
    }
    // Out of nodes (this /32 goes to the trie whole), or prefixes longer than /64 below it.
    V6TrieEntry e{};
    e.key.prefixlen = 32;
    std::memcpy(e.key.addr, V6Addr(s.s32).data(), 4);
    e.class_id = s.dflt;
    v6_trie_.push_back(e);
    for (std::uint32_t i = s.first_prefix; i < s.end_prefix; ++i) {
      V6TrieEntry l{};
      l.key.prefixlen = v6_[i].len;
      std::memcpy(l.key.addr, v6_[i].addr.data(), 16);
      l.class_id = v6_[i].class_id;
      v6_trie_.push_back(l);
    }
    s.slot = node ? *node : static_cast<std::uint16_t>(SG_V6_TRIE);
  }
  for (std::uint32_t b = 0; b < v6_block_top_.size(); ++b)
    v6_l1_[v6_block_top_[b]] = SG_V6_L1_BLOCK | b;
}

std::optional<std::uint16_t> NetTablePlan::BuildNodes(const Split32& s, std::uint32_t first_node,
                                                      std::vector<std::uint16_t>& nodes,
                                                      bool* uses_trie) const {
  nodes.clear();
  std::vector<const policy::Ipv6Prefix*> longer;
  longer.reserve(s.end_prefix - s.first_prefix);
  for (std::uint32_t i = s.first_prefix; i < s.end_prefix; ++i) longer.push_back(&v6_[i]);
  return BuildV6Node(nodes, first_node, max_v6_nodes_, 4, s.dflt, longer, uses_trie);
}

std::size_t NetTablePlan::ValueSize(NetTable table) {
  switch (table) {
    case NetTable::kV4Dir:
      return sizeof(sg_v4_dir_bucket);
    case NetTable::kV4L2:
      return sizeof(sg_v4_block);
    case NetTable::kV6Lpm:
    case NetTable::kV6L1:
      return sizeof(std::uint32_t);
    case NetTable::kV6L2:
      return sizeof(sg_v6_block);
    case NetTable::kClasses:
      return sizeof(sg_class);
    case NetTable::kPolicy:
      return sizeof(sg_net_policy);
    case NetTable::kV6L3:
      return sizeof(sg_v6_node);
  }
  throw std::logic_error("NetTablePlan: unknown table");
}

std::uint32_t NetTablePlan::Used(NetTable table) const {
  switch (table) {
    case NetTable::kV4Dir:
      return SG_V4_DIR_BUCKETS;
    case NetTable::kV4L2:
      return static_cast<std::uint32_t>(v4_block_slot_.size());
    case NetTable::kV6Lpm:
      return static_cast<std::uint32_t>(v6_trie_.size());
    case NetTable::kV6L1:
      return SG_V6_L1_ENTRIES;
    case NetTable::kV6L2:
      return static_cast<std::uint32_t>(v6_block_top_.size());
    case NetTable::kClasses:
      return static_cast<std::uint32_t>(classes_.size());
    case NetTable::kPolicy:
      return 1;
    case NetTable::kV6L3:
      return v6_nodes_;
  }
  throw std::logic_error("NetTablePlan: unknown table");
}

std::uint32_t NetTablePlan::Entries(NetTable table) const {
  switch (table) {
    case NetTable::kV6L3:
      return SG_V6_MAX_NODES;
    case NetTable::kClasses:
      return SG_MAX_CLASSES;
    default:
      // A map needs at least one entry: a policy with no blocks still has one zero block.
      return std::max<std::uint32_t>(Used(table), 1);
  }
}

void NetTablePlan::FillV4Bucket(std::uint32_t bucket, std::uint16_t* out) const {
  std::fill_n(out, SG_V4_DIR_SLOTS, v4_bucket_class_[bucket]);
  // Prefixes /13../24 inside the bucket, in (addr, len) order; those up to /12 that start here
  // are in v4_bucket_class_ already.
  auto it =
      std::lower_bound(v4_short_.begin(), v4_short_.end(), bucket << 20,
                       [](const policy::Ipv4Prefix& e, std::uint32_t a) { return e.addr < a; });
  for (; it != v4_short_.end() && (it->addr >> 20) == bucket; ++it)
    if (it->len > 12)
      std::fill_n(out + ((it->addr >> 8) & (SG_V4_DIR_SLOTS - 1)), 1u << (24 - it->len),
                  it->class_id);
  auto b = std::lower_bound(v4_slot_block_.begin(), v4_slot_block_.end(),
                            std::pair<std::uint32_t, std::uint32_t>(bucket << 12, 0));
  for (; b != v4_slot_block_.end() && (b->first >> 12) == bucket; ++b)
    out[b->first & (SG_V4_DIR_SLOTS - 1)] = static_cast<std::uint16_t>(SG_V4_DIR_BLOCK | b->second);
}

void NetTablePlan::FillV4Block(std::uint32_t block, std::uint16_t* out) const {
  const std::uint32_t slot = v4_block_slot_[block];
  std::fill_n(out, SG_V4_BLOCK_SLOTS, v4_block_class_[block]);
  auto it =
      std::lower_bound(v4_long_.begin(), v4_long_.end(), slot << 8,
                       [](const policy::Ipv4Prefix& e, std::uint32_t a) { return e.addr < a; });
  for (; it != v4_long_.end() && (it->addr >> 8) == slot; ++it)
    std::fill_n(out + (it->addr & 0xff), 1u << (32 - it->len), it->class_id);
}

void NetTablePlan::FillV6Block(std::uint32_t block, std::uint16_t* out) const {
  const std::uint32_t top = v6_block_top_[block];
  std::fill_n(out, SG_V6_BLOCK_SLOTS, v6_block_class_[block]);
  auto it = std::lower_bound(v6_.begin(), v6_.end(), V6Addr(top << 16),
                             [](const policy::Ipv6Prefix& e,
                                const std::array<std::uint8_t, 16>& a) { return e.addr < a; });
  for (; it != v6_.end() && Top16(*it) == top; ++it)
    if (it->len > 16 && it->len <= 32)
      std::fill_n(out + Next16(*it), 1u << (32 - it->len), it->class_id);
  auto s = std::lower_bound(split32_.begin(), split32_.end(), top << 16,
                            [](const Split32& x, std::uint32_t v) { return x.s32 < v; });
  for (; s != split32_.end() && (s->s32 >> 16) == top; ++s) out[s->s32 & 0xffff] = s->slot;
}

void NetTablePlan::FillV6Nodes(std::uint32_t first, std::uint32_t count, std::uint16_t* out) const {
  if (count == 0) return;
  // The /32 owning node `first`, then its successors: their nodes are consecutive.
  auto it = std::upper_bound(
      node_owner_.begin(), node_owner_.end(), first,
      [&](std::uint32_t n, std::uint32_t k) { return n < split32_[k].first_node; });
  --it;
  std::vector<std::uint16_t> nodes;
  for (std::uint32_t n = first; n < first + count; ++it) {
    const Split32& s = split32_[*it];
    bool uses_trie = false;
    if (!BuildNodes(s, s.first_node, nodes, &uses_trie) ||
        nodes.size() / SG_V6_NODE_SLOTS != s.nodes)
      throw std::logic_error("NetTablePlan: IPv6 nodes differ from the plan");
    const std::uint32_t end = std::min(s.first_node + s.nodes, first + count);
    std::copy(nodes.begin() + static_cast<std::ptrdiff_t>(n - s.first_node) * SG_V6_NODE_SLOTS,
              nodes.begin() + static_cast<std::ptrdiff_t>(end - s.first_node) * SG_V6_NODE_SLOTS,
              out + std::size_t{n - first} * SG_V6_NODE_SLOTS);
    n = end;
  }
}

void NetTablePlan::Fill(NetTable table, std::uint32_t first, std::uint32_t count, void* out) const {
  if (table == NetTable::kV6Lpm) throw std::logic_error("NetTablePlan::Fill: the trie is no array");
  if (first > Used(table) || count > Used(table) - first)
    throw std::out_of_range("NetTablePlan::Fill: entries past the table");
  auto* u16 = static_cast<std::uint16_t*>(out);
  switch (table) {
    case NetTable::kV4Dir:
      for (std::uint32_t i = 0; i < count; ++i)
        FillV4Bucket(first + i, u16 + std::size_t{i} * SG_V4_DIR_SLOTS);
      break;
    case NetTable::kV4L2:
      for (std::uint32_t i = 0; i < count; ++i)
        FillV4Block(first + i, u16 + std::size_t{i} * SG_V4_BLOCK_SLOTS);
      break;
    case NetTable::kV6L1:
      std::memcpy(out, v6_l1_.data() + first, std::size_t{count} * sizeof(std::uint32_t));
      break;
    case NetTable::kV6L2:
      for (std::uint32_t i = 0; i < count; ++i)
        FillV6Block(first + i, u16 + std::size_t{i} * SG_V6_BLOCK_SLOTS);
      break;
    case NetTable::kV6L3:
      FillV6Nodes(first, count, u16);
      break;
    case NetTable::kClasses:
      std::memcpy(out, classes_.data() + first, std::size_t{count} * sizeof(sg_class));
      break;
    case NetTable::kPolicy:
      if (count) std::memcpy(out, &policy_, sizeof(policy_));
      break;
    case NetTable::kV6Lpm:
      break;
  }
}

void NetTablePlan::ForEachChunk(NetTable table, std::size_t chunk_bytes,
                                const std::function<void(std::uint32_t, std::uint32_t,
                                                         std::span<const std::uint8_t>)>& f) const {
  const std::size_t size = ValueSize(table);
  const std::uint32_t used = Used(table);
  const auto per = static_cast<std::uint32_t>(
      std::clamp<std::size_t>(chunk_bytes / size, 1, std::max<std::uint32_t>(used, 1)));
  std::vector<std::uint8_t> buf(std::size_t{per} * size);
  for (std::uint32_t first = 0; first < used; first += per) {
    const std::uint32_t n = std::min(per, used - first);
    Fill(table, first, n, buf.data());
    f(first, n, std::span<const std::uint8_t>(buf.data(), std::size_t{n} * size));
  }
}

NetTables BuildNetTables(const NetTablePlan& plan) {
  NetTables t;
  auto fill = [&](auto& v, NetTable table, std::size_t per_entry) {
    v.resize(std::size_t{plan.Used(table)} * per_entry);
    plan.Fill(table, 0, plan.Used(table), v.data());
  };
  fill(t.v4_dir, NetTable::kV4Dir, SG_V4_DIR_SLOTS);
  fill(t.v4_blocks, NetTable::kV4L2, SG_V4_BLOCK_SLOTS);
  fill(t.v6_l1, NetTable::kV6L1, 1);
  fill(t.v6_blocks, NetTable::kV6L2, SG_V6_BLOCK_SLOTS);
  fill(t.v6_nodes, NetTable::kV6L3, SG_V6_NODE_SLOTS);
  t.v6_trie = plan.v6_trie();
  t.classes = plan.classes();
  t.policy = plan.policy();
  return t;
}

NetTables BuildNetTables(const policy::CompiledPolicy& p, std::size_t max_v6_nodes) {
  return BuildNetTables(NetTablePlan(p, max_v6_nodes));
}

std::uint32_t LookupV4(const NetTables& t, std::uint32_t addr) {
  const std::uint16_t c = t.v4_dir[addr >> 8];
  if (!(c & SG_V4_DIR_BLOCK)) return c;
  return t
      .v4_blocks[std::size_t{c & ~SG_V4_DIR_BLOCK & 0xffffu} * SG_V4_BLOCK_SLOTS + (addr & 0xff)];
}

std::uint32_t LookupV6(const NetTables& t, const std::uint8_t (&addr)[16]) {
  const std::uint32_t l1 = t.v6_l1[(addr[0] << 8) | addr[1]];
  if (!(l1 & SG_V6_L1_BLOCK)) return l1;
  const std::uint16_t c2 = t.v6_blocks[std::size_t{l1 & ~SG_V6_L1_BLOCK} * SG_V6_BLOCK_SLOTS +
                                       ((addr[2] << 8) | addr[3])];
  std::uint32_t c = c2;
  if ((c & SG_V6_NODE) && c != SG_V6_TRIE) {
    for (int k = 4; k < 8; ++k) {
      c = t.v6_nodes[std::size_t{c & ~SG_V6_NODE} * SG_V6_NODE_SLOTS + addr[k]];
      if (!(c & SG_V6_NODE) || c == SG_V6_TRIE) break;
    }
    if ((c & SG_V6_NODE) && c != SG_V6_TRIE) return 0;
  }
  if (c != SG_V6_TRIE) return c;
  int best = -1;
  std::uint32_t cls = 0;
  for (const auto& e : t.v6_trie)
    if (static_cast<int>(e.key.prefixlen) > best &&
        PrefixMatches(e.key.addr, addr, e.key.prefixlen)) {
      best = static_cast<int>(e.key.prefixlen);
      cls = e.class_id;
    }
  return cls;
}

}  // namespace sovguard::net
