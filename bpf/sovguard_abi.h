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

/* Layout checks: every struct shared by the programs and user space has its size and field
 * offsets pinned next to it, so a layout change fails the build on both sides (BPF objects and
 * C++ include these headers); such a change also bumps the ABI versions below. */
#ifdef __cplusplus
#define SG_ABI_CHECK(cond) static_assert(cond, #cond)
#else
#define SG_ABI_CHECK(cond) _Static_assert(cond, #cond)
#endif
#define SG_ABI_SIZE(type, size) SG_ABI_CHECK(sizeof(struct type) == (size))
#define SG_ABI_OFFSET(type, field, offset) \
  SG_ABI_CHECK(__builtin_offsetof(struct type, field) == (offset))

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

SG_ABI_SIZE(sg_class, 16);
SG_ABI_OFFSET(sg_class, allowed_datasets, 0);
SG_ABI_OFFSET(sg_class, country, 8);
SG_ABI_OFFSET(sg_class, zone, 10);
SG_ABI_OFFSET(sg_class, flags, 12);

/* The storage path (bpf/storage) and the network path (bpf/net). */
#include "net/sg_net_abi.h"
#include "storage/storage_guard_abi.h"

#endif /* SOVGUARD_BPF_SOVGUARD_ABI_H_ */
