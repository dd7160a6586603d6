/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What every storage program asks first: which guest is running (sg_who), whether its dataset is
 * enforced, its counters and event budget, and which protected volume a file or fd is (the volume
 * identity rule). Kernel constants the programs need come first (vmlinux.h has no macros).
 */
#ifndef SOVGUARD_BPF_STORAGE_STORAGE_GUARD_HELPERS_H_
#define SOVGUARD_BPF_STORAGE_STORAGE_GUARD_HELPERS_H_

#include "storage/storage_guard_maps.h"

#define EPERM 1
#define EDQUOT 122
#define SIGKILL 9
#define FMODE_WRITE 0x2
#define MAY_WRITE 0x2
#define S_IFMT 00170000
#define S_IFBLK 0060000
#define S_IFCHR 0020000
#define S_IFREG 0100000
/* From uapi bpf.h (enum values are not in BTF as macros). */
#define SG_DEVCG_ACC_WRITE 4
#define SG_DEVCG_DEV_BLOCK 1
#define SG_DEVCG_DEV_CHAR 2
#define SG_MAX_IOV 16

/* The caller's guest. Returns false for processes outside the machine cgroup (the cheap exit
 * every other process on the host takes); *g is NULL for an unregistered cgroup under it. */
struct sg_who {
  struct sg_storage_config* cfg;
  struct sg_storage_guest* g;
  __u64 cgroup;
  __u32 gen;
};

/* The configuration of the active generation (read once per program run). */
static __always_inline struct sg_storage_config* active_cfg(__u32* gen) {
  __u32 zero = 0;
  __u32* active = bpf_map_lookup_elem(&sg_storage_active, &zero);
  *gen = active ? (*(volatile __u32*)active & (SG_STORAGE_GENERATIONS - 1)) : 0;
  return bpf_map_lookup_elem(&sg_storage_cfg, gen);
}

static __always_inline bool current_guest(struct sg_who* w) {
  w->cfg = active_cfg(&w->gen);
  w->g = NULL;
  w->cgroup = 0;
  if (!w->cfg || w->cfg->guest_level == 0) return false;
#ifdef SG_STORAGE_VARIANT
  /* Test builds only: a different program (tag) over the same maps, standing in for an upgrade. */
  if (w->cfg->guest_level > 4096) return false;
#endif
  if (bpf_get_current_ancestor_cgroup_id(w->cfg->guest_level - 1) != w->cfg->machine_cgroup_id)
    return false;
  w->cgroup = bpf_get_current_ancestor_cgroup_id(w->cfg->guest_level);
  w->g = bpf_map_lookup_elem(&sg_storage_guests, &w->cgroup);
  return true;
}

static __always_inline bool enforced(const struct sg_who* w, __u32 dataset) {
  return dataset < SG_MAX_DATASETS && (w->cfg->enforce_mask & (1ULL << dataset));
}

static __always_inline struct sg_io_state* io_state(const struct sg_who* w, __u32 dataset) {
  if (!w->g) return NULL;
  struct sg_io_key k = {.guest_id = w->g->guest_id, .dataset = dataset};
  return sg_lookup_or_init(&sg_io_state, &k, struct sg_io_state);
}

static __always_inline struct sg_storage_ratelimit* ratelimit_of(const struct sg_who* w) {
  __u32 key = w->g ? w->g->guest_id : 0;
  return sg_lookup_or_init(&sg_storage_ratelimit, &key, struct sg_storage_ratelimit);
}

/* May this guest emit one more event now? GCRA over one 64-bit word updated by compare-and-swap
 * (tracing programs may not take a bpf_spin_lock). A flood finds the bucket empty on the first
 * read and only counts. Only events are limited: the caller has already decided the verdict. */
static __always_inline struct sg_storage_event* reserve_event(const struct sg_who* w) {
  struct sg_storage_ratelimit* rl = ratelimit_of(w);
  if (!rl) return NULL;
  __u64 rate = w->cfg->events_per_sec;
  __u64 burst = w->cfg->event_burst;
  if (rate == 0 || burst == 0) goto suppress;
  __u64 interval = 1000000000ULL / rate;
  if (interval == 0) interval = 1;
  __u64 tolerance = interval * burst;
  __u64 now = bpf_ktime_get_boot_ns();
  bool ok = false;
  for (int i = 0; i < 4; i++) {
    __u64 tat = *(volatile __u64*)&rl->tat_ns;
    __u64 next = (tat > now ? tat : now) + interval;
    if (next - now > tolerance) break;
    if (__sync_val_compare_and_swap(&rl->tat_ns, tat, next) == tat) {
      ok = true;
      break;
    }
  }
  if (ok) {
    struct sg_storage_event* e = bpf_ringbuf_reserve(&sg_storage_events, sizeof(*e), 0);
    if (e) return e;
  }
suppress:
  __sync_fetch_and_add(&rl->suppressed, 1);
  return NULL;
}

