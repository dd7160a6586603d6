/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Maps of the network residency datapath. Layouts are in bpf/sovguard_abi.h.
 *
 * Policy data is generation-scoped: every *_outer map is an ARRAY_OF_MAPS with SG_NET_GENERATIONS
 * slots; user space fills the inner maps of the inactive slot completely, then flips
 * sg_cfg.active_gen. The program reads active_gen once per packet, so a packet sees one whole
 * generation (in-flight packets keep the old inner maps alive through RCU).
 * Guest state, counters, quotas and the event ring are not generation-scoped: they survive swaps.
 */
#ifndef SOVGUARD_BPF_NET_SG_NET_MAPS_H_
#define SOVGUARD_BPF_NET_SG_NET_MAPS_H_

/*
 * .bss, written by user space through the skeleton's mmap: the global configuration (active_gen is
 * stored atomically), the direct guest index and the double-buffered guest configurations (see
 * struct sg_net_guest). Plain loads here cost no helper call on the hot path.
 */
struct sg_net_config sg_cfg;
__u32 sg_guest_index[SG_GUEST_INDEX_DIRECT];
struct sg_net_guest sg_guest_cfg[SG_MAX_GUESTS * 2];

/*
 * Inner map templates (never instantiated here: user space creates one per generation). Sizes, not
 * BTF types: clang emits only forward declarations for structs reached through a type that no
 * variable instantiates, and user-created inner maps carry no BTF either.
 */
struct sg_v4_dir_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_V4_DIR_BUCKETS);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_v4_dir_bucket));
};
/* BPF_F_INNER_MAP: the number of blocks differs from one policy to the next. */
struct sg_v4_l2_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(map_flags, BPF_F_INNER_MAP);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_v4_block));
};
struct sg_v6_lpm_inner {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 262144);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __uint(key_size, sizeof(struct sg_lpm_v6_key));
  __uint(value_size, sizeof(__u32));
};
struct sg_v6_l1_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_V6_L1_ENTRIES);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(__u32));
};
/* BPF_F_INNER_MAP: the number of blocks differs from one policy to the next. */
struct sg_v6_l2_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(map_flags, BPF_F_INNER_MAP);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_v6_block));
};
/* Fixed size, no BPF_F_INNER_MAP: lookups in it are inlined (one per level below /32). */
struct sg_v6_l3_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_V6_MAX_NODES);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_v6_node));
};
struct sg_classes_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_MAX_CLASSES);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_class));
};
struct sg_policy_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(struct sg_net_policy));
};

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v4_dir_inner);
} sg_v4_dir_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v4_l2_inner);
} sg_v4_l2_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v6_lpm_inner);
} sg_v6_lpm_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v6_l1_inner);
} sg_v6_l1_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v6_l2_inner);
} sg_v6_l2_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_classes_inner);
} sg_classes_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_v6_l3_inner);
} sg_v6_l3_outer SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, SG_NET_GENERATIONS);
  __type(key, __u32);
  __array(values, struct sg_policy_inner);
} sg_policy_outer SEC(".maps");

/* Guest index for ifindex >= SG_GUEST_INDEX_DIRECT: ifindex -> configuration entry + 1. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS);
  __type(key, __u32);
  __type(value, __u32);
} sg_guests SEC(".maps");

/*
 * An RCU barrier for user space: updating a map-in-map slot returns only after a grace period, i.e.
 * after every program run that started before it has finished. Slot 0 holds a one-entry array.
 */
struct sg_barrier_inner {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __uint(key_size, sizeof(__u32));
  __uint(value_size, sizeof(__u32));
};
struct {
  __uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
  __uint(max_entries, 1);
  __type(key, __u32);
  __array(values, struct sg_barrier_inner);
} sg_rcu_barrier SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
  __uint(max_entries, SG_MAX_GUESTS* SG_MAX_GUEST_DATASETS);
  __type(key, __u32);
  __type(value, struct sg_net_counters);
} sg_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_MAX_GUESTS* SG_MAX_GUEST_DATASETS);
  __type(key, __u32);
  __type(value, struct sg_net_quota);
} sg_quotas SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_MAX_GUESTS);
  __type(key, __u32);
  __type(value, struct sg_net_ratelimit);
} sg_ratelimit SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} sg_events SEC(".maps");

/* Restart hand-over bookkeeping (user space only; see struct sg_net_guest_meta). */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, __u32);
  __type(value, struct sg_net_guest_meta);
} sg_guest_meta SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, 1);
  __type(key, __u32);
  __type(value, struct sg_net_state);
} sg_state SEC(".maps");

#endif /* SOVGUARD_BPF_NET_SG_NET_MAPS_H_ */
