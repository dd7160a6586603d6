/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The network residency path's part of the kernel ABI (bpf/sovguard_abi.h): bpf/net/sg_net.bpf.c
 * and its loader in user space.
 */
#ifndef SOVGUARD_BPF_NET_SG_NET_ABI_H_
#define SOVGUARD_BPF_NET_SG_NET_ABI_H_

#ifndef SOVGUARD_BPF_SOVGUARD_ABI_H_
#error "include bpf/sovguard_abi.h (the common part), not this file"
#endif

/* tc verdicts (linux/pkt_cls.h is not available to BPF code built against vmlinux.h). */
#define SG_TC_ACT_OK 0
#define SG_TC_ACT_SHOT 2

/* Two generation slots: user space fills the inactive one completely, then flips active_gen. */
#define SG_NET_GENERATIONS 2

/* IPv4 first level: 4096 buckets (addr >> 20), each holding the class id of the 4096 /24s under it.
 */
#define SG_V4_DIR_BUCKETS 4096
#define SG_V4_DIR_SLOTS 4096
/* A /24 slot with this bit set holds longer prefixes: the low 15 bits index an sg_v4_block. */
#define SG_V4_DIR_BLOCK 0x8000u
#define SG_V4_BLOCK_SLOTS 256
/* An IPv6 /32 slot with this value holds longer prefixes: the IPv6 trie decides under it. */
#define SG_V6_TRIE 0xFFFFu

/* ifindexes below this are looked up in a direct array (no hash on the hot path). */
#define SG_GUEST_INDEX_DIRECT 65536

/* Datasets one guest may hold with per-dataset counters and quotas (its mask may not hold more). */
#define SG_MAX_GUEST_DATASETS 8
#define SG_GUEST_DS_NONE 0xFFu
/* Non-IP ethertypes a guest may be allowed to send (0 = unused entry). */
#define SG_MAX_GUEST_ETHERTYPES 4

/*
 * sg_net_config: the global configuration, a variable in the program's .bss (an mmapable array:
 * user space writes active_gen with a single aligned atomic store, so a reader never sees a torn
 * value). active_gen selects the slot of every *_outer map; a slot is only made active once all its
 * inner maps are filled (an empty slot means no policy: everything but control frames is dropped).
 * Event rate limit: a token bucket per guest, events_per_sec refill, event_burst capacity.
 */
struct sg_net_config {
  __u32 active_gen;
  __u32 events_per_sec;
  __u32 event_burst;
  __u32 reserved;
};

/*
 * sg_v4_dir_bucket: value of the inner IPv4 direct table (ARRAY[SG_V4_DIR_BUCKETS], key addr>>20).
 * cls[(addr >> 8) & 0xfff] is the class id of that /24, or SG_V4_DIR_BLOCK | block.
 */
struct sg_v4_dir_bucket {
  __u16 cls[SG_V4_DIR_SLOTS];
};

/*
 * sg_v4_block: value of the inner IPv4 second level (ARRAY, as many blocks as /24s that hold
 * longer prefixes): the class id of each address of that /24 (DIR-24-8, so IPv4 needs no trie).
 */
struct sg_v4_block {
  __u16 cls[SG_V4_BLOCK_SLOTS];
};

/*
 * IPv6 first two levels. Level 1: ARRAY[SG_V6_L1_ENTRIES] of __u32 keyed by the top 16 bits: a
 * class id for a /16 that one class covers whole, or SG_V6_L1_BLOCK | block index. Level 2: ARRAY
 * of sg_v6_block (as many as the policy needs): the class id of each /32 under that /16, or
 * SG_V6_TRIE when longer prefixes exist under that /32.
 */
#define SG_V6_L1_ENTRIES 65536
#define SG_V6_L1_BLOCK 0x80000000u
#define SG_V6_BLOCK_SLOTS 65536
struct sg_v6_block {
  __u16 cls[SG_V6_BLOCK_SLOTS];
};

/*
 * IPv6 below /32, where longer prefixes exist (most are /48 assignments): a multibit trie of
 * 8-bit strides in one ARRAY of sg_v6_node (levels /40, /48, /56, /64, indexed by address bytes
 * 4..7). A level-2 slot or a node slot holds a class id, SG_V6_NODE | node index (the next byte
 * decides), or SG_V6_TRIE (prefixes longer than /64 under it, or no node left: the LPM trie
 * decides, it holds every prefix longer than /32).
 */
#define SG_V6_NODE 0x8000u
#define SG_V6_NODE_SLOTS 256
/* The node array has this fixed size (8 MiB per generation; the world table needs about 8,700):
 * a fixed-size inner array lets the verifier inline its lookups (no helper call per level). */
