// SPDX-License-Identifier: GPL-2.0
/*
 * Storage path of a guest's QEMU process. Several programs over the same maps, one per mechanism;
 * enforcer/storage loads the strongest one the kernel accepts for each path:
 *   open:            lsm/file_open or fmod_ret/security_file_open (prevents)  |  tp
 *                    sys_exit_open{,at,at2}, creat, open_by_handle_at + SIGKILL (detects, kills)
 *   read/write/mmap: lsm/file_permission, lsm/mmap_file or their fmod_ret/security_* twins
 *                    (prevents: dataset, quota)  |  tp_btf/sys_enter + SIGKILL (kills before
 *                    the I/O copies data on page-cache files)
 *   block devices:   cgroup/dev (prevents)
 *   network storage: cgroup/connect4, cgroup/connect6 (prevents: EPERM)
 *   accounting:      tp_btf/sys_enter + sys_exit, dispatched by syscall number (counts)
 *   guest discovery: tp_btf/cgroup_mkdir, cgroup_rmdir (pending name -> cgroup id, in the kernel)
 * A guest is the ancestor cgroup at cfg->guest_level whose parent is cfg->machine_cgroup_id.
 */
#include "vmlinux.h"
/* vmlinux.h first: the libbpf headers need its types (a blank line keeps clang-format from
 * sorting it after them). */

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "sg_bits.h"
#include "sovguard_abi.h"

/* After the ABI: the maps and helpers use its layouts. */
#include "storage/storage_guard_helpers.h"
#include "storage/storage_guard_maps.h"

char LICENSE[] SEC("license") = "GPL";

/* Judges an open. Returns 1 when the access must not go on (enforce), 0 otherwise. */
static __always_inline int judge_open(const struct sg_who* w, struct file* file, bool killing) {
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  bool writing = (BPF_CORE_READ(file, f_mode) & FMODE_WRITE) != 0;
  __u32 why = check_volume(w, v, writing);
  if (!why) return 0;
  bool deny = enforced(w, v->dataset);
  emit(w, why, v->dataset, key.dev, key.ino,
       !deny     ? SG_VERDICT_AUDIT
       : killing ? SG_STORAGE_VERDICT_KILLED
                 : SG_VERDICT_DROP);
  return deny;
}

/* The VFS hooks: every open, read/write and mmap of a file is judged before it happens, whoever
 * opened the descriptor. Two ways in, the same judgement: the BPF LSM (`bpf` in lsm=), or, where
 * the kernel has BPF trampolines but `bpf` is not an active LSM, fmod_ret in front of the kernel's
 * security_*() function: a non-zero return skips the function and is what its caller gets. */
static __always_inline int vfs_open(struct file* file) {
  struct sg_who w;
  if (!current_guest(&w)) return 0;
  return judge_open(&w, file, false) ? -EPERM : 0;
}

SEC("lsm/file_open")
int BPF_PROG(sg_lsm_file_open, struct file* file, int ret) {
  if (ret) return ret;
  return vfs_open(file);
}
SEC("fmod_ret/security_file_open")
int BPF_PROG(sg_fmod_file_open, struct file* file, int ret) {
  if (ret) return ret;
  return vfs_open(file);
}

/* Without the VFS hooks (open, openat, openat2, creat, open_by_handle_at: dispatched by
 * sg_sys_exit): look at the file the open just produced and kill QEMU before it returns to user
 * space (it never sees the fd; what the open itself did, e.g. O_TRUNC, has happened). */
static __noinline int open_exit(long fd) {
  if (fd < 0) return 0;
  struct sg_who w;
  if (!current_guest(&w) || (w.cfg->flags & SG_STORAGE_CFG_LSM)) return 0;
  struct file* file = fd_file(fd);
  if (!file) return 0;
  if (judge_open(&w, file, true)) bpf_send_signal(SIGKILL);
  return 0;
}

SEC("cgroup/dev")
int sg_cgroup_dev(struct bpf_cgroup_dev_ctx* ctx) {
  __u32 type = ctx->access_type & 0xffff;
  if (type != SG_DEVCG_DEV_BLOCK && type != SG_DEVCG_DEV_CHAR) return 1;
  struct sg_who w;
  if (!current_guest(&w)) return 1;
  struct sg_volume_key key = {.dev = type == SG_DEVCG_DEV_BLOCK ? 0 : SG_VOLUME_CHAR_DEV,
                              .ino = ((__u64)ctx->major << 20) | ctx->minor};
  struct sg_volume* v = bpf_map_lookup_elem(&sg_volumes, &key);
  if (!v) return 1;
  bool writing = ((ctx->access_type >> 16) & SG_DEVCG_ACC_WRITE) != 0;
  __u32 why = check_volume(&w, v, writing);
  if (!why) return 1;
  bool deny = enforced(&w, v->dataset);
  emit(&w, why == SG_EV_READ_ONLY ? why : SG_EV_DEVICE_DENIED, v->dataset, key.dev, key.ino,
       deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT);
  return deny ? 0 : 1;
}

