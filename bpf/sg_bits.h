/* SPDX-License-Identifier: GPL-2.0 */
/* Bit and map helpers both BPF objects (bpf/net, bpf/storage) use. Include after vmlinux.h and
 * bpf_helpers.h. */
#pragma once

/* Index of the lowest set bit (v != 0): BPF has no count-trailing-zeros instruction, and clang-16
 * cannot lower __builtin_ctzll for it. */
static __always_inline __u32 sg_ctz64(__u64 v) {
  __u32 n = 0;
  if (!(v & 0xffffffffull)) {
    n += 32;
    v >>= 32;
  }
  if (!(v & 0xffffull)) {
    n += 16;
    v >>= 16;
  }
  if (!(v & 0xffull)) {
    n += 8;
    v >>= 8;
  }
  if (!(v & 0xfull)) {
    n += 4;
    v >>= 4;
  }
  if (!(v & 0x3ull)) {
    n += 2;
    v >>= 2;
  }
  if (!(v & 0x1ull)) n += 1;
  return n;
}

/* The value of type `type` at `key`, created zeroed first when there is none (BPF_NOEXIST: a
 * racing creator's value stays). NULL only when the map is full. A macro so the zero value is
 * made only on that slow path. */
#define sg_lookup_or_init(map, key, type)                 \
  ({                                                      \
    type* v_ = bpf_map_lookup_elem(map, key);             \
    if (!v_) {                                            \
      type zero_ = {};                                    \
      bpf_map_update_elem(map, key, &zero_, BPF_NOEXIST); \
      v_ = bpf_map_lookup_elem(map, key);                 \
    }                                                     \
    v_;                                                   \
  })