#define SG_V6_MAX_NODES 16384u
struct sg_v6_node {
  __u16 cls[SG_V6_NODE_SLOTS];
};

/*
 * sg_lpm_v6_key: key of the IPv6 LPM trie (prefixlen in bits, address in network order), which
 * holds the prefixes longer than /32 plus the /32s that hold them. Values are __u32 class ids.
 */
struct sg_lpm_v6_key {
  __u32 prefixlen;
  __u8 addr[16];
};

/*
 * sg_dataset_cfg / sg_net_policy: the per-generation policy header (inner ARRAY[1]). enforce_mask
 * has bit i set when dataset i is in enforce mode; quota_mask when it has an egress quota, whose
 * budget and window are in ds[i].
 */
struct sg_dataset_cfg {
  __u64 quota_bytes;     /* egress bytes per window, 0 = no quota */
  __u64 quota_window_ns; /* window length */
};
/*
 * sg_port_rule: one protocol and destination port range of a port-limited exception class
 * (SG_CLASS_PORTS); datasets == 0 ends the rule set. Ports in host order, inclusive.
 */
#define SG_PORT_RULES 8     /* rules per port-limited exception class */
#define SG_PORT_RULESETS 32 /* port-limited exception classes per policy */
struct sg_port_rule {
  __u64 datasets; /* datasets the rule admits */
  __u16 port_lo;
  __u16 port_hi;
  __u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
  __u8 reserved[3];
};
struct sg_port_ruleset {
  struct sg_port_rule rule[SG_PORT_RULES];
};
struct sg_net_policy {
  __u64 enforce_mask;
  __u64 quota_mask;
  __u32 n_classes;  /* class ids >= n_classes are treated as class 0 (fail closed) */
  __u32 n_rulesets; /* rule sets in use; a class naming one at or past it matches nothing */
  struct sg_dataset_cfg ds[SG_MAX_DATASETS];
  struct sg_port_ruleset rulesets[SG_PORT_RULESETS];
};

/*
 * sg_net_guest: one guest's configuration. Kept in the program's .bss as sg_guest_cfg[], two
 * entries per guest slot (2*slot and 2*slot+1): user space rewrites the one not in use, then
 * switches the guest's index entry with one atomic store, so a frame never sees half a
 * configuration. The index: sg_guest_index[ifindex] (.bss, for ifindex < SG_GUEST_INDEX_DIRECT) or
 * the sg_guests HASH (ifindex -> __u32) above that; the value is configuration entry + 1, 0 = no
 * guest. slot indexes the per-guest arrays (counters, quotas, rate limit); ds[] lists the indexes
 * of the datasets held, in a stable order: position p of ds is counter/quota entry
 * slot*SG_MAX_GUEST_DATASETS+p (a position keeps its dataset, and so its counters, while the guest
 * holds it); free positions are SG_GUEST_DS_NONE, none in use at or past n_ds. ethertypes[] are
 * non-IP ethertypes (host order) this guest may send.
 */
struct sg_net_guest {
  __u64 datasets; /* the mask the verdict uses */
  __u32 slot;     /* < SG_MAX_GUESTS */
  __u8 n_ds;      /* positions in use are below n_ds */
  __u8 reserved[3];
  __u8 ds[SG_MAX_GUEST_DATASETS];
  __u16 ethertypes[SG_MAX_GUEST_ETHERTYPES];
};

/*
 * sg_net_counters: per-CPU counters per (guest slot, dataset position) in a PERCPU_ARRAY. Control
 * frames (ARP, ND, DHCP) are not counted. dropped_* counts frames this dataset's rule dropped
 * (residency or quota, enforce); would_drop_* frames it would have dropped (audit).
 */
struct sg_net_counters {
  __u64 packets; /* passed */
  __u64 bytes;
  __u64 dropped_packets;
  __u64 dropped_bytes;
  __u64 would_drop_packets;
  __u64 would_drop_bytes;
};

/*
 * sg_net_quota: shared egress quota state per (guest slot, dataset position), ARRAY. The program
 * starts a new window itself when the current one has expired (boot-time clock), under the lock.
 */
struct sg_net_quota {
  struct bpf_spin_lock lock;
  __u32 reserved;
  __u64 window_start_ns; /* bpf_ktime_get_boot_ns() at the window's first packet */
  __u64 used_bytes;      /* bytes passed in this window */
  __u64 exceeded;        /* frames refused (or audited) for the budget, ever */
};

/* sg_net_ratelimit: per-guest token bucket for violation events (ARRAY indexed by slot). */
struct sg_net_ratelimit {
  struct bpf_spin_lock lock;
  __u32 tokens;
  __u64 last_ns;
  __u64 suppressed; /* events not emitted because the bucket was empty or the ring full */
};

