/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps of the storage path. Layouts are in bpf/storage/storage_guard_abi.h (via sovguard_abi.h).
 *
 * Policy data is generation-scoped: sg_storage_cfg, sg_storage_classes and the endpoint tables hold
 * SG_STORAGE_GENERATIONS generations; sg_storage_active says which one is in force, and a program
 * reads it once per run. Guests, volumes, counters, in-flight I/O and the event ring survive swaps.
 */
#ifndef SOVGUARD_BPF_STORAGE_STORAGE_GUARD_MAPS_H_
#define SOVGUARD_BPF_STORAGE_STORAGE_GUARD_MAPS_H_

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_STORAGE_GENERATIONS);
  __type(key, __u32);
  __type(value, struct sg_storage_config);
} sg_storage_cfg SEC(".maps");

/* The generation of sg_storage_cfg, sg_storage_classes and the endpoint tables in force. */
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
} sg_storage_active SEC(".maps");

/* User space updates this map-in-map to wait for programs still using the old generation (an
 * update of a map-in-map returns after an RCU grace period). Programs never read it. */
struct sg_storage_barrier_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, __u32);
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, 1);
  __type(key, __u32);
  __array(values, struct sg_storage_barrier_inner);
} sg_storage_barrier SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS);
  __type(key, __u64); /* cgroup v2 id of the guest directory */
  __type(value, struct sg_storage_guest);
} sg_storage_guests SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS);
  __type(key, struct sg_storage_pending_key);
  __type(value, struct sg_storage_guest);
} sg_storage_pending SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, struct sg_volume_key);
  __type(value, struct sg_volume);
} sg_volumes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 2 * 262144);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct sg_storage_lpm4_key);
  __type(value, __u16);
} sg_endpoints4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 2 * 262144);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct sg_storage_lpm6_key);
  __type(value, __u16);
} sg_endpoints6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_STORAGE_GENERATIONS* SG_MAX_CLASSES);
  __type(key, __u32); /* generation * SG_MAX_CLASSES + class id */
  __type(value, struct sg_class);
} sg_storage_classes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS* SG_MAX_GUEST_DATASETS);
  __type(key, struct sg_io_key);
  __type(value, struct sg_io_state);
} sg_io_state SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} sg_storage_events SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS + 1);
  __type(key, __u32); /* guest_id; 0: every unregistered cgroup */
  __type(value, struct sg_storage_ratelimit);
} sg_storage_ratelimit SEC(".maps");

/* Restart hand-over: written and read by user space only (see sovguard_abi.h). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct sg_storage_guest_meta);
} sg_storage_guest_meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct sg_volume_key);
  __type(value, struct sg_storage_volume_meta);
} sg_storage_volume_meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct sg_storage_state);
} sg_storage_state SEC(".maps");

/* The I/O a guest thread is in, set at syscall entry when an fd is a protected volume and
 * consumed at its exit: task local storage (a lookup in the task, no shared table to update and
 * delete from per I/O). A copy between two fds reads its source and writes its destination;
 * either may be a volume. */
struct sg_inflight {
  __u32 nr; /* syscall number + 1; 0: none in flight */
  __u32 guest_id;
  __u32 in_dataset;  /* read from; SG_MAX_DATASETS: not a volume */
  __u32 out_dataset; /* written to; SG_MAX_DATASETS: not a volume */
};
struct {
  __uint(type, BPF_MAP_TYPE_TASK_STORAGE);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, int);
  __type(value, struct sg_inflight);
} sg_io_task SEC(".maps");

#endif /* SOVGUARD_BPF_STORAGE_STORAGE_GUARD_MAPS_H_ */
