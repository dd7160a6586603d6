#include "enforcer/datapath/tables.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace sovguard::datapath {
namespace {

constexpr std::uint32_t kV4DirSlots = SG_V4_DIR_BUCKETS * SG_V4_DIR_SLOTS;  // one per /24
static_assert(kV4DirSlots == (1u << 24));
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

// The slot value for a region of depth*8 bits holding `longer` prefixes (all longer than that,
// shortest first) whose own class is dflt: a node painted with them, recursively. Prefixes longer
// than /64 leave the decision to the trie (*uses_trie). nullopt when out of nodes.
std::optional<std::uint16_t> BuildV6Node(std::vector<std::uint16_t>& nodes, std::size_t max_nodes,
                                         unsigned depth, std::uint16_t dflt,
                                         const std::vector<const policy::Ipv6Prefix*>& longer,
                                         bool* uses_trie) {
  if (depth == 8) {
    *uses_trie = true;
    return static_cast<std::uint16_t>(SG_V6_TRIE);
  }
  const std::size_t node = nodes.size() / SG_V6_NODE_SLOTS;
  if (node >= std::min<std::size_t>(max_nodes, SG_V6_MAX_NODES)) return std::nullopt;
  nodes.resize(nodes.size() + SG_V6_NODE_SLOTS, dflt);
  const std::size_t base = node * SG_V6_NODE_SLOTS;
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
    const auto v = BuildV6Node(nodes, max_nodes, depth + 1, nodes[base + slot], list, uses_trie);
    if (!v) return std::nullopt;
    nodes[base + slot] = *v;
  }
  return static_cast<std::uint16_t>(SG_V6_NODE | node);
}

}  // namespace

