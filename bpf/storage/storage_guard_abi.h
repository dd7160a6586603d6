/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The storage path's part of the kernel ABI (bpf/sovguard_abi.h): QEMU processes opening volumes
 * and connecting to storage. A guest is recognised by the cgroup v2 id of its libvirt directory
 * machine/qemu-N-NAME.libvirt-qemu (bpf_get_current_ancestor_cgroup_id(guest_level)), so every QEMU
 * thread below it (emulator, vcpuN) is covered.
 */
#ifndef SOVGUARD_BPF_STORAGE_STORAGE_GUARD_ABI_H_
#define SOVGUARD_BPF_STORAGE_STORAGE_GUARD_ABI_H_

#ifndef SOVGUARD_BPF_SOVGUARD_ABI_H_
#error "include bpf/sovguard_abi.h (the common part), not this file"
#endif

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
  __u64 read_bytes;           /* ever */
  __u64 write_bytes;          /* ever */
  __u64 denied;               /* opens, device accesses and I/Os refused or killed (or audited) */
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
 * a successor refuses to adopt pinned maps of another version. Bump on any storage layout change.
 */
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
  __u64 cgroup_id;                       /* registered by id; 0 when announced by name */
  char name[SG_STORAGE_META_NAME];       /* libvirt domain name, NUL-terminated */
  char cgroup_name[SG_STORAGE_NAME_LEN]; /* announced cgroup directory name, "" when by id */
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
  __u32 abi_version;      /* SG_STORAGE_ABI_VERSION of the writer; 0 = fresh */
  __u32 next_guest_id;    /* guest ids are never reused */
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