/*
 * Restart hand-over (user space only: the program never reads these). A pinned HASH sg_guest_meta
 * (key: guest slot) holds what the kernel entries do not: the guest's name, its tap's name and
 * network namespace, and whether the filter is wanted / the clsact qdisc was created by us. A
 * pinned ARRAY[1] sg_state holds the ABI version, the active policy's digest and the SHA-256 of
 * every table of the active generation (tamper check), so a successor adopts all of it.
 */
#define SG_NET_NAME_MAX 128
#define SG_NET_NETNS_MAX 108
#define SG_GUEST_META_ATTACH (1u << 0) /* the tc filter is wanted on the tap */
#define SG_GUEST_META_QDISC (1u << 1)  /* the clsact qdisc was created by sovguard */
struct sg_net_guest_meta {
  __u32 ifindex;
  __u32 flags;
  char ifname[16];
  char name[SG_NET_NAME_MAX];
  char netns[SG_NET_NETNS_MAX]; /* path of the tap's network namespace, "" = the daemon's */
  __u32 reserved;
};
/* Tables of one generation, in this order: v4_dir, v4_l2, v6_lpm, v6_l1, v6_l2, classes, policy,
 * v6_l3. */
#define SG_NET_TABLES 8
struct sg_net_state {
  __u32 abi_version; /* SG_ABI_VERSION of the daemon that wrote it; 0 = fresh */
  __u32 policy_loaded;
  __u64 swaps;
  __u8 policy_digest[32];
  __u8 table_digest[SG_NET_TABLES][32];
};

enum sg_net_reason {
  SG_NET_REASON_RESIDENCY = 1, /* destination class not allowed for a held dataset */
  SG_NET_REASON_UNKNOWN = 2,   /* destination in no table (class 0) */
  SG_NET_REASON_NON_IP = 3,    /* ethertype not allowed for this guest */
  SG_NET_REASON_MALFORMED = 4, /* truncated or invalid header */
  SG_NET_REASON_QUOTA = 5,     /* egress budget of the window exhausted */
  SG_NET_REASON_NO_POLICY = 6, /* no complete policy generation loaded */
};

/*
 * sg_net_event: a violation record in the ring buffer (sg_events). dataset is the lowest violating
 * dataset index, violating the whole mask; dst holds an IPv4 address in its first 4 bytes (network
 * order) when family == 4.
 */
struct sg_net_event {
  __u64 ts_ns; /* bpf_ktime_get_boot_ns() */
  __u64 violating;
  __u32 guest_slot;
  __u32 ifindex;
  __u32 len;
  __u16 country;
  __u16 class_id;
  __u16 ethertype;
  __u8 dataset;
  __u8 verdict; /* SG_VERDICT_DROP or SG_VERDICT_AUDIT */
  __u8 reason;  /* enum sg_net_reason */
  __u8 family;  /* 4, 6, or 0 when not IP */
  __u8 l4proto;
  __u8 reserved;
  __u8 dst[16];
};