static __always_inline int connect_common(struct bpf_sock_addr* ctx, bool v6) {
  struct sg_who w;
  if (!current_guest(&w)) return 1;
  __u64 held = w.g ? w.g->datasets : 0;
  __u16* found;
  if (v6) {
    struct sg_storage_lpm6_key k6 = {.prefixlen = 32 + 128, .gen = w.gen};
    /* user_ip6 is read word by word: the verifier allows only 4-byte loads */
    __u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
          w3 = ctx->user_ip6[3];
    __builtin_memcpy(&k6.addr[0], &w0, 4);
    __builtin_memcpy(&k6.addr[4], &w1, 4);
    __builtin_memcpy(&k6.addr[8], &w2, 4);
    __builtin_memcpy(&k6.addr[12], &w3, 4);
    found = bpf_map_lookup_elem(&sg_endpoints6, &k6);
  } else {
    struct sg_storage_lpm4_key k4 = {.prefixlen = 32 + 32, .gen = w.gen, .addr = ctx->user_ip4};
    found = bpf_map_lookup_elem(&sg_endpoints4, &k4);
  }
  __u32 class_id = found ? *found : 0;
  if (class_id >= w.cfg->n_classes) class_id = 0;
  __u32 slot = w.gen * SG_MAX_CLASSES + class_id;
  struct sg_class* c = bpf_map_lookup_elem(&sg_storage_classes, &slot);
  __u64 allowed = c ? c->allowed_datasets : 0;
  __u64 violating = held & ~allowed;
  if (!violating) return 1;
  bool deny = (violating & w.cfg->enforce_mask) != 0;
  __u32 dataset = sg_ctz64(violating);
  struct sg_io_state* s = io_state(&w, dataset);
  if (s) __sync_fetch_and_add(&s->denied, 1);
  struct sg_storage_event* e = reserve_event(&w);
  if (e) {
    __builtin_memset(e, 0, sizeof(*e));
    e->timestamp_ns = bpf_ktime_get_boot_ns();
    e->cgroup_id = w.cgroup;
    e->guest_id = w.g ? w.g->guest_id : 0;
    e->dataset = dataset;
    e->kind = SG_EV_CONNECT_DENIED;
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->family = v6 ? 10 : 2;
    e->port = bpf_ntohs((__u16)ctx->user_port);
    e->country = c ? c->country : 0;
    e->verdict = deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT;
    if (v6) {
      __u32 w0 = ctx->user_ip6[0], w1 = ctx->user_ip6[1], w2 = ctx->user_ip6[2],
            w3 = ctx->user_ip6[3];
      __builtin_memcpy(&e->addr[0], &w0, 4);
      __builtin_memcpy(&e->addr[4], &w1, 4);
      __builtin_memcpy(&e->addr[8], &w2, 4);
      __builtin_memcpy(&e->addr[12], &w3, 4);
    } else {
      __u32 a = ctx->user_ip4;
      __builtin_memcpy(e->addr, &a, 4);
    }
    bpf_ringbuf_submit(e, 0);
  }
  return deny ? 0 : 1;
}

SEC("cgroup/connect4")
int sg_connect4(struct bpf_sock_addr* ctx) {
  return connect_common(ctx, false);
}

SEC("cgroup/connect6")
int sg_connect6(struct bpf_sock_addr* ctx) {
  return connect_common(ctx, true);
}

/* ---- Byte accounting and quotas ----------------------------------------------------------------
 */

/* Bytes used in the current window (restarting it when it has expired); racing restarts lose at
 * most the bytes of the I/Os in flight at the boundary. */
static __always_inline __u64 window_used(__u64* start, __u64* used, __u64 window_ns, __u64 now) {
  if (now - *start >= window_ns) {
    *start = now;
    *used = 0;
  }
  return *used;
}

