#include <fmt/format.h>
#include <cerrno>

#include "base/sha256.h"
#include "enforcer/storage/storage_datapath_impl.h"

namespace sovguard::storage {

namespace {

// An endpoint table's entry (prefix length, address) and its key in the LPM map of generation
// `gen`: the map's prefix covers the 32-bit generation first.
using Ep4 = std::pair<std::uint32_t, std::uint32_t>;
using Ep6 = std::pair<std::uint32_t, std::array<std::uint8_t, 16>>;
sg_storage_lpm4_key MapKey(const Ep4& e, std::uint32_t gen) {
  return {.prefixlen = 32 + e.first, .gen = gen, .addr = e.second};
}
sg_storage_lpm6_key MapKey(const Ep6& e, std::uint32_t gen) {
  sg_storage_lpm6_key k{.prefixlen = 32 + e.first, .gen = gen, .addr = {}};
  std::memcpy(k.addr, e.second.data(), 16);
  return k;
}
Ep4 EntryOf(const sg_storage_lpm4_key& k) {
  return {k.prefixlen - 32, k.addr};
}
Ep6 EntryOf(const sg_storage_lpm6_key& k) {
  Ep6 e{k.prefixlen - 32, {}};
  std::memcpy(e.second.data(), k.addr, 16);
  return e;
}

// The entries of generation `gen` of an endpoint map.
template <class Key, class Table>
void ReadEndpoints(int fd, std::uint32_t gen, Table& out) {
  ForEach<Key, std::uint16_t>(fd, [&](const Key& k, const std::uint16_t& v) {
    if (k.gen == gen) out.Add(EntryOf(k), v);
  });
  out.Finish();
}

// Writes `table` into generation `gen` of an endpoint map, then deletes that generation's entries
// the table does not hold.
template <class Key, class Table>
void WriteEndpoints(int fd, std::uint32_t gen, const Table& table, const char* name) {
  std::vector<Key> keys;
  std::vector<std::uint16_t> values;
  keys.reserve(table.size());
  values.reserve(table.size());
  for (const auto& [e, v] : table) {
    keys.push_back(MapKey(e, gen));
    values.push_back(v);
  }
  UpdateMany(fd, keys, values, name);
  std::vector<Key> stale;
  ForEach<Key, std::uint16_t>(fd, [&](const Key& k, const std::uint16_t&) {
    if (k.gen == gen && !table.contains(EntryOf(k))) stale.push_back(k);
  });
  DeleteMany(fd, stale, name);
}

}  // namespace

bool TableEqual(const Tables& a, const Tables& b, int which) {
  switch (which) {
    case kTableCfg:
      return SameBytes(&a.cfg, &b.cfg, sizeof a.cfg);
    case kTableClasses:
      // Entries past n_classes are never used (class 0 instead): compare the ones in use.
      for (std::size_t i = 0; i < std::max(a.classes.size(), b.classes.size()); ++i) {
        const sg_class none{};
        const sg_class& x = i < a.classes.size() ? a.classes[i] : none;
        const sg_class& y = i < b.classes.size() ? b.classes[i] : none;
        if (!SameBytes(&x, &y, sizeof x)) return false;
      }
      return true;
    case kTableEndpoints4:
      return a.ep4 == b.ep4;
    case kTableEndpoints6:
      return a.ep6 == b.ep6;
    case kTableVolumes:
      return a.volumes.size() == b.volumes.size() &&
             std::equal(a.volumes.begin(), a.volumes.end(), b.volumes.begin(),
                        [](const auto& x, const auto& y) {
                          return x.first == y.first &&
                                 SameBytes(&x.second, &y.second, sizeof x.second);
                        });
  }
  return true;
}

Digest TableDigest(const Tables& t, int which) {
  base::Sha256Hasher hash;
  auto add = [&](const void* p, std::size_t n) { hash.Update(p, n); };
  switch (which) {
    case kTableCfg:
      add(&t.cfg, sizeof t.cfg);
      break;
    case kTableClasses: {
      // Trailing all-zero classes are what an unwritten ARRAY entry holds: not part of the digest.
      std::size_t n = t.classes.size();
      const sg_class none{};
      while (n > 0 && SameBytes(&t.classes[n - 1], &none, sizeof none)) --n;
      add(t.classes.data(), n * sizeof(sg_class));
      break;
    }
    case kTableEndpoints4:
      for (const auto& [k, v] : t.ep4) {
        add(&k.first, 4);
        add(&k.second, 4);
        add(&v, 2);
      }
      break;
    case kTableEndpoints6:
      for (const auto& [k, v] : t.ep6) {
        add(&k.first, 4);
        add(k.second.data(), 16);
        add(&v, 2);
      }
      break;
    case kTableVolumes:
      for (const auto& [k, v] : t.volumes) {
        add(&k.first, 8);
        add(&k.second, 8);
        add(&v, sizeof v);
      }
      break;
  }
  return hash.Final();
}

void StorageDatapath::Impl::WriteConfig() {
  UpdateElem(Fd(skel->maps.sg_storage_cfg), &active, &cfg, "sg_storage_cfg");
  expected.cfg = cfg;
  digests[kTableCfg] = TableDigest(expected, kTableCfg);
}

void StorageDatapath::Impl::Barrier() {
  barrier.Wait(Fd(skel->maps.sg_storage_barrier));
}

void StorageDatapath::Impl::Publish() {
  const std::uint32_t next = (active + 1) % SG_STORAGE_GENERATIONS;
  WriteGeneration(next);
  const std::uint32_t zero = 0;
  UpdateElem(Fd(skel->maps.sg_storage_active), &zero, &next, "sg_storage_active");
  active = next;
  Barrier();
}

void StorageDatapath::Impl::WriteGeneration(std::uint32_t gen) {
  for (int t : {kTableClasses, kTableEndpoints4, kTableEndpoints6, kTableCfg}) WriteTable(t, gen);
}

void StorageDatapath::Impl::WriteState() {
  sg_storage_state st{};
  st.abi_version = SG_STORAGE_ABI_VERSION;
  st.next_guest_id = next_guest_id;
  st.policy_applied = policy.has_value() || !adopted_dataset_ids.empty();
  for (std::size_t i = 0; i < digests.size(); ++i)
    std::memcpy(st.table_digest[i], digests[i].data(), 32);
  for (std::uint32_t i = 0; i < SG_MAX_DATASETS; ++i) {
    const std::string id = DatasetId(i);
    std::memcpy(st.dataset_ids[i], id.data(),
                std::min<std::size_t>(id.size(), SG_STORAGE_DATASET_ID_LEN - 1));
  }
  const std::uint32_t zero = 0;
  UpdateElem(Fd(skel->maps.sg_storage_state), &zero, &st, "sg_storage_state");
}

std::string StorageDatapath::Impl::DatasetId(std::uint32_t index) const {
  if (policy) {
    for (const auto& d : policy->datasets)
      if (d.index == index) return d.id;
    return {};
  }
  return index < adopted_dataset_ids.size() ? adopted_dataset_ids[index] : std::string();
}

Tables StorageDatapath::Impl::ReadTables(std::uint32_t gen, std::size_t n_classes,
                                         bool endpoints) const {
  Tables t;
  bpf_map_lookup_elem(Fd(skel->maps.sg_storage_cfg), &gen, &t.cfg);
  n_classes = std::max<std::size_t>(n_classes, t.cfg.n_classes);
  n_classes = std::min<std::size_t>(n_classes, SG_MAX_CLASSES);
  t.classes.resize(n_classes);
  for (std::uint32_t i = 0; i < n_classes; ++i) {
    const std::uint32_t slot = gen * SG_MAX_CLASSES + i;
    bpf_map_lookup_elem(Fd(skel->maps.sg_storage_classes), &slot, &t.classes[i]);
  }
  if (endpoints) {
    ReadEndpoints<sg_storage_lpm4_key>(Fd(skel->maps.sg_endpoints4), gen, t.ep4);
    ReadEndpoints<sg_storage_lpm6_key>(Fd(skel->maps.sg_endpoints6), gen, t.ep6);
  }
  ForEach<sg_volume_key, sg_volume>(Fd(skel->maps.sg_volumes),
                                    [&](const sg_volume_key& k, const sg_volume& v) {
                                      t.volumes[{k.dev, k.ino}] = v;
                                    });
  return t;
}

void StorageDatapath::Impl::WriteTable(int which, std::uint32_t gen) {
  switch (which) {
    case kTableCfg:
      UpdateElem(Fd(skel->maps.sg_storage_cfg), &gen, &expected.cfg, "sg_storage_cfg");
      break;
    case kTableClasses:
      for (std::uint32_t i = 0; i < expected.classes.size(); ++i) {
        const std::uint32_t slot = gen * SG_MAX_CLASSES + i;
        UpdateElem(Fd(skel->maps.sg_storage_classes), &slot, &expected.classes[i],
                   "sg_storage_classes");
      }
      break;
    case kTableEndpoints4:
      WriteEndpoints<sg_storage_lpm4_key>(Fd(skel->maps.sg_endpoints4), gen, expected.ep4,
                                          "sg_endpoints4");
      break;
    case kTableEndpoints6:
      WriteEndpoints<sg_storage_lpm6_key>(Fd(skel->maps.sg_endpoints6), gen, expected.ep6,
                                          "sg_endpoints6");
      break;
    case kTableVolumes: {
      const int fd = Fd(skel->maps.sg_volumes);
      for (const auto& [k, v] : expected.volumes) {
        const sg_volume_key key{.dev = k.first, .ino = k.second};
        UpdateElem(fd, &key, &v, "sg_volumes");
      }
      std::vector<sg_volume_key> stale;
      ForEach<sg_volume_key, sg_volume>(fd, [&](const sg_volume_key& k, const sg_volume&) {
        if (!expected.volumes.contains({k.dev, k.ino})) stale.push_back(k);
      });
      for (const auto& k : stale) bpf_map_delete_elem(fd, &k);
      break;
    }
    default:
      break;
  }
}

}  // namespace sovguard::storage