/* Counts a refusal against the dataset and sends the event (rate-limited). `dataset`
 * SG_MAX_DATASETS: an event that concerns no dataset (a 32-bit syscall, an I/O path that is not
 * counted), counted nowhere. */
static __always_inline void emit(const struct sg_who* w, __u32 kind, __u32 dataset, __u64 dev,
                                 __u64 ino, __u16 verdict) {
  if (dataset < SG_MAX_DATASETS) {
    struct sg_io_state* s = io_state(w, dataset);
    if (s) __sync_fetch_and_add(&s->denied, 1);
  }
  struct sg_storage_event* e = reserve_event(w);
  if (!e) return;
  __builtin_memset(e, 0, sizeof(*e));
  e->timestamp_ns = bpf_ktime_get_boot_ns();
  e->cgroup_id = w->cgroup;
  e->guest_id = w->g ? w->g->guest_id : 0;
  e->dataset = dataset;
  e->kind = kind;
  e->pid = bpf_get_current_pid_tgid() >> 32;
  e->dev = dev;
  e->ino = ino;
  e->verdict = verdict;
  bpf_ringbuf_submit(e, 0);
}

/* Whether the dataset has a read or a write budget: I/O no hook counts (a mapping's page faults)
 * would bypass it, so such access is refused where a budget applies. */
static __always_inline bool has_budget(const struct sg_who* w, __u32 dataset) {
  __u32 ds = dataset & (SG_MAX_DATASETS - 1);
  return w->cfg->ds[ds].read_quota_bytes || w->cfg->ds[ds].write_quota_bytes;
}

/* 0: allowed; else the event kind. An unregistered guest holds no dataset (fail closed). */
static __always_inline __u32 check_volume(const struct sg_who* w, const struct sg_volume* v,
                                          bool writing) {
  __u64 held = w->g ? w->g->datasets : 0;
  if (v->dataset >= SG_MAX_DATASETS || !(held & (1ULL << v->dataset))) return SG_EV_OPEN_DENIED;
  if (writing && (v->flags & SG_VOLUME_READ_ONLY)) return SG_EV_READ_ONLY;
  return 0;
}

/* btrfs gives every subvolume its own anonymous device (what stat() reports) while all share one
 * super block, and inode numbers repeat in each subvolume: the subvolume's device is the
 * identity. Local flavours, so the object loads where btrfs has no BTF (the read is then 0 and
 * the super block's device stays). */
#define SG_BTRFS_SUPER_MAGIC 0x9123683E
struct btrfs_root___sg {
  dev_t anon_dev;
} __attribute__((preserve_access_index));
struct btrfs_inode___sg {
  struct btrfs_root___sg* root;
  struct inode vfs_inode;
} __attribute__((preserve_access_index));

/* The first SG_HEAD bytes of a kernel object, read at once: the identity fields of an inode
 * (i_mode, i_sb, i_ino, i_rdev: within 80 bytes on 6.1 and 6.18) and of a super block (s_dev,
 * s_magic: within 104) are taken from there, one read instead of one per field. A field that lies
 * beyond on some kernel (CO-RE offsets are constants at load) is read alone. */
#define SG_HEAD 128
#define SG_HEAD_FIELD(head, obj, type, field)                           \
  ({                                                                    \
    typeof(((type*)0)->field) v__;                                      \
    const __u32 off__ = bpf_core_field_offset(type, field);             \
    if (off__ + sizeof(v__) <= SG_HEAD)                                 \
      __builtin_memcpy(&v__, (const __u8*)(head) + off__, sizeof(v__)); \
    else                                                                \
      v__ = BPF_CORE_READ((type*)(obj), field);                         \
    v__;                                                                \
  })

/* The volume identity rule (user space: enforcer/storage/volume_identity.h): block devices by
 * i_rdev, character devices by (SG_VOLUME_CHAR_DEV, i_rdev), files by (super block's s_dev, or
 * the btrfs subvolume's anon_dev; i_ino). A subprogram: its head buffer is in its own frame. */