/* Would `bytes` more exceed the dataset's budget? 0: no; else the event kind. */
static __always_inline __u32 over_quota(const struct sg_who* w, __u32 dataset, bool write,
                                        __u64 bytes) {
  if (dataset >= SG_MAX_DATASETS) return 0;
  /* The barrier keeps the mask: without it clang drops it (it knows dataset < 64) and indexes
   * again from a spilled copy, which older verifiers (6.1) refuse as unbounded. */
  __u32 i = dataset;
  barrier_var(i);
  i &= SG_MAX_DATASETS - 1;
  const struct sg_storage_dataset_cfg* d = &w->cfg->ds[i];
  const __u64 quota = write ? d->write_quota_bytes : d->read_quota_bytes;
  const __u64 window_ns = write ? d->write_window_ns : d->read_window_ns;
  if (!quota) return 0;
  struct sg_io_state* s = io_state(w, dataset);
  if (!s) return 0;
  __u64 now = bpf_ktime_get_boot_ns();
  __u64 used = write
                   ? window_used(&s->write_window_start_ns, &s->write_window_bytes, window_ns, now)
                   : window_used(&s->read_window_start_ns, &s->read_window_bytes, window_ns, now);
  if (used + bytes <= quota) return 0;
  return write ? SG_EV_WRITE_QUOTA : SG_EV_READ_QUOTA;
}

/* An I/O on a protected volume judged like an open (the fd may have been passed in, inherited, or
 * opened by a path no open tracepoint sees), then against the budget. Returns true when the
 * process was sent SIGKILL. */
static __always_inline bool io_judge(const struct sg_who* w, const struct sg_volume* v,
                                     const struct sg_volume_key* key, bool write, __u64 bytes) {
  __u32 dataset = v->dataset;
  __u32 why = check_volume(w, v, write);
  if (!why) why = over_quota(w, dataset, write, bytes);
  if (!why) return false;
  bool deny = enforced(w, dataset);
  /* SIGKILL now: the syscall still runs, but a page-cache read or write checks for a fatal
   * signal before copying each chunk, so it ends with nothing copied. */
  if (deny) bpf_send_signal(SIGKILL);
  emit(w, why, dataset, key->dev, key->ino, deny ? SG_STORAGE_VERDICT_KILLED : SG_VERDICT_AUDIT);
  return deny;
}

/* The same where no VFS hook judges I/O (with them, file_permission refuses it first). */
static __always_inline bool io_guard(const struct sg_who* w, const struct sg_volume* v,
                                     const struct sg_volume_key* key, bool write, __u64 bytes) {
  if (w->cfg->flags & SG_STORAGE_CFG_LSM) return false;
  return io_judge(w, v, key, write, bytes);
}

static __always_inline void count_bytes(__u32 guest_id, __u32 dataset, bool write, __u64 n) {
  struct sg_io_key k = {.guest_id = guest_id, .dataset = dataset};
  struct sg_io_state* s = sg_lookup_or_init(&sg_io_state, &k, struct sg_io_state);
  if (!s) return;
  if (write) {
    __sync_fetch_and_add(&s->write_bytes, n);
    __sync_fetch_and_add(&s->write_window_bytes, n);
  } else {
    __sync_fetch_and_add(&s->read_bytes, n);
    __sync_fetch_and_add(&s->read_window_bytes, n);
  }
}

/* A read/write system call's entry: the volumes behind its source (read) and destination
 * (written) fds, -1 for none (one fd for read/write and their vectored forms, two for the copies
 * between fds), each judged against the dataset and budget with the bytes the call asks to move;
 * what is left to count is carried to the exit in the thread's sg_io_task entry. Where that entry
 * cannot be had (memory, or the kernel's task storage busy on this CPU), the requested bytes are
 * counted now: at most more than moved, never less. */
static __noinline int io_enter(const struct sg_who* w, __u32 nr, long in_fd, long out_fd,
                               __u64 bytes) {
  struct sg_inflight in = {
      .nr = nr + 1, .in_dataset = SG_MAX_DATASETS, .out_dataset = SG_MAX_DATASETS};
  struct sg_volume_key key = {};
  struct file* f = fd_file(in_fd);
  struct sg_volume* v = f ? volume_of(f, &key) : NULL;
  if (v) {
    if (io_guard(w, v, &key, false, bytes)) return 0;
    in.in_dataset = v->dataset;
  }
  f = fd_file(out_fd);
  v = f ? volume_of(f, &key) : NULL;
  if (v) {
    if (io_guard(w, v, &key, true, bytes)) return 0;
    in.out_dataset = v->dataset;
  }
  if (!w->g || (in.in_dataset == SG_MAX_DATASETS && in.out_dataset == SG_MAX_DATASETS)) return 0;
  in.guest_id = w->g->guest_id;
  struct sg_inflight* slot = bpf_task_storage_get(&sg_io_task, bpf_get_current_task_btf(), 0,
                                                  BPF_LOCAL_STORAGE_GET_F_CREATE);
  if (slot) {
    *slot = in;
    return 0;
  }
  if (in.in_dataset < SG_MAX_DATASETS) count_bytes(in.guest_id, in.in_dataset, false, bytes);
  if (in.out_dataset < SG_MAX_DATASETS) count_bytes(in.guest_id, in.out_dataset, true, bytes);
  return 0;
}