/* Layout checks. */
SG_ABI_SIZE(sg_storage_guest, 16);
SG_ABI_OFFSET(sg_storage_guest, datasets, 0);
SG_ABI_OFFSET(sg_storage_guest, guest_id, 8);
SG_ABI_OFFSET(sg_storage_guest, flags, 12);
SG_ABI_SIZE(sg_storage_pending_key, 64);
SG_ABI_OFFSET(sg_storage_pending_key, name, 0);
SG_ABI_SIZE(sg_volume_key, 16);
SG_ABI_OFFSET(sg_volume_key, dev, 0);
SG_ABI_OFFSET(sg_volume_key, ino, 8);
SG_ABI_SIZE(sg_volume, 8);
SG_ABI_OFFSET(sg_volume, dataset, 0);
SG_ABI_OFFSET(sg_volume, flags, 4);
SG_ABI_SIZE(sg_storage_lpm4_key, 12);
SG_ABI_OFFSET(sg_storage_lpm4_key, prefixlen, 0);
SG_ABI_OFFSET(sg_storage_lpm4_key, gen, 4);
SG_ABI_OFFSET(sg_storage_lpm4_key, addr, 8);
SG_ABI_SIZE(sg_storage_lpm6_key, 24);
SG_ABI_OFFSET(sg_storage_lpm6_key, prefixlen, 0);
SG_ABI_OFFSET(sg_storage_lpm6_key, gen, 4);
SG_ABI_OFFSET(sg_storage_lpm6_key, addr, 8);
SG_ABI_SIZE(sg_io_key, 8);
SG_ABI_OFFSET(sg_io_key, guest_id, 0);
SG_ABI_OFFSET(sg_io_key, dataset, 4);
SG_ABI_SIZE(sg_io_state, 56);
SG_ABI_OFFSET(sg_io_state, read_bytes, 0);
SG_ABI_OFFSET(sg_io_state, write_bytes, 8);
SG_ABI_OFFSET(sg_io_state, denied, 16);
SG_ABI_OFFSET(sg_io_state, read_window_start_ns, 24);
SG_ABI_OFFSET(sg_io_state, read_window_bytes, 32);
SG_ABI_OFFSET(sg_io_state, write_window_start_ns, 40);
SG_ABI_OFFSET(sg_io_state, write_window_bytes, 48);
SG_ABI_SIZE(sg_storage_dataset_cfg, 32);
SG_ABI_OFFSET(sg_storage_dataset_cfg, read_quota_bytes, 0);
SG_ABI_OFFSET(sg_storage_dataset_cfg, read_window_ns, 8);
SG_ABI_OFFSET(sg_storage_dataset_cfg, write_quota_bytes, 16);
SG_ABI_OFFSET(sg_storage_dataset_cfg, write_window_ns, 24);
SG_ABI_SIZE(sg_storage_config, 2088);
SG_ABI_OFFSET(sg_storage_config, enforce_mask, 0);
SG_ABI_OFFSET(sg_storage_config, machine_cgroup_id, 8);
SG_ABI_OFFSET(sg_storage_config, guest_level, 16);
SG_ABI_OFFSET(sg_storage_config, n_classes, 20);
SG_ABI_OFFSET(sg_storage_config, flags, 24);
SG_ABI_OFFSET(sg_storage_config, events_per_sec, 28);
SG_ABI_OFFSET(sg_storage_config, event_burst, 32);
SG_ABI_OFFSET(sg_storage_config, reserved, 36);
SG_ABI_OFFSET(sg_storage_config, ds, 40);
SG_ABI_SIZE(sg_storage_ratelimit, 16);
SG_ABI_OFFSET(sg_storage_ratelimit, tat_ns, 0);
SG_ABI_OFFSET(sg_storage_ratelimit, suppressed, 8);
SG_ABI_SIZE(sg_storage_guest_meta, 208);
SG_ABI_OFFSET(sg_storage_guest_meta, datasets, 0);
SG_ABI_OFFSET(sg_storage_guest_meta, cgroup_id, 8);
SG_ABI_OFFSET(sg_storage_guest_meta, name, 16);
SG_ABI_OFFSET(sg_storage_guest_meta, cgroup_name, 144);
SG_ABI_SIZE(sg_storage_volume_meta, 248);
SG_ABI_OFFSET(sg_storage_volume_meta, dataset, 0);
SG_ABI_OFFSET(sg_storage_volume_meta, flags, 4);
SG_ABI_OFFSET(sg_storage_volume_meta, path, 8);
SG_ABI_SIZE(sg_storage_state, 2224);
SG_ABI_OFFSET(sg_storage_state, abi_version, 0);
SG_ABI_OFFSET(sg_storage_state, next_guest_id, 4);
SG_ABI_OFFSET(sg_storage_state, policy_applied, 8);
SG_ABI_OFFSET(sg_storage_state, reserved, 12);
SG_ABI_OFFSET(sg_storage_state, table_digest, 16);
SG_ABI_OFFSET(sg_storage_state, dataset_ids, 176);
SG_ABI_SIZE(sg_storage_event, 72);
SG_ABI_OFFSET(sg_storage_event, timestamp_ns, 0);
SG_ABI_OFFSET(sg_storage_event, cgroup_id, 8);
SG_ABI_OFFSET(sg_storage_event, guest_id, 16);
SG_ABI_OFFSET(sg_storage_event, dataset, 20);
SG_ABI_OFFSET(sg_storage_event, kind, 24);
SG_ABI_OFFSET(sg_storage_event, pid, 28);
SG_ABI_OFFSET(sg_storage_event, dev, 32);
SG_ABI_OFFSET(sg_storage_event, ino, 40);
SG_ABI_OFFSET(sg_storage_event, addr, 48);
SG_ABI_OFFSET(sg_storage_event, port, 64);
SG_ABI_OFFSET(sg_storage_event, family, 66);
SG_ABI_OFFSET(sg_storage_event, country, 68);
SG_ABI_OFFSET(sg_storage_event, verdict, 70);

#endif /* SOVGUARD_BPF_STORAGE_STORAGE_GUARD_ABI_H_ */
