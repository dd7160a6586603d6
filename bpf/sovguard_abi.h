/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The kernel ABI of sovguard: every map key, map value, event record and constant shared by the BPF
 * programs (built against vmlinux.h) and the C++ user space (built against <linux/types.h>).
 * Change a layout here and both sides change together; bump SG_ABI_VERSION when you do, because
 * pinned maps from an older daemon must not be adopted with a different layout.
 */
#ifndef SOVGUARD_BPF_SOVGUARD_ABI_H_
#define SOVGUARD_BPF_SOVGUARD_ABI_H_

#ifndef __VMLINUX_H__
#include <linux/bpf.h> /* struct bpf_spin_lock */
#include <linux/types.h>
#endif

#define SG_ABI_VERSION 3

/* Datasets are bits in a 64-bit mask: a node enforces at most 64 datasets at once. */
#define SG_MAX_DATASETS 64
/* Jurisdiction classes: one per distinct (country, operator zone, exception) combination. */
#define SG_MAX_CLASSES 4096
#define SG_MAX_GUESTS 4096

/* Country codes are two upper-case ASCII letters packed big-end first: 'D','E' -> 0x4445. */
#define SG_COUNTRY(a, b) ((__u16)(((a) << 8) | (b)))
#define SG_COUNTRY_UNKNOWN 0

enum sg_mode {
  SG_MODE_AUDIT = 0,   /* pass, count "would have dropped", emit an event */
  SG_MODE_ENFORCE = 1, /* drop / deny, count, emit an event */
};

enum sg_verdict {
  SG_VERDICT_PASS = 0,
  SG_VERDICT_DROP = 1,
  SG_VERDICT_AUDIT = 2, /* passed only because the mode is audit */
};

/* One jurisdiction class, the value the address tables resolve to (via its index). */
struct sg_class {
  __u64 allowed_datasets; /* bit i: dataset index i may send to / store in this class */
  __u16 country;          /* SG_COUNTRY(), SG_COUNTRY_UNKNOWN when no registry entry */
  __u16 zone;             /* operator zone id, 0 = none */
  __u32 flags;            /* SG_CLASS_* */
};
/* Policy exception (resolver, metadata): reachable by the datasets in allowed_datasets whatever
 * the country. The flag only names the class in events and status; the mask decides. */
#define SG_CLASS_EXCEPTION (1u << 0)
/* Network path: an exception limited to protocols and ports. Beyond allowed_datasets (granted for
 * any protocol), the frame's datasets come from the rule set (flags >> SG_CLASS_RULESET_SHIFT) of
 * the generation's sg_net_policy whose protocol and destination port it matches; a fragment or a
 * frame whose L4 header is not parsed matches no rule. Paths that do not know rule sets (storage)
 * grant only allowed_datasets. */
#define SG_CLASS_PORTS (1u << 1)
#define SG_CLASS_RULESET_SHIFT 16


/* ---- Storage path (bpf/storage): QEMU processes opening volumes and connecting to storage ----
 * A guest is recognised by the cgroup v2 id of its libvirt directory machine/qemu-N-NAME.libvirt-qemu
 * (bpf_get_current_ancestor_cgroup_id(guest_level)), so every QEMU thread below it (emulator,
 * vcpuN) is covered. */

/* A guest on the storage path (sg_storage_guests: guest cgroup id -> this). */
struct sg_storage_guest {
  __u64 datasets; /* datasets this guest may use */
  __u32 guest_id; /* user space's id: names the guest in events and counters */
  __u32 flags;
};

/* libvirt's per-guest cgroup directory name, announced before libvirt creates it
 * (sg_storage_pending: name -> sg_storage_guest; cgroup_mkdir moves it to sg_storage_guests). */
#define SG_STORAGE_NAME_LEN 64
struct sg_storage_pending_key {
  char name[SG_STORAGE_NAME_LEN]; /* NUL-padded */
};

/* A protected volume: an image file (by device + inode) or a block device (by dev_t). */
struct sg_volume_key {
  __u64 dev; /* super block s_dev (kernel encoding major<<20|minor) for files; 0 for block devices;
                SG_VOLUME_CHAR_DEV for character devices (never a 32-bit s_dev) */
  __u64 ino; /* inode number for files; major<<20|minor for block and character devices */
};
/* sg_volume_key.dev of a character device that reaches a protected volume's bytes (a SCSI
 * disk's sg and bsg nodes). */
#define SG_VOLUME_CHAR_DEV (1ULL << 32)
struct sg_volume {
  __u32 dataset; /* dataset index */
  __u32 flags;   /* SG_VOLUME_* */
};
#define SG_VOLUME_READ_ONLY (1u << 0)

/* Policy reloads are atomic: the configuration, classes and endpoint tables exist in two
 * generations; user space fills the inactive one, then flips sg_storage_active (one 32-bit word)
 * and waits for an RCU grace period before it may rewrite the old one. A program reads the active
 * generation once and uses only that generation's entries. */