/* Its exit: counts the result against what the entry carried (for this very call: nr). */
static __always_inline int io_exit(__u32 nr, long ret) {
  struct sg_inflight* slot = bpf_task_storage_get(&sg_io_task, bpf_get_current_task_btf(), 0, 0);
  if (!slot || slot->nr == 0) return 0;
  struct sg_inflight in = *slot;
  slot->nr = 0;
  if (in.nr != nr + 1 || ret <= 0) return 0;
  if (in.in_dataset < SG_MAX_DATASETS) count_bytes(in.guest_id, in.in_dataset, false, ret);
  if (in.out_dataset < SG_MAX_DATASETS) count_bytes(in.guest_id, in.out_dataset, true, ret);
  return 0;
}

/* Every read/write of a protected volume is judged before it happens (fds passed in by another
 * process included), with the system call's byte count: the I/O that would cross the window's
 * budget is refused whole. */
static __always_inline int vfs_permission(struct file* file, int mask) {
  struct sg_who w;
  if (!current_guest(&w)) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  bool write = (mask & MAY_WRITE) != 0;
  __u32 why = check_volume(&w, v, write);
  if (!why) why = over_quota(&w, v->dataset, write, lsm_io_bytes());
  if (!why) return 0;
  bool deny = enforced(&w, v->dataset);
  emit(&w, why, v->dataset, key.dev, key.ino, deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT);
  return deny ? (why == SG_EV_READ_QUOTA || why == SG_EV_WRITE_QUOTA ? -EDQUOT : -EPERM) : 0;
}

SEC("lsm/file_permission")
int BPF_PROG(sg_lsm_file_permission, struct file* file, int mask, int ret) {
  if (ret) return ret;
  return vfs_permission(file, mask);
}
SEC("fmod_ret/security_file_permission")
int BPF_PROG(sg_fmod_file_permission, struct file* file, int mask, int ret) {
  if (ret) return ret;
  return vfs_permission(file, mask);
}

/* mmap of a volume: the reads and writes of its page faults pass no file_permission. Judged like
 * an open (a shared writable mapping as a write), and refused when the dataset has a budget,
 * which such I/O would bypass. */
static __always_inline int vfs_mmap(struct file* file, unsigned long prot, unsigned long flags) {
  if (!file) return 0;
  struct sg_who w;
  if (!current_guest(&w)) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  bool write = (prot & 0x2 /* PROT_WRITE */) && (flags & 0x1 /* MAP_SHARED */);
  __u32 why = check_volume(&w, v, write);
  if (!why && has_budget(&w, v->dataset)) why = SG_EV_UNCOUNTED_IO;
  if (!why) return 0;
  bool deny = enforced(&w, v->dataset);
  emit(&w, why, v->dataset, key.dev, key.ino, deny ? SG_VERDICT_DROP : SG_VERDICT_AUDIT);
  return deny ? -EPERM : 0;
}

SEC("lsm/mmap_file")
int BPF_PROG(sg_lsm_mmap_file, struct file* file, unsigned long reqprot, unsigned long prot,
             unsigned long flags, int ret) {
  if (ret) return ret;
  return vfs_mmap(file, prot, flags);
}
/* security_mmap_file(file, prot, flags): the hook's reqprot is the function's prot. */
SEC("fmod_ret/security_mmap_file")
int BPF_PROG(sg_fmod_mmap_file, struct file* file, unsigned long prot, unsigned long flags,
             int ret) {
  if (ret) return ret;
  return vfs_mmap(file, prot, flags);
}

/* ---- Guest discovery --------------------------------------------------------------------------
 */

/* libvirt creates machine/<name> (cgroup v2) before any QEMU thread joins it: a name announced in
 * sg_storage_pending becomes the guest entry of the new cgroup id right here. */
SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(sg_cgroup_mkdir, struct cgroup* cgrp, const char* path) {
  __u32 gen;
  struct sg_storage_config* cfg = active_cfg(&gen);
  if (!cfg || cfg->guest_level == 0) return 0;
  if (BPF_CORE_READ(cgrp, level) != cfg->guest_level) return 0;
  /* Only the default (v2) hierarchy, id 0: ids of v1 hierarchies' nodes may collide. */
  if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) return 0;
  if (BPF_CORE_READ(cgrp, self.parent, cgroup, kn, id) != cfg->machine_cgroup_id) return 0;
  struct sg_storage_pending_key key = {};
  const char* name = BPF_CORE_READ(cgrp, kn, name);
  if (bpf_probe_read_kernel_str(key.name, sizeof(key.name), name) <= 0) return 0;
  struct sg_storage_guest* g = bpf_map_lookup_elem(&sg_storage_pending, &key);
  if (!g) return 0;
  __u64 id = BPF_CORE_READ(cgrp, kn, id);
  bpf_map_update_elem(&sg_storage_guests, &id, g, BPF_ANY);
  return 0;
}

SEC("tp_btf/cgroup_rmdir")
int BPF_PROG(sg_cgroup_rmdir, struct cgroup* cgrp, const char* path) {
  if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0) return 0;
  __u64 id = BPF_CORE_READ(cgrp, kn, id);
  bpf_map_delete_elem(&sg_storage_guests, &id);
  return 0;
}

/* ---- Every other way to open and to move bytes ------------------------------------------------
 * Without BPF LSM the open tracepoints above see only what they are named for. These add the
 * other paths a process has to a file: creat and open_by_handle_at; (in the sys_enter/sys_exit
 * dispatch at the end) read/write/readv/writev and the p* forms, the two-fd copies (sendfile,
 * splice, copy_file_range), Linux AIO (io_submit, counted at submission), mmap of a volume (reads
 * and writes by page fault cannot be counted), ftruncate/fallocate, and 32-bit or x32 syscalls
 * (the guest is killed at the first one); io_uring (opens and I/O judged and counted at
 * completion, where the request's file is known, fixed files included). Every counted I/O also
 * checks the volume's dataset (io_guard). */

#define TS_COMPAT 0x0002
#define X32_SYSCALL_BIT 0x40000000
#define SG_MAX_AIO_BATCH 4096

/* Sum of every iovec length (up to UIO_MAXIOV), read 8 at a time: AIO is counted from it (QEMU
 * submits a guest request's scatter-gather list, often more than 16 pages, in one iocb). */
#define SG_IOV_BATCH 8
#define SG_UIO_MAXIOV 1024
struct sg_iov_ctx {
  const struct iovec* vec;
  __u64 vlen;
  __u64 total;
};

static long iov_batch(__u64 i, void* data) {
  struct sg_iov_ctx* c = data;
  __u64 base = i * SG_IOV_BATCH;
  if (base >= c->vlen) return 1;
  __u64 n = c->vlen - base;
  if (n > SG_IOV_BATCH) n = SG_IOV_BATCH;
  struct iovec iov[SG_IOV_BATCH];
  __builtin_memset(iov, 0, sizeof(iov));
  if (bpf_probe_read_user(iov, (n & (SG_IOV_BATCH * 2 - 1)) * sizeof(struct iovec), &c->vec[base]))
    return 1;
  for (int k = 0; k < SG_IOV_BATCH; k++) c->total += iov[k].iov_len;
  return 0;
}

static __always_inline __u64 iov_bytes_all(const struct iovec* vec, __u64 vlen) {
  struct sg_iov_ctx c = {.vec = vec, .vlen = vlen > SG_UIO_MAXIOV ? SG_UIO_MAXIOV : vlen};
  bpf_loop((c.vlen + SG_IOV_BATCH - 1) / SG_IOV_BATCH, iov_batch, &c, 0);
  return c.total;
}

/* Linux AIO (QEMU io='native'): judged and counted at submission, by the bytes requested. A kill
 * here lets the batch be submitted; O_DIRECT I/O in it (io='native' needs cache='none')
 * completes. */
struct sg_aio_ctx {
  struct sg_who* w;
  struct iocb** iocbpp;
};

/* The fields of a struct iocb (uapi, fixed layout) this program needs, read at once: less stack
 * than the whole iocb in this callback, which sits on the deepest call chain (sys_enter ->
 * aio_enter -> here -> volume_of; the verifier's limit is 512 bytes for the chain). */
struct sg_iocb_part {
  __u16 aio_lio_opcode;
  __s16 aio_reqprio;
  __u32 aio_fildes;
  __u64 aio_buf;
  __u64 aio_nbytes;
};
_Static_assert(__builtin_offsetof(struct iocb, aio_nbytes) -
                       __builtin_offsetof(struct iocb, aio_lio_opcode) ==
                   __builtin_offsetof(struct sg_iocb_part, aio_nbytes),
               "struct iocb layout");

