// Whole-map reads and writes of BPF maps from user space: one system call per chunk where the
// kernel has the map type's batch operations, one per entry where it has not (same result).
// Every function returns 0 or a negative errno; callers turn that into their own error.
#pragma once

#include <bpf/bpf.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sovguard::enforcer::bpfmap {

// True when `err` says the map type has no such batch operation (as opposed to a failure).
// 524 is the kernel's ENOTSUPP, which has no user-space name.
inline bool NoBatchOp(int err) {
  return err == -EINVAL || err == -524 || err == -EOPNOTSUPP;
}

// Writes `count` (key, value) pairs laid out back to back.
inline int UpdateMany(int fd, const void* keys, std::size_t key_size, const void* values,
                      std::size_t value_size, std::uint32_t count) {
  if (count == 0) return 0;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  std::uint32_t n = count;
  const int err = bpf_map_update_batch(fd, keys, values, &n, &opts);
  if (err == 0 && n == count) return 0;
  if (err != 0 && !NoBatchOp(err)) return err;
  const auto* k = static_cast<const std::uint8_t*>(keys);
  const auto* v = static_cast<const std::uint8_t*>(values);
  for (std::uint32_t i = 0; i < count; ++i)
    if (bpf_map_update_elem(fd, k + i * key_size, v + i * value_size, BPF_ANY) != 0) return -errno;
  return 0;
}

// Deletes `count` keys laid out back to back; a key already gone is not an error.
inline int DeleteMany(int fd, const void* keys, std::size_t key_size, std::uint32_t count) {
  const auto* k = static_cast<const std::uint8_t*>(keys);
  std::uint32_t done = 0;
  while (done < count) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    std::uint32_t n = count - done;
    const int err = bpf_map_delete_batch(fd, k + done * key_size, &n, &opts);
    if (err == 0) return 0;
    if (NoBatchOp(err)) break;
    if (err != -ENOENT) return err;
    done += n + 1;  // n deleted, then one that was gone already
  }
  for (; done < count; ++done)
    if (bpf_map_delete_elem(fd, k + done * key_size) != 0 && errno != ENOENT) return -errno;
  return 0;
}

// Calls fn(key, value) for every entry; entries deleted meanwhile are skipped, any other failure
// is returned (never a silently shortened walk). K and V are the map's key and value types (not
// per-CPU maps).
template <typename K, typename V, typename Fn>
int ForEach(int fd, Fn&& fn) {
  constexpr std::uint32_t kChunk = 4096;
  std::vector<K> keys(kChunk);
  std::vector<V> values(kChunk);
  // A hash map's batch cursor is a bucket index, other maps' a key: room for either.
  std::vector<std::uint8_t> cursor(std::max<std::size_t>(sizeof(K), 8));
  bool first = true;
  while (true) {
    LIBBPF_OPTS(bpf_map_batch_opts, opts);
    std::uint32_t n = kChunk;
    const int err = bpf_map_lookup_batch(fd, first ? nullptr : cursor.data(), cursor.data(),
                                         keys.data(), values.data(), &n, &opts);
    if (err != 0 && err != -ENOENT) {
      if (first && NoBatchOp(err)) break;
      return err;
    }
    for (std::uint32_t i = 0; i < n; ++i) fn(keys[i], values[i]);
    if (err == -ENOENT || n == 0) return 0;
    first = false;
  }
  K key{}, next{};
  const void* prev = nullptr;
  while (true) {
    if (bpf_map_get_next_key(fd, prev, &next) != 0) return errno == ENOENT ? 0 : -errno;
    V value{};
    if (bpf_map_lookup_elem(fd, &next, &value) == 0)
      fn(next, value);
    else if (errno != ENOENT)
      return -errno;
    key = next;
    prev = &key;
  }
}

}  // namespace sovguard::enforcer::bpfmap