#define SG_STORAGE_GENERATIONS 2
/* Endpoint prefixes for network storage (NBD, iSCSI, RBD, HTTP): LPM trie keys (sg_endpoints4/6,
 * value = __u16 class id) carry their generation in front of the address: prefixlen = 32 + bits
 * of address. */
struct sg_storage_lpm4_key {
  __u32 prefixlen;
  __u32 gen;
  __u32 addr; /* network byte order */
};
struct sg_storage_lpm6_key {
  __u32 prefixlen;
  __u32 gen;
  __u8 addr[16];
};

/* Per-(guest, dataset) accounting and quota windows (sg_io_state, shared HASH, atomic adds: the
 * quota check needs one total, not per-CPU parts). */
struct sg_io_key {
  __u32 guest_id;
  __u32 dataset;
};
struct sg_io_state {
  __u64 read_bytes;  /* ever */
  __u64 write_bytes; /* ever */
  __u64 denied;      /* opens, device accesses and I/Os refused or killed (or audited) */
  __u64 read_window_start_ns; /* bpf_ktime_get_boot_ns() at the window's start */
  __u64 read_window_bytes;
  __u64 write_window_start_ns;
  __u64 write_window_bytes;
};

/* Per-dataset storage settings. A quota of 0 bytes means none. */
struct sg_storage_dataset_cfg {
  __u64 read_quota_bytes;
  __u64 read_window_ns;
  __u64 write_quota_bytes;
  __u64 write_window_ns;
};

/* Storage-path configuration (sg_storage_cfg: ARRAY[SG_STORAGE_GENERATIONS], the active one by
 * sg_storage_active). */
struct sg_storage_config {
  __u64 enforce_mask;      /* bit i: dataset i is enforced; audited otherwise */
  __u64 machine_cgroup_id; /* cgroup v2 id of libvirt's machine cgroup (parent of guests) */
  __u32 guest_level;       /* cgroup level of the guest directories (machine level + 1) */
  __u32 n_classes;         /* class ids >= n_classes are treated as class 0 */
  __u32 flags;             /* SG_STORAGE_CFG_* */
  __u32 events_per_sec;    /* violation events per guest and second; 0: none (all suppressed) */
  __u32 event_burst;       /* events a guest may emit at once after a quiet period */
  __u32 reserved;
  struct sg_storage_dataset_cfg ds[SG_MAX_DATASETS];
};
/* BPF LSM guards opens and I/O: the tracepoints only count, they never kill. */
#define SG_STORAGE_CFG_LSM (1u << 0)

enum sg_storage_event_kind {
  SG_EV_OPEN_DENIED = 1,    /* guest may not use the volume's dataset */
  SG_EV_OPEN_KILLED = 2,    /* (unused: the verdict says killed) */
  SG_EV_DEVICE_DENIED = 3,  /* cgroup device access refused */
  SG_EV_CONNECT_DENIED = 4, /* network-storage connect refused */
  SG_EV_READ_ONLY = 5,      /* write access to a read-only volume */
  SG_EV_READ_QUOTA = 6,     /* read budget of the window exhausted */
  SG_EV_WRITE_QUOTA = 7,    /* write budget of the window exhausted */
  SG_EV_COMPAT_SYSCALL = 8, /* 32-bit (int 0x80, sysenter) or x32 syscall: no tracepoint sees it */
  SG_EV_UNCOUNTED_IO = 9,   /* access to a volume by a path that cannot be counted (mmap, ...) */
};
/* Storage verdicts: SG_VERDICT_DROP = prevented (EPERM), SG_VERDICT_AUDIT = audited, and: */
#define SG_STORAGE_VERDICT_KILLED 3 /* detected; the process was sent SIGKILL */

/* Layout version of the storage maps as pinned under the daemon's pin directory (sg_storage_state):
 * a successor refuses to adopt pinned maps of another version. Bump on any storage layout change. */
#define SG_STORAGE_ABI_VERSION 2

/* Per-guest limiter for violation events (sg_storage_ratelimit: HASH guest_id -> this; key 0 is
 * shared by every unregistered cgroup). GCRA: an event is emitted when the theoretical arrival time
 * stays within event_burst intervals of now. The verdict never depends on it. */
struct sg_storage_ratelimit {
  __u64 tat_ns;     /* theoretical arrival time (bpf_ktime_get_boot_ns scale) */
  __u64 suppressed; /* events not emitted: over the rate, or ring buffer full */
};

/* Restart hand-over (user space only: the programs never read these). */
#define SG_STORAGE_META_NAME 128
struct sg_storage_guest_meta { /* sg_storage_guest_meta: HASH guest_id -> this */
  __u64 datasets;
  __u64 cgroup_id;                         /* registered by id; 0 when announced by name */
  char name[SG_STORAGE_META_NAME];         /* libvirt domain name, NUL-terminated */
  char cgroup_name[SG_STORAGE_NAME_LEN];   /* announced cgroup directory name, "" when by id */
};
#define SG_STORAGE_PATH_MAX 240
struct sg_storage_volume_meta { /* sg_storage_volume_meta: HASH sg_volume_key -> this */
  __u32 dataset;
  __u32 flags;
  char path[SG_STORAGE_PATH_MAX]; /* canonical path (truncated when longer) */
};
/* Tables whose digests the state keeps (of the active generation): cfg, classes, endpoints4,
 * endpoints6, volumes, in this order. */