static long aio_one(__u64 i, void* data) {
  struct sg_aio_ctx* c = data;
  struct iocb* up = NULL;
  if (bpf_probe_read_user(&up, sizeof(up), &c->iocbpp[i])) return 1;
  struct sg_iocb_part cb;
  if (bpf_probe_read_user(&cb, sizeof(cb),
                          (const char*)up + __builtin_offsetof(struct iocb, aio_lio_opcode)))
    return 1;
  bool write;
  __u64 bytes;
  switch (cb.aio_lio_opcode) {
    case IOCB_CMD_PREAD:
    case IOCB_CMD_PWRITE:
      write = cb.aio_lio_opcode == IOCB_CMD_PWRITE;
      bytes = cb.aio_nbytes;
      break;
    case IOCB_CMD_PREADV:
    case IOCB_CMD_PWRITEV:
      write = cb.aio_lio_opcode == IOCB_CMD_PWRITEV;
      bytes = iov_bytes_all((const struct iovec*)cb.aio_buf, cb.aio_nbytes);
      break;
    default:
      return 0;
  }
  struct file* file = fd_file(cb.aio_fildes);
  if (!file) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  if (io_guard(c->w, v, &key, write, bytes)) return 1;
  if (c->w->g) count_bytes(c->w->g->guest_id, v->dataset, write, bytes);
  return 0;
}

static __noinline int aio_enter(const struct sg_who* w, long nr, struct iocb** iocbpp) {
  if (nr <= 0) return 0;
  if (nr > SG_MAX_AIO_BATCH) {
    /* More than this program looks at: refused the only way it can be (fail closed). */
    if (!(w->cfg->flags & SG_STORAGE_CFG_LSM)) {
      bpf_send_signal(SIGKILL);
      emit(w, SG_EV_UNCOUNTED_IO, SG_MAX_DATASETS, 0, 0, SG_STORAGE_VERDICT_KILLED);
    }
    return 0;
  }
  struct sg_aio_ctx c = {.w = (struct sg_who*)w, .iocbpp = iocbpp};
  bpf_loop(nr, aio_one, &c, 0);
  return 0;
}

/* io_uring (QEMU io='io_uring'): every request completes through here, in a thread of the ring's
 * process (the submitter's task work, an io-wq worker or the SQPOLL thread, all in its cgroup).
 * Opens are judged like openat's (an fd installed in the table; a direct descriptor is judged at
 * its first I/O); reads and writes are judged against the dataset and budget and counted by
 * their result. The I/O has happened: the kill stops what comes next. */
static __always_inline bool uring_rw(__u8 op, bool* write) {
  switch (op) {
    case IORING_OP_READV:
    case IORING_OP_READ_FIXED:
    case IORING_OP_READ:
    case IORING_OP_READ_MULTISHOT:
    case IORING_OP_READV_FIXED:
      *write = false;
      return true;
    case IORING_OP_WRITEV:
    case IORING_OP_WRITE_FIXED:
    case IORING_OP_WRITE:
    case IORING_OP_WRITEV_FIXED:
      *write = true;
      return true;
  }
  return false;
}

static __always_inline int uring_complete(void* request, __s32 res) {
  struct sg_who w;
  if (!current_guest(&w)) return 0;
  struct io_kiocb* req = request;
  __u8 op = BPF_CORE_READ(req, opcode);
  if (op == IORING_OP_OPENAT || op == IORING_OP_OPENAT2) return open_exit(res);
  bool write = false;
  if (!uring_rw(op, &write)) return 0;
  struct file* file = BPF_CORE_READ(req, file);
  if (!file) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  __u64 bytes = res > 0 ? res : 0;
  io_guard(&w, v, &key, write, bytes);
  if (w.g && bytes) count_bytes(w.g->guest_id, v->dataset, write, bytes);
  return 0;
}

/* 6.3 and later: the result is in the CQE. */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(sg_io_uring_complete, struct io_ring_ctx* ring, void* request,
             struct io_uring_cqe* cqe) {
  return uring_complete(request, cqe->res);
}

/* Before 6.3 (Debian 12's 6.1): the result is an argument. The loader enables the one of the
 * two that matches this kernel's tracepoint (BTF). */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(sg_io_uring_complete_args, void* ring, void* request, __u64 user_data, int res,
             unsigned cflags, __u64 extra1, __u64 extra2) {
  return uring_complete(request, res);
}

