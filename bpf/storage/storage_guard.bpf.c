// SPDX-License-Identifier: GPL-2.0
/*
 * Storage path of a guest's QEMU process. Several programs over the same maps, one per mechanism;
 * the daemon loads the strongest one the kernel accepts for each path (see enforcer/probe):
 *   open/attach:  lsm/file_open (prevents)  |  tp sys_exit_openat + SIGKILL (detects, kills)
 *   block devices: cgroup/dev (prevents)
 *   network storage: cgroup/connect4, cgroup/connect6 (prevents: EPERM)
 *   I/O accounting: tp sys_exit_{pread64,preadv,pwrite64,pwritev} (counts)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#include "sovguard_abi.h"

#define EPERM 1
#define SIGKILL 9
#define FMODE_WRITE 0x2
/* From uapi bpf.h (enum values are not in BTF as macros). */
#define SG_DEVCG_ACC_WRITE 4
#define SG_DEVCG_DEV_BLOCK 1

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 sg_mode = SG_MODE_AUDIT;

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, SG_MAX_GUESTS * 8);
  __type(key, __u64); /* cgroup v2 id */
  __type(value, struct sg_storage_guest);
} sg_storage_guests SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, struct sg_volume_key);
  __type(value, struct sg_volume);
} sg_volumes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct sg_lpm4_key);
  __type(value, __u16);
} sg_endpoints4 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_LPM_TRIE);
  __uint(max_entries, 65536);
  __uint(map_flags, BPF_F_NO_PREALLOC);
  __type(key, struct sg_lpm6_key);
  __type(value, __u16);
} sg_endpoints6 SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_ARRAY);
  __uint(max_entries, SG_MAX_CLASSES);
  __type(key, __u32);
  __type(value, struct sg_class);
} sg_storage_classes SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_PERCPU_HASH);
  __uint(max_entries, SG_MAX_GUESTS * 4);
  __type(key, struct sg_io_key);
  __type(value, struct sg_io_counters);
} sg_io_counters SEC(".maps");

struct {
  __uint(type, BPF_MAP_TYPE_RINGBUF);
  __uint(max_entries, 256 * 1024);
} sg_storage_events SEC(".maps");

static __always_inline struct sg_storage_guest* current_guest(void) {
  __u64 cg = bpf_get_current_cgroup_id();
  return bpf_map_lookup_elem(&sg_storage_guests, &cg);
}

static __always_inline void emit(__u32 kind, const struct sg_storage_guest* g, __u32 dataset,
                                 __u64 dev, __u64 ino, __u16 verdict) {
  struct sg_storage_event* e = bpf_ringbuf_reserve(&sg_storage_events, sizeof(*e), 0);
  if (!e) return;
  __builtin_memset(e, 0, sizeof(*e));
  e->timestamp_ns = bpf_ktime_get_boot_ns();
  e->cgroup_id = bpf_get_current_cgroup_id();
  e->guest_id = g ? g->guest_id : 0;
  e->dataset = dataset;
  e->kind = kind;
  e->pid = bpf_get_current_pid_tgid() >> 32;
  e->dev = dev;
  e->ino = ino;
  e->verdict = verdict;
  bpf_ringbuf_submit(e, 0);
}

/* 0: allowed; 1: guest may not use the dataset; 2: write to a read-only volume. */
static __always_inline int check_volume(const struct sg_storage_guest* g, const struct sg_volume* v,
                                        bool writing) {
  if (v->dataset >= SG_MAX_DATASETS || !(g->datasets & (1ULL << v->dataset))) return 1;
  if (writing && (v->flags & SG_VOLUME_READ_ONLY)) return 2;
  return 0;
}

static __always_inline int file_verdict(struct file* file, bool* deny) {
  *deny = false;
  struct sg_storage_guest* g = current_guest();
  if (!g) return 0;
  struct sg_volume_key key = {};
  key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  key.ino = BPF_CORE_READ(file, f_inode, i_ino);
  struct sg_volume* v = bpf_map_lookup_elem(&sg_volumes, &key);
  if (!v) return 0;
  bool writing = (BPF_CORE_READ(file, f_mode) & FMODE_WRITE) != 0;
  int why = check_volume(g, v, writing);
  if (!why) return 0;
  *deny = sg_mode == SG_MODE_ENFORCE;
  emit(why == 2 ? SG_EV_READ_ONLY : SG_EV_OPEN_DENIED, g, v->dataset, key.dev, key.ino,
       *deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT);
  return why;
}