/* Layout checks. */
SG_ABI_SIZE(sg_net_config, 16);
SG_ABI_OFFSET(sg_net_config, active_gen, 0);
SG_ABI_OFFSET(sg_net_config, events_per_sec, 4);
SG_ABI_OFFSET(sg_net_config, event_burst, 8);
SG_ABI_OFFSET(sg_net_config, reserved, 12);
SG_ABI_SIZE(sg_v4_dir_bucket, 8192);
SG_ABI_OFFSET(sg_v4_dir_bucket, cls, 0);
SG_ABI_SIZE(sg_v4_block, 512);
SG_ABI_OFFSET(sg_v4_block, cls, 0);
SG_ABI_SIZE(sg_v6_block, 131072);
SG_ABI_OFFSET(sg_v6_block, cls, 0);
SG_ABI_SIZE(sg_v6_node, 512);
SG_ABI_OFFSET(sg_v6_node, cls, 0);
SG_ABI_SIZE(sg_lpm_v6_key, 20);
SG_ABI_OFFSET(sg_lpm_v6_key, prefixlen, 0);
SG_ABI_OFFSET(sg_lpm_v6_key, addr, 4);
SG_ABI_SIZE(sg_dataset_cfg, 16);
SG_ABI_OFFSET(sg_dataset_cfg, quota_bytes, 0);
SG_ABI_OFFSET(sg_dataset_cfg, quota_window_ns, 8);
SG_ABI_SIZE(sg_port_rule, 16);
SG_ABI_OFFSET(sg_port_rule, datasets, 0);
SG_ABI_OFFSET(sg_port_rule, port_lo, 8);
SG_ABI_OFFSET(sg_port_rule, port_hi, 10);
SG_ABI_OFFSET(sg_port_rule, proto, 12);
SG_ABI_OFFSET(sg_port_rule, reserved, 13);
SG_ABI_SIZE(sg_port_ruleset, 128);
SG_ABI_OFFSET(sg_port_ruleset, rule, 0);
SG_ABI_SIZE(sg_net_policy, 5144);
SG_ABI_OFFSET(sg_net_policy, enforce_mask, 0);
SG_ABI_OFFSET(sg_net_policy, quota_mask, 8);
SG_ABI_OFFSET(sg_net_policy, n_classes, 16);
SG_ABI_OFFSET(sg_net_policy, n_rulesets, 20);
SG_ABI_OFFSET(sg_net_policy, ds, 24);
SG_ABI_OFFSET(sg_net_policy, rulesets, 1048);
SG_ABI_SIZE(sg_net_guest, 32);
SG_ABI_OFFSET(sg_net_guest, datasets, 0);
SG_ABI_OFFSET(sg_net_guest, slot, 8);
SG_ABI_OFFSET(sg_net_guest, n_ds, 12);
SG_ABI_OFFSET(sg_net_guest, reserved, 13);
SG_ABI_OFFSET(sg_net_guest, ds, 16);
SG_ABI_OFFSET(sg_net_guest, ethertypes, 24);
SG_ABI_SIZE(sg_net_counters, 48);
SG_ABI_OFFSET(sg_net_counters, packets, 0);
SG_ABI_OFFSET(sg_net_counters, bytes, 8);
SG_ABI_OFFSET(sg_net_counters, dropped_packets, 16);
SG_ABI_OFFSET(sg_net_counters, dropped_bytes, 24);
SG_ABI_OFFSET(sg_net_counters, would_drop_packets, 32);
SG_ABI_OFFSET(sg_net_counters, would_drop_bytes, 40);
SG_ABI_SIZE(sg_net_quota, 32);
SG_ABI_OFFSET(sg_net_quota, lock, 0);
SG_ABI_OFFSET(sg_net_quota, reserved, 4);
SG_ABI_OFFSET(sg_net_quota, window_start_ns, 8);
SG_ABI_OFFSET(sg_net_quota, used_bytes, 16);
SG_ABI_OFFSET(sg_net_quota, exceeded, 24);
SG_ABI_SIZE(sg_net_ratelimit, 24);
SG_ABI_OFFSET(sg_net_ratelimit, lock, 0);
SG_ABI_OFFSET(sg_net_ratelimit, tokens, 4);
SG_ABI_OFFSET(sg_net_ratelimit, last_ns, 8);
SG_ABI_OFFSET(sg_net_ratelimit, suppressed, 16);
SG_ABI_SIZE(sg_net_guest_meta, 264);
SG_ABI_OFFSET(sg_net_guest_meta, ifindex, 0);
SG_ABI_OFFSET(sg_net_guest_meta, flags, 4);
SG_ABI_OFFSET(sg_net_guest_meta, ifname, 8);
SG_ABI_OFFSET(sg_net_guest_meta, name, 24);
SG_ABI_OFFSET(sg_net_guest_meta, netns, 152);
SG_ABI_OFFSET(sg_net_guest_meta, reserved, 260);
SG_ABI_SIZE(sg_net_state, 304);
SG_ABI_OFFSET(sg_net_state, abi_version, 0);
SG_ABI_OFFSET(sg_net_state, policy_loaded, 4);
SG_ABI_OFFSET(sg_net_state, swaps, 8);
SG_ABI_OFFSET(sg_net_state, policy_digest, 16);
SG_ABI_OFFSET(sg_net_state, table_digest, 48);
SG_ABI_SIZE(sg_net_event, 56);
SG_ABI_OFFSET(sg_net_event, ts_ns, 0);
SG_ABI_OFFSET(sg_net_event, violating, 8);
SG_ABI_OFFSET(sg_net_event, guest_slot, 16);
SG_ABI_OFFSET(sg_net_event, ifindex, 20);
SG_ABI_OFFSET(sg_net_event, len, 24);
SG_ABI_OFFSET(sg_net_event, country, 28);
SG_ABI_OFFSET(sg_net_event, class_id, 30);
SG_ABI_OFFSET(sg_net_event, ethertype, 32);
SG_ABI_OFFSET(sg_net_event, dataset, 34);
SG_ABI_OFFSET(sg_net_event, verdict, 35);
SG_ABI_OFFSET(sg_net_event, reason, 36);
SG_ABI_OFFSET(sg_net_event, family, 37);
SG_ABI_OFFSET(sg_net_event, l4proto, 38);
SG_ABI_OFFSET(sg_net_event, reserved, 39);
SG_ABI_OFFSET(sg_net_event, dst, 40);

#endif /* SOVGUARD_BPF_NET_SG_NET_ABI_H_ */