#define SG_STORAGE_TABLES 5
#define SG_STORAGE_DATASET_ID_LEN 32
struct sg_storage_state { /* sg_storage_state: ARRAY[1] */
  __u32 abi_version;   /* SG_STORAGE_ABI_VERSION of the writer; 0 = fresh */
  __u32 next_guest_id; /* guest ids are never reused */
  __u32 policy_applied;
  __u32 reserved;
  __u8 table_digest[SG_STORAGE_TABLES][32]; /* SHA-256 of each table as last written */
  char dataset_ids[SG_MAX_DATASETS][SG_STORAGE_DATASET_ID_LEN]; /* for names in events/counters */
};

struct sg_storage_event {
  __u64 timestamp_ns;
  __u64 cgroup_id; /* the guest cgroup (ancestor at guest_level) */
  __u32 guest_id;  /* 0: no registered guest */
  __u32 dataset;
  __u32 kind; /* enum sg_storage_event_kind */
  __u32 pid;
  __u64 dev;
  __u64 ino;
  __u8 addr[16]; /* connect: destination (v4 in the first 4 bytes) */
  __u16 port;
  __u16 family;
  __u16 country;
  __u16 verdict; /* SG_VERDICT_DROP, SG_VERDICT_AUDIT, SG_STORAGE_VERDICT_KILLED */
};


/* ===================================================================================================
 * Network residency datapath (bpf/net/sg_net.bpf.c, loaded by enforcer/datapath/).
 * =================================================================================================== */

/* tc verdicts (linux/pkt_cls.h is not available to BPF code built against vmlinux.h). */
#define SG_TC_ACT_OK 0
#define SG_TC_ACT_SHOT 2

/* Two generation slots: user space fills the inactive one completely, then flips active_gen. */
#define SG_NET_GENERATIONS 2

/* IPv4 first level: 4096 buckets (addr >> 20), each holding the class id of the 4096 /24s under it. */
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
 * sg_net_config: the global configuration, a variable in the program's .bss (an mmapable array: user
 * space writes active_gen with a single aligned atomic store, so a reader never sees a torn value).
 * active_gen selects the slot of every *_outer map; a slot is only made active once all its inner
 * maps are filled (an empty slot means no policy: everything but control frames is dropped).
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
 * IPv6 first two levels. Level 1: ARRAY[SG_V6_L1_ENTRIES] of __u32 keyed by the top 16 bits: a class
 * id for a /16 that one class covers whole, or SG_V6_L1_BLOCK | block index. Level 2: ARRAY of
 * sg_v6_block (as many as the policy needs): the class id of each /32 under that /16, or
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
 * sg_lpm_v6_key: key of the IPv6 LPM trie (prefixlen in bits, address in network order), which holds
 * the prefixes longer than /32 plus the /32s that hold them. Values are __u32 class ids.
 */
struct sg_lpm_v6_key {
  __u32 prefixlen;
  __u8 addr[16];
};

/*
 * sg_dataset_cfg / sg_net_policy: the per-generation policy header (inner ARRAY[1]). enforce_mask has
 * bit i set when dataset i is in enforce mode; quota_mask when it has an egress quota, whose budget
 * and window are in ds[i].
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
 * sg_net_guest: one guest's configuration. Kept in the program's .bss as sg_guest_cfg[], two entries
 * per guest slot (2*slot and 2*slot+1): user space rewrites the one not in use, then switches the
 * guest's index entry with one atomic store, so a frame never sees half a configuration.
 * The index: sg_guest_index[ifindex] (.bss, for ifindex < SG_GUEST_INDEX_DIRECT) or the sg_guests
 * HASH (ifindex -> __u32) above that; the value is configuration entry + 1, 0 = no guest.
 * slot indexes the per-guest arrays (counters, quotas, rate limit); ds[] lists the indexes of the
 * datasets held, in a stable order: position p of ds is counter/quota entry
 * slot*SG_MAX_GUEST_DATASETS+p (a position keeps its dataset, and so its counters, while the guest
 * holds it); free positions are SG_GUEST_DS_NONE, none in use at or past n_ds. ethertypes[] are non-IP ethertypes
 * (host order) this guest may send.
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
 * network namespace, and whether the filter is wanted / the clsact qdisc was created by us. A pinned
 * ARRAY[1] sg_state holds the ABI version, the active policy's digest and the SHA-256 of every table
 * of the active generation (tamper check), so a successor adopts all of it.
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

#endif /* SOVGUARD_BPF_SOVGUARD_ABI_H_ */