SEC("lsm/file_open")
int BPF_PROG(sg_lsm_file_open, struct file* file) {
  bool deny = false;
  file_verdict(file, &deny);
  return deny ? -EPERM : 0;
}

/* Without BPF LSM: look at the file the open just produced and kill QEMU before it returns. */
SEC("tp/syscalls/sys_exit_openat")
int sg_tp_openat_exit(struct trace_event_raw_sys_exit* ctx) {
  long fd = ctx->ret;
  if (fd < 0) return 0;
  struct sg_storage_guest* g = current_guest();
  if (!g) return 0; /* not a guest: the cheap exit every other process on the host takes */
  struct task_struct* task = (struct task_struct*)bpf_get_current_task();
  struct file** fds = BPF_CORE_READ(task, files, fdt, fd);
  struct file* file = NULL;
  if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xffff]) || !file) return 0;
  bool deny = false;
  int why = file_verdict(file, &deny);
  if (why && deny) bpf_send_signal(SIGKILL);
  return 0;
}

SEC("cgroup/dev")
int sg_cgroup_dev(struct bpf_cgroup_dev_ctx* ctx) {
  if ((ctx->access_type & 0xffff) != SG_DEVCG_DEV_BLOCK) return 1;
  struct sg_storage_guest* g = current_guest();
  if (!g) return 1;
  struct sg_volume_key key = {.dev = 0, .ino = (ctx->major << 20) | ctx->minor};
  struct sg_volume* v = bpf_map_lookup_elem(&sg_volumes, &key);
  if (!v) return 1;
  bool writing = ((ctx->access_type >> 16) & SG_DEVCG_ACC_WRITE) != 0;
  int why = check_volume(g, v, writing);
  if (!why) return 1;
  bool deny = sg_mode == SG_MODE_ENFORCE;
  emit(why == 2 ? SG_EV_READ_ONLY : SG_EV_DEVICE_DENIED, g, v->dataset, 0, key.ino,
       deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT);
  return deny ? 0 : 1;
}

static __always_inline int connect_verdict(struct sg_storage_guest* g, __u16 class_id,
                                           __u16* country) {
  __u32 k = class_id;
  struct sg_class* c = bpf_map_lookup_elem(&sg_storage_classes, &k);
  if (!c) return 0;
  *country = c->country;
  return (c->allowed_datasets & g->datasets) == g->datasets;
}

static __always_inline int connect_common(struct bpf_sock_addr* ctx, bool v6) {
  struct sg_storage_guest* g = current_guest();
  if (!g) return 1;
  __u16 class_id = 0, country = 0;
  __u16* found;
  if (v6) {
    struct sg_lpm6_key k6 = {.prefixlen = 128};
    k6.addr[0] = 0; /* user_ip6 is read word by word: the verifier allows only 4-byte loads */
    __u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2], w3 = ctx->user_ip6[3];
    __builtin_memcpy(&k6.addr[0], &w0, 4);
    __builtin_memcpy(&k6.addr[4], &w1, 4);
    __builtin_memcpy(&k6.addr[8], &w2, 4);
    __builtin_memcpy(&k6.addr[12], &w3, 4);
    found = bpf_map_lookup_elem(&sg_endpoints6, &k6);
  } else {
    struct sg_lpm4_key k4 = {.prefixlen = 32, .addr = ctx->user_ip4};
    found = bpf_map_lookup_elem(&sg_endpoints4, &k4);
  }
  if (found) class_id = *found;
  if (connect_verdict(g, class_id, &country)) return 1;
  bool deny = sg_mode == SG_MODE_ENFORCE;
  struct sg_storage_event* e = bpf_ringbuf_reserve(&sg_storage_events, sizeof(*e), 0);
  if (e) {
    __builtin_memset(e, 0, sizeof(*e));
    e->timestamp_ns = bpf_ktime_get_boot_ns();
    e->cgroup_id = bpf_get_current_cgroup_id();
    e->guest_id = g->guest_id;
    e->kind = SG_EV_CONNECT_DENIED;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->family = v6 ? 10 : 2;
    e->port = bpf_ntohs((__u16)ctx->user_port);
    e->country = country;
    e->verdict = deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT;
    if (!v6) __builtin_memcpy(e->addr, &ctx->user_ip4, 4);
    bpf_ringbuf_submit(e, 0);
  }
  return deny ? 0 : 1;
}

