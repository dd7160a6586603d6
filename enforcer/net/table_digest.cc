#include "enforcer/net/table_digest.h"

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

#include "enforcer/net/net_datapath.h"

namespace sovguard::net {

void TableHasher::Zeros(std::size_t n) {
  static const std::uint8_t kZero[4096] = {};
  while (n > 0) {
    const std::size_t k = std::min(n, sizeof(kZero));
    Update(kZero, k);
    n -= k;
  }
}

namespace {

// values of an array of max_entries entries, of which the first bytes.size() are given.
template <class T>
Sha256 DigestArray(const std::vector<T>& values, std::size_t value_size, std::size_t entries) {
  TableHasher h;
  const std::size_t bytes = values.size() * sizeof(T);
  h.Update(values.data(), bytes);
  if (entries * value_size > bytes) h.Zeros(entries * value_size - bytes);
  return h.Final();
}

constexpr std::size_t kTrieRecord = sizeof(sg_lpm_v6_key) + sizeof(std::uint32_t);
using TrieRecord = std::array<std::uint8_t, kTrieRecord>;

Sha256 DigestTrieRecords(std::vector<TrieRecord>& records) {
  std::sort(records.begin(), records.end());
  TableHasher h;
  for (const auto& r : records) h.Update(r.data(), r.size());
  return h.Final();
}

}  // namespace

TableDigests DigestTables(const NetTables& t) {
  TableDigests d{};
  const std::size_t v4_blocks = std::max<std::size_t>(t.v4_blocks.size() / SG_V4_BLOCK_SLOTS, 1);
  const std::size_t v6_blocks = std::max<std::size_t>(t.v6_blocks.size() / SG_V6_BLOCK_SLOTS, 1);
  d[0] = DigestArray(t.v4_dir, sizeof(sg_v4_dir_bucket), SG_V4_DIR_BUCKETS);
  d[1] = DigestArray(t.v4_blocks, sizeof(sg_v4_block), v4_blocks);
  d[2] = DigestTrie(t.v6_trie);
  d[3] = DigestArray(t.v6_l1, sizeof(std::uint32_t), SG_V6_L1_ENTRIES);
  d[4] = DigestArray(t.v6_blocks, sizeof(sg_v6_block), v6_blocks);
  d[5] = DigestArray(t.classes, sizeof(sg_class), SG_MAX_CLASSES);
  d[6] = DigestArray(std::vector<sg_net_policy>{t.policy}, sizeof(sg_net_policy), 1);
  d[7] = DigestArray(t.v6_nodes, sizeof(sg_v6_node), SG_V6_MAX_NODES);
  return d;
}

Sha256 DigestTrie(std::span<const V6TrieEntry> entries) {
  std::vector<TrieRecord> records(entries.size());
  for (std::size_t i = 0; i < records.size(); ++i) {
    std::memcpy(records[i].data(), &entries[i].key, sizeof(sg_lpm_v6_key));
    std::memcpy(records[i].data() + sizeof(sg_lpm_v6_key), &entries[i].class_id, 4);
  }
  return DigestTrieRecords(records);
}

TableDigests DigestTables(const NetTablePlan& plan, std::size_t chunk_bytes) {
  TableDigests d{};
  for (std::size_t i = 0; i < SG_NET_TABLES; ++i) {
    const auto table = static_cast<NetTable>(i);
    if (table == NetTable::kV6Lpm) {
      d[i] = DigestTrie(plan.v6_trie());
      continue;
    }
    TableHasher h;
    plan.ForEachChunk(table, chunk_bytes,
                      [&](std::uint32_t, std::uint32_t, std::span<const std::uint8_t> bytes) {
                        h.Update(bytes.data(), bytes.size());
                      });
    h.Zeros(std::size_t{plan.Entries(table) - plan.Used(table)} * NetTablePlan::ValueSize(table));
    d[i] = h.Final();
  }
  return d;
}

Sha256 DigestMap(int fd) {
  bpf_map_info info{};
  std::uint32_t len = sizeof(info);
  if (int err = bpf_obj_get_info_by_fd(fd, &info, &len); err)
    throw DatapathError("bpf_obj_get_info_by_fd (policy table)", -err);
  if (info.type == BPF_MAP_TYPE_LPM_TRIE) {
    if (info.key_size != sizeof(sg_lpm_v6_key) || info.value_size != sizeof(std::uint32_t))
      throw DatapathError(std::string("policy trie ") + info.name + ": unexpected layout", EINVAL);
    std::vector<TrieRecord> records;
    sg_lpm_v6_key key{}, next{};
    const void* prev = nullptr;
    // Bounded by the map's capacity: a trie cannot hold more.
    for (std::uint32_t i = 0; i <= info.max_entries; ++i) {
      int err = bpf_map_get_next_key(fd, prev, &next);
      if (err == -ENOENT) break;
      if (err) throw DatapathError("iterate policy trie", -err);
      TrieRecord r{};
      std::memcpy(r.data(), &next, sizeof(next));
      std::uint32_t v = 0;
      if ((err = bpf_map_lookup_elem(fd, &next, &v)))
        throw DatapathError("read policy trie entry", -err);
      std::memcpy(r.data() + sizeof(next), &v, 4);
      records.push_back(r);
      key = next;
      prev = &key;
    }
    return DigestTrieRecords(records);
  }
  if (info.type != BPF_MAP_TYPE_ARRAY || info.key_size != 4)
    throw DatapathError(std::string("policy table ") + info.name + ": not an array", EINVAL);
  // Batches of at most 1 MiB of values (as ApplyPolicy writes them), hashed as they arrive (no copy
  // of the whole table).
  const std::uint32_t chunk = std::max<std::uint32_t>(1, (1u << 20) / info.value_size);
  std::vector<std::uint32_t> keys(chunk);
  std::vector<std::uint8_t> values(static_cast<std::size_t>(chunk) * info.value_size);
  TableHasher h;
  std::uint32_t total = 0, out_batch = 0;
  bool first = true;
  while (total < info.max_entries) {
    std::uint32_t count = std::min(chunk, info.max_entries - total);
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    int err = bpf_map_lookup_batch(fd, first ? nullptr : &out_batch, &out_batch, keys.data(),
                                   values.data(), &count, &opts);
    if (err && err != -ENOENT) throw DatapathError("read policy table batch", -err);
    for (std::uint32_t i = 0; i < count; ++i)
      if (keys[i] != total + i) throw DatapathError("policy table read out of order", EIO);
    h.Update(values.data(), static_cast<std::size_t>(count) * info.value_size);
    total += count;
    first = false;
    if (err == -ENOENT || count == 0) break;
  }
  if (total != info.max_entries) throw DatapathError("policy table read short", EIO);
  return h.Final();
}

}  // namespace sovguard::net