static __noinline struct sg_volume* volume_of(struct file* file, struct sg_volume_key* key) {
  struct inode* inode = BPF_CORE_READ(file, f_inode);
  if (!inode) return NULL;
  __u8 head[SG_HEAD];
  if (bpf_probe_read_kernel(head, sizeof(head), inode)) return NULL;
  __u16 mode = SG_HEAD_FIELD(head, inode, struct inode, i_mode);
  if ((mode & S_IFMT) == S_IFBLK || (mode & S_IFMT) == S_IFCHR) {
    key->dev = (mode & S_IFMT) == S_IFBLK ? 0 : SG_VOLUME_CHAR_DEV;
    key->ino = SG_HEAD_FIELD(head, inode, struct inode, i_rdev);
    return bpf_map_lookup_elem(&sg_volumes, key);
  }
  key->ino = SG_HEAD_FIELD(head, inode, struct inode, i_ino);
  struct super_block* sb = SG_HEAD_FIELD(head, inode, struct inode, i_sb);
  if (bpf_probe_read_kernel(head, sizeof(head), sb)) return NULL;
  key->dev = SG_HEAD_FIELD(head, sb, struct super_block, s_dev);
  if (SG_HEAD_FIELD(head, sb, struct super_block, s_magic) == SG_BTRFS_SUPER_MAGIC &&
      bpf_core_field_exists(struct btrfs_inode___sg, vfs_inode) &&
      bpf_core_field_exists(struct btrfs_root___sg, anon_dev)) {
    struct btrfs_inode___sg* bi =
        (void*)inode - bpf_core_field_offset(struct btrfs_inode___sg, vfs_inode);
    __u64 anon = BPF_CORE_READ(bi, root, anon_dev);
    if (anon) key->dev = anon;
  }
  return bpf_map_lookup_elem(&sg_volumes, key);
}

/* The current task's file at `fd`, or NULL. The task's fields are read directly (BTF); the fd
 * array's slot through bpf_probe_read_kernel (no direct access at a variable index). */
static __always_inline struct file* fd_file(long fd) {
  if (fd < 0) return NULL;
  struct task_struct* task = bpf_get_current_task_btf();
  struct files_struct* files = task->files;
  if (!files) return NULL;
  struct fdtable* fdt = files->fdt;
  if (!fdt || fd >= fdt->max_fds) return NULL;
  struct file** fds = fdt->fd;
  struct file* file = NULL;
  if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd & 0xfffff])) return NULL;
  return file;
}

/* Sum of the first SG_MAX_IOV iovec lengths (a longer vector is judged on its first part). */
static __always_inline __u64 iov_bytes(const struct iovec* vec, unsigned long vlen) {
  __u64 total = 0;
  for (int i = 0; i < SG_MAX_IOV; i++) {
    if (i >= vlen) break;
    struct iovec iov;
    if (bpf_probe_read_user(&iov, sizeof(iov), &vec[i])) break;
    total += iov.iov_len;
  }
  return total;
}

/* Bytes the read/write system call that asked for this file_permission check wants to move, from
 * its user registers (x86-64: nr in orig_ax, args in di, si, dx); 1 for any other caller (io_uring,
 * splice, sendfile, copy_file_range, a kernel thread), which is then refused only once the budget
 * is used up. */
static __always_inline __u64 lsm_io_bytes(void) {
  struct pt_regs* regs = (struct pt_regs*)bpf_task_pt_regs(bpf_get_current_task_btf());
  if (!regs) return 1;
  long nr = BPF_CORE_READ(regs, orig_ax);
  unsigned long buf = BPF_CORE_READ(regs, si), count = BPF_CORE_READ(regs, dx);
  __u64 bytes = 1;
  switch (nr) {
    case 0:  /* read */
    case 1:  /* write */
    case 17: /* pread64 */
    case 18: /* pwrite64 */
      bytes = count;
      break;
    case 19:  /* readv */
    case 20:  /* writev */
    case 295: /* preadv */
    case 296: /* pwritev */
    case 327: /* preadv2 */
    case 328: /* pwritev2 */
      bytes = iov_bytes((const struct iovec*)buf, count);
      break;
  }
  return bytes ? bytes : 1;
}

#endif /* SOVGUARD_BPF_STORAGE_STORAGE_GUARD_HELPERS_H_ */