NetTables BuildNetTables(const policy::CompiledPolicy& p, std::size_t max_v6_nodes) {
  NetTables t;
  if (p.classes.empty()) Invalid("classes: class 0 (unknown address space) is missing");
  if (p.classes.size() > SG_MAX_CLASSES)
    Invalid("classes: " + std::to_string(p.classes.size()) + " classes, at most " +
            std::to_string(SG_MAX_CLASSES));
  if (p.datasets.size() > SG_MAX_DATASETS)
    Invalid("datasets: " + std::to_string(p.datasets.size()) + " datasets, at most " +
            std::to_string(SG_MAX_DATASETS));
  t.classes = p.classes;
  // Class 0 is allowed for nobody, whatever the input says (fail closed).
  t.classes[0].allowed_datasets = 0;
  t.classes[0].flags &= ~SG_CLASS_EXCEPTION;
  t.policy.n_classes = static_cast<std::uint32_t>(p.classes.size());
  for (std::size_t i = 0; i < p.datasets.size(); ++i) {
    const auto& d = p.datasets[i];
    if (d.index != i)
      Invalid("datasets[" + std::to_string(i) + "].index is " + std::to_string(d.index) +
              ", expected " + std::to_string(i));
    if (d.mode == policy::Mode::kEnforce) t.policy.enforce_mask |= 1ull << i;
    if (d.egress) {
      if (d.egress->bytes == 0 || d.egress->window_seconds == 0)
        Invalid("datasets[" + std::to_string(i) + "].egress: bytes and window_seconds must be > 0");
      if (d.egress->window_seconds > UINT64_MAX / 1000000000ull)
        Invalid("datasets[" + std::to_string(i) + "].egress.window_seconds is too large");
      t.policy.quota_mask |= 1ull << i;
      t.policy.ds[i].quota_bytes = d.egress->bytes;
      t.policy.ds[i].quota_window_ns = d.egress->window_seconds * 1000000000ull;
    }
  }

  // IPv4: paint /24 slots shortest prefix first so longer prefixes overwrite what they refine.
  std::vector<const policy::Ipv4Prefix*> v4;
  v4.reserve(p.ipv4.size());
  for (std::size_t i = 0; i < p.ipv4.size(); ++i) {
    const auto& e = p.ipv4[i];
    const std::string where = "ipv4[" + std::to_string(i) + "] " + V4Text(e.addr, e.len);
    if (e.len > 32) Invalid(where + ": prefix length > 32");
    if (e.class_id >= p.classes.size()) Invalid(where + ": class_id out of range");
    const std::uint32_t mask = e.len == 0 ? 0 : ~0u << (32 - e.len);
    if (e.addr & ~mask) Invalid(where + ": bits past the prefix length are set");
    v4.push_back(&e);
  }
  std::stable_sort(v4.begin(), v4.end(), [](auto* a, auto* b) {
    return a->len != b->len ? a->len < b->len : a->addr < b->addr;
  });
  for (std::size_t i = 1; i < v4.size(); ++i)
    if (v4[i]->len == v4[i - 1]->len && v4[i]->addr == v4[i - 1]->addr &&
        v4[i]->class_id != v4[i - 1]->class_id)
      Invalid("ipv4 " + V4Text(v4[i]->addr, v4[i]->len) + ": listed twice with different classes");

  t.v4_dir.assign(kV4DirSlots, 0);
  auto first_long = v4.begin();
  for (; first_long != v4.end() && (*first_long)->len <= 24; ++first_long) {
    const auto* e = *first_long;
    const std::uint32_t first = e->addr >> 8;
    const std::uint32_t count = 1u << (24 - e->len);
    std::fill_n(t.v4_dir.begin() + first, count, e->class_id);
  }
  // /24s that hold longer prefixes get a block of per-address class ids, starting from the /24's
  // own class; the longer prefixes are painted into it shortest first.
  std::map<std::uint32_t, std::uint32_t> block_of4;  // /24 -> block
  for (auto it = first_long; it != v4.end(); ++it) {
    const std::uint32_t slot = (*it)->addr >> 8;
    if (block_of4.count(slot)) continue;
    const auto b = static_cast<std::uint32_t>(block_of4.size());
    if (b >= SG_V4_DIR_BLOCK)
      Invalid("ipv4: more than " + std::to_string(SG_V4_DIR_BLOCK) + " /24s hold longer prefixes");
    block_of4[slot] = b;
    t.v4_blocks.resize(t.v4_blocks.size() + SG_V4_BLOCK_SLOTS, t.v4_dir[slot]);
  }
  for (auto it = first_long; it != v4.end(); ++it) {
    const auto* e = *it;
    const std::size_t base = std::size_t{block_of4.at(e->addr >> 8)} * SG_V4_BLOCK_SLOTS;
    std::fill_n(t.v4_blocks.begin() + static_cast<std::ptrdiff_t>(base + (e->addr & 0xff)),
                1u << (32 - e->len), e->class_id);
  }
  for (const auto& [slot, b] : block_of4)
    t.v4_dir[slot] = static_cast<std::uint16_t>(SG_V4_DIR_BLOCK | b);

  std::map<std::pair<std::array<std::uint8_t, 16>, std::uint8_t>, std::uint16_t> seen6;
  std::vector<const policy::Ipv6Prefix*> v6;
  for (std::size_t i = 0; i < p.ipv6.size(); ++i) {
    const auto& e = p.ipv6[i];
    const std::string where = "ipv6[" + std::to_string(i) + "]";
    if (e.len > 128) Invalid(where + ": prefix length > 128");
    if (e.class_id >= p.classes.size()) Invalid(where + ": class_id out of range");
    if (!V6HostBitsClear(e.addr, e.len)) Invalid(where + ": bits past the prefix length are set");
    auto [it, inserted] = seen6.emplace(std::make_pair(e.addr, e.len), e.class_id);
    if (!inserted) {
      if (it->second != e.class_id) Invalid(where + ": listed twice with different classes");
      continue;
    }
    v6.push_back(&e);
  }
  std::stable_sort(v6.begin(), v6.end(), [](auto* a, auto* b) { return a->len < b->len; });
  auto top16 = [](const policy::Ipv6Prefix* e) {
    return static_cast<std::uint32_t>((e->addr[0] << 8) | e->addr[1]);
  };
  auto next16 = [](const policy::Ipv6Prefix* e) {
    return static_cast<std::uint32_t>((e->addr[2] << 8) | e->addr[3]);
  };
  // Level 1: prefixes up to /16, shortest first.
  t.v6_l1.assign(SG_V6_L1_ENTRIES, 0);
  auto it6 = v6.begin();
  for (; it6 != v6.end() && (*it6)->len <= 16; ++it6)
    std::fill_n(t.v6_l1.begin() + top16(*it6), 1u << (16 - (*it6)->len), (*it6)->class_id);
  // Level 2: one block per /16 holding longer prefixes, starting from the /16's own class.
  std::map<std::uint32_t, std::uint32_t> block_of;  // /16 -> block
  for (auto it = it6; it != v6.end(); ++it) {
    const std::uint32_t top = top16(*it);
    if (block_of.count(top)) continue;
    const auto b = static_cast<std::uint32_t>(block_of.size());
    block_of[top] = b;
    t.v6_blocks.resize(t.v6_blocks.size() + SG_V6_BLOCK_SLOTS,
                       static_cast<std::uint16_t>(t.v6_l1[top]));
  }
  auto first_long6 = it6;
  for (; first_long6 != v6.end() && (*first_long6)->len <= 32; ++first_long6) {
    const auto* e = *first_long6;
    const std::size_t base = std::size_t{block_of.at(top16(e))} * SG_V6_BLOCK_SLOTS;
    std::fill_n(t.v6_blocks.begin() + static_cast<std::ptrdiff_t>(base + next16(e)),
                1u << (32 - e->len), e->class_id);
  }
  // /32s holding longer prefixes: nodes of 8-bit strides down to /64 (what most lookups of /48
  // assignments need); the trie only where prefixes longer than /64 exist or nodes run out, with
  // the /32's own class as its fallback.
  std::map<std::uint32_t, std::vector<const policy::Ipv6Prefix*>> split6;  // /32 -> longer ones
  for (auto it = first_long6; it != v6.end(); ++it)
    split6[(top16(*it) << 16) | next16(*it)].push_back(*it);
  for (const auto& [s32, longer] : split6) {
    auto& slot =
        t.v6_blocks[std::size_t{block_of.at(s32 >> 16)} * SG_V6_BLOCK_SLOTS + (s32 & 0xffff)];
    const std::size_t nodes_before = t.v6_nodes.size();
    bool uses_trie = false;
    const auto node = BuildV6Node(t.v6_nodes, max_v6_nodes, 4, slot, longer, &uses_trie);
    if (node && !uses_trie) {
      slot = *node;
      continue;
    }
    if (!node) t.v6_nodes.resize(nodes_before);  // out of nodes: this /32 goes to the trie whole
    V6TrieEntry e{};
    e.key.prefixlen = 32;
    e.key.addr[0] = static_cast<std::uint8_t>(s32 >> 24);
    e.key.addr[1] = static_cast<std::uint8_t>(s32 >> 16);
    e.key.addr[2] = static_cast<std::uint8_t>(s32 >> 8);
    e.key.addr[3] = static_cast<std::uint8_t>(s32);
    e.class_id = slot;
    t.v6_trie.push_back(e);
    for (const auto* p6 : longer) {
      V6TrieEntry l{};
      l.key.prefixlen = p6->len;
      std::memcpy(l.key.addr, p6->addr.data(), 16);
      l.class_id = p6->class_id;
      t.v6_trie.push_back(l);
    }
    slot = node ? *node : static_cast<std::uint16_t>(SG_V6_TRIE);
  }
  for (const auto& [top, b] : block_of) t.v6_l1[top] = SG_V6_L1_BLOCK | b;
  return t;
}

namespace {
bool PrefixMatches(const std::uint8_t* prefix, const std::uint8_t* addr, unsigned len) {
  for (unsigned bit = 0; bit < len; ++bit) {
    const std::uint8_t m = static_cast<std::uint8_t>(0x80u >> (bit % 8));
    if ((prefix[bit / 8] & m) != (addr[bit / 8] & m)) return false;
  }
  return true;
}
}  // namespace

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

}  // namespace sovguard::datapath