SEC("cgroup/connect4")
int sg_connect4(struct bpf_sock_addr* ctx) { return connect_common(ctx, false); }

SEC("cgroup/connect6")
int sg_connect6(struct bpf_sock_addr* ctx) { return connect_common(ctx, true); }

/* Byte accounting: counted per (guest, dataset) of the file the I/O went to. */
static __always_inline void account(long fd, long bytes, bool write) {
  if (bytes <= 0 || fd < 0) return;
  struct sg_storage_guest* g = current_guest();
  if (!g) return;
  struct task_struct* task = (struct task_struct*)bpf_get_current_task();
  struct file** fds = BPF_CORE_READ(task, files, fdt, fd);
  struct file* file = NULL;
  if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xffff]) || !file) return;
  struct sg_volume_key key = {};
  key.dev = BPF_CORE_READ(file, f_inode, i_sb, s_dev);
  key.ino = BPF_CORE_READ(file, f_inode, i_ino);
  struct sg_volume* v = bpf_map_lookup_elem(&sg_volumes, &key);
  if (!v) return;
  struct sg_io_key ik = {.guest_id = g->guest_id, .dataset = v->dataset};
  struct sg_io_counters* c = bpf_map_lookup_elem(&sg_io_counters, &ik);
  if (!c) {
    struct sg_io_counters zero = {};
    bpf_map_update_elem(&sg_io_counters, &ik, &zero, BPF_NOEXIST);
    c = bpf_map_lookup_elem(&sg_io_counters, &ik);
    if (!c) return;
  }
  if (write)
    c->write_bytes += bytes;
  else
    c->read_bytes += bytes;
}

/* The fd is an argument of the entry; remember it per thread until the exit sees the byte count. */
struct {
  __uint(type, BPF_MAP_TYPE_HASH);
  __uint(max_entries, 16384);
  __type(key, __u64);
  __type(value, long);
} sg_io_inflight SEC(".maps");

static __always_inline int io_enter(struct trace_event_raw_sys_enter* ctx) {
  if (!current_guest()) return 0;
  __u64 tid = bpf_get_current_pid_tgid();
  long fd = (long)ctx->args[0];
  bpf_map_update_elem(&sg_io_inflight, &tid, &fd, BPF_ANY);
  return 0;
}

static __always_inline int io_exit(struct trace_event_raw_sys_exit* ctx, bool write) {
  __u64 tid = bpf_get_current_pid_tgid();
  long* fd = bpf_map_lookup_elem(&sg_io_inflight, &tid);
  if (!fd) return 0;
  long f = *fd;
  bpf_map_delete_elem(&sg_io_inflight, &tid);
  account(f, ctx->ret, write);
  return 0;
}

SEC("tp/syscalls/sys_enter_pread64")
int sg_enter_pread64(struct trace_event_raw_sys_enter* ctx) { return io_enter(ctx); }
SEC("tp/syscalls/sys_exit_pread64")
int sg_exit_pread64(struct trace_event_raw_sys_exit* ctx) { return io_exit(ctx, false); }
SEC("tp/syscalls/sys_enter_preadv")
int sg_enter_preadv(struct trace_event_raw_sys_enter* ctx) { return io_enter(ctx); }
SEC("tp/syscalls/sys_exit_preadv")
int sg_exit_preadv(struct trace_event_raw_sys_exit* ctx) { return io_exit(ctx, false); }
SEC("tp/syscalls/sys_enter_pwrite64")
int sg_enter_pwrite64(struct trace_event_raw_sys_enter* ctx) { return io_enter(ctx); }
SEC("tp/syscalls/sys_exit_pwrite64")
int sg_exit_pwrite64(struct trace_event_raw_sys_exit* ctx) { return io_exit(ctx, true); }
SEC("tp/syscalls/sys_enter_pwritev")
int sg_enter_pwritev(struct trace_event_raw_sys_enter* ctx) { return io_enter(ctx); }
SEC("tp/syscalls/sys_exit_pwritev")
int sg_exit_pwritev(struct trace_event_raw_sys_exit* ctx) { return io_exit(ctx, true); }