/* io_uring's splice and tee take their source file at issue and drop it before completion: not
 * counted, so a guest may not use them on the fallback. */
static __always_inline int uring_submit(struct io_kiocb* req) {
  __u8 op = BPF_CORE_READ(req, opcode);
  if (op != IORING_OP_SPLICE && op != IORING_OP_TEE) return 0;
  struct sg_who w;
  if (!current_guest(&w) || (w.cfg->flags & SG_STORAGE_CFG_LSM)) return 0;
  bpf_send_signal(SIGKILL);
  emit(&w, SG_EV_UNCOUNTED_IO, SG_MAX_DATASETS, 0, 0, SG_STORAGE_VERDICT_KILLED);
  return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(sg_io_uring_submit, struct io_kiocb* req) {
  return uring_submit(req);
}

/* Before 6.3 the same tracepoint is io_uring_submit_sqe(req, force_nonblock). */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(sg_io_uring_submit_sqe, struct io_kiocb* req, bool force_nonblock) {
  return uring_submit(req);
}

/* mmap of a volume: reads and writes by page fault pass no hook here. Judged like an open, and
 * refused (killed) when the dataset has a budget, which such I/O would bypass. */
static __noinline int mmap_enter(const struct sg_who* w, long fd, __u64 prot, __u64 flags) {
  if (w->cfg->flags & SG_STORAGE_CFG_LSM) return 0;
  struct file* file = fd_file(fd);
  if (!file) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (!v) return 0;
  bool write = (prot & 0x2 /* PROT_WRITE */) && (flags & 0x1 /* MAP_SHARED */);
  if (io_guard(w, v, &key, write, 0)) return 0;
  if (!has_budget(w, v->dataset)) return 0;
  bool deny = enforced(w, v->dataset);
  if (deny) bpf_send_signal(SIGKILL);
  emit(w, SG_EV_UNCOUNTED_IO, v->dataset, key.dev, key.ino,
       deny ? SG_STORAGE_VERDICT_KILLED : SG_VERDICT_AUDIT);
  return 0;
}

/* ftruncate and fallocate move no bytes but change a volume (truncate, punch a hole): judged as a
 * write on a descriptor the guest never opened. Detection only: neither checks for a fatal signal,
 * so the change is made before the process dies. fallocate passes file_permission, which refuses
 * it first where the VFS hooks run; ftruncate passes no hook they use, so it is judged here with
 * them too. */
static __noinline int change_enter(const struct sg_who* w, long fd, bool with_vfs_hooks) {
  if (!with_vfs_hooks && (w->cfg->flags & SG_STORAGE_CFG_LSM)) return 0;
  struct file* file = fd_file(fd);
  if (!file) return 0;
  struct sg_volume_key key = {};
  struct sg_volume* v = volume_of(file, &key);
  if (v) io_judge(w, v, &key, true, 0);
  return 0;
}

/* ---- One entry and one exit program for every system call ----------------------------------
 * (The per-call handlers above are subprograms, not inlined: each has its own stack frame, and
 * the combined stack with bpf_loop's callbacks stays within 512 bytes.)
 * The raw sys_enter/sys_exit tracepoints (tp_btf) run for every system call of every process on
 * the host, before and after it, with the caller's user registers (x86-64: nr in orig_ax, args in
 * di, si, dx, r10, r8, r9). A syscalls:* tracepoint would add perf's per-event wrapper (buffer,
 * argument copy) to each call. Everything else leaves after a look at the number: only the
 * calls below look up the caller's guest.
 *
 * The opens' exits are dispatched here too (the tracepoint rung's open check), so no syscalls:*
 * tracepoint is attached at all.
 *
 * A 32-bit (int 0x80, sysenter, far call into a 32-bit segment) or x32 syscall has numbers of its
 * own and is never dispatched as one of these at entry. QEMU never makes one: a guest process that
 * does is killed before it returns to user space (the syscall itself runs with SIGKILL pending);
 * its exit may match a number below and is judged like one (an I/O exit counts only what its own
 * entry carried). */
#define SG_NR_READ 0
#define SG_NR_WRITE 1
#define SG_NR_OPEN 2
#define SG_NR_MMAP 9
#define SG_NR_PREAD64 17
#define SG_NR_PWRITE64 18
#define SG_NR_READV 19
#define SG_NR_WRITEV 20
#define SG_NR_SENDFILE 40
#define SG_NR_FTRUNCATE 77
#define SG_NR_CREAT 85
#define SG_NR_IO_SUBMIT 209
#define SG_NR_OPENAT 257
#define SG_NR_SPLICE 275
#define SG_NR_FALLOCATE 285
#define SG_NR_PREADV 295
#define SG_NR_PWRITEV 296
#define SG_NR_OPEN_BY_HANDLE_AT 304
#define SG_NR_COPY_FILE_RANGE 326
#define SG_NR_PREADV2 327
#define SG_NR_PWRITEV2 328
#define SG_NR_OPENAT2 437

static __always_inline bool compat_syscall(long id) {
  struct task_struct* task = bpf_get_current_task_btf();
  return (task->thread_info.status & TS_COMPAT) || (id & X32_SYSCALL_BIT);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sg_sys_enter, struct pt_regs* regs, long id) {
  if (compat_syscall(id)) {
    struct sg_who w;
    if (!current_guest(&w) || (w.cfg->flags & SG_STORAGE_CFG_LSM)) return 0;
    bpf_send_signal(SIGKILL);
    emit(&w, SG_EV_COMPAT_SYSCALL, SG_MAX_DATASETS, 0, id, SG_STORAGE_VERDICT_KILLED);
    return 0;
  }
  switch (id) {
    case SG_NR_READ:
    case SG_NR_WRITE:
    case SG_NR_MMAP:
    case SG_NR_PREAD64:
    case SG_NR_PWRITE64:
    case SG_NR_READV:
    case SG_NR_WRITEV:
    case SG_NR_SENDFILE:
    case SG_NR_FTRUNCATE:
    case SG_NR_IO_SUBMIT:
    case SG_NR_SPLICE:
    case SG_NR_FALLOCATE:
    case SG_NR_PREADV:
    case SG_NR_PWRITEV:
    case SG_NR_COPY_FILE_RANGE:
    case SG_NR_PREADV2:
    case SG_NR_PWRITEV2:
      break;
    default:
      return 0;
  }
  struct sg_who w;
  if (!current_guest(&w)) return 0;
  const long a0 = regs->di, a2 = regs->dx, a4 = regs->r8;
  const unsigned long a1 = regs->si, a3 = regs->r10;
  switch (id) {
    case SG_NR_READ:
    case SG_NR_PREAD64: /* fd, buf, count */
      return io_enter(&w, id, a0, -1, a2);
    case SG_NR_WRITE:
    case SG_NR_PWRITE64:
      return io_enter(&w, id, -1, a0, a2);
    case SG_NR_READV: /* fd, iov, iovcnt */
    case SG_NR_PREADV:
    case SG_NR_PREADV2:
      return io_enter(&w, id, a0, -1, iov_bytes((const struct iovec*)a1, a2));
    case SG_NR_WRITEV:
    case SG_NR_PWRITEV:
    case SG_NR_PWRITEV2:
      return io_enter(&w, id, -1, a0, iov_bytes((const struct iovec*)a1, a2));
    case SG_NR_SENDFILE: /* out_fd, in_fd, offset, count */
      return io_enter(&w, id, (long)a1, a0, a3);
    case SG_NR_SPLICE: /* fd_in, off_in, fd_out, off_out, len, flags */
    case SG_NR_COPY_FILE_RANGE:
      return io_enter(&w, id, a0, a2, a4);
    case SG_NR_IO_SUBMIT: /* ctx, nr, iocbpp */
      return aio_enter(&w, (long)a1, (struct iocb**)a2);
    case SG_NR_MMAP: /* addr, len, prot, flags, fd, offset */
      return mmap_enter(&w, a4, a2, a3);
    case SG_NR_FTRUNCATE:
      return change_enter(&w, a0, true);
    case SG_NR_FALLOCATE:
      return change_enter(&w, a0, false);
  }
  return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sg_sys_exit, struct pt_regs* regs, long ret) {
  const long nr = regs->orig_ax;
  switch (nr) {
    case SG_NR_READ:
    case SG_NR_WRITE:
    case SG_NR_PREAD64:
    case SG_NR_PWRITE64:
    case SG_NR_READV:
    case SG_NR_WRITEV:
    case SG_NR_SENDFILE:
    case SG_NR_SPLICE:
    case SG_NR_PREADV:
    case SG_NR_PWRITEV:
    case SG_NR_COPY_FILE_RANGE:
    case SG_NR_PREADV2:
    case SG_NR_PWRITEV2:
      return io_exit(nr, ret);
    case SG_NR_OPEN:
    case SG_NR_CREAT:
    case SG_NR_OPENAT:
    case SG_NR_OPEN_BY_HANDLE_AT:
    case SG_NR_OPENAT2:
      return open_exit(ret);
  }
  return 0;
}
