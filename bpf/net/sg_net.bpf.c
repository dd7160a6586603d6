/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * sg_net: data-residency enforcement on a guest's egress (tc clsact ingress of its tap).
 *
 * Per frame: find the guest by ifindex, parse, classify the destination into a jurisdiction class
 * (IPv4: direct-indexed table per /24, a second level per address under /24s that hold longer
 * prefixes; IPv6: two array levels per /16 and /32, trie only under /32s that hold longer
 * prefixes), then violating =
 * held datasets the class does not allow. Drop if a violating dataset is in enforce mode, otherwise
 * pass (and count "would have dropped" for audit ones). Then egress quotas per (guest, dataset),
 * counters, and a rate-limited violation event.
 */
#include "vmlinux.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "sg_bits.h"
#include "sovguard_abi.h"

/* After the ABI: the maps and parser use its layouts. */
#include "net/sg_net_maps.h"
#include "net/sg_net_parse.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define SG_NS_PER_SEC 1000000000ull

/* The generation's maps, looked up once per frame. */
struct sg_gen {
  void* classes;
  struct sg_net_policy* policy;
};

static __always_inline __u32 sg_classify_v4(__u32 gen, const __u8* dst) {
  __u32 addr = ((__u32)dst[0] << 24) | ((__u32)dst[1] << 16) | ((__u32)dst[2] << 8) | dst[3];
  void* dir = bpf_map_lookup_elem(&sg_v4_dir_outer, &gen);
  if (!dir) return 0;
  __u32 bucket = addr >> 20;
  struct sg_v4_dir_bucket* b = bpf_map_lookup_elem(dir, &bucket);
  if (!b) return 0;
  __u32 cls = b->cls[(addr >> 8) & (SG_V4_DIR_SLOTS - 1)];
  if (!(cls & SG_V4_DIR_BLOCK)) return cls;
  void* l2 = bpf_map_lookup_elem(&sg_v4_l2_outer, &gen);
  if (!l2) return 0;
  __u32 block = cls & ~SG_V4_DIR_BLOCK;
  struct sg_v4_block* blk = bpf_map_lookup_elem(l2, &block);
  if (!blk) return 0;
  return blk->cls[addr & (SG_V4_BLOCK_SLOTS - 1)];
}

static __always_inline __u32 sg_classify_v6(__u32 gen, const __u8* dst) {
  void* l1 = bpf_map_lookup_elem(&sg_v6_l1_outer, &gen);
  if (!l1) return 0;
  __u32 top = ((__u32)dst[0] << 8) | dst[1];
  __u32* e = bpf_map_lookup_elem(l1, &top);
  if (!e) return 0;
  __u32 l1v = *e;
  if (!(l1v & SG_V6_L1_BLOCK)) return l1v;
  void* l2 = bpf_map_lookup_elem(&sg_v6_l2_outer, &gen);
  if (!l2) return 0;
  __u32 block = l1v & ~SG_V6_L1_BLOCK;
  struct sg_v6_block* b = bpf_map_lookup_elem(l2, &block);
  if (!b) return 0;
  /* The mask stays an instruction (clang would drop it as redundant): 6.1's verifier loses the
   * bounds of the OR and needs it to index the block. */
  __u32 slot = ((__u32)dst[2] << 8) | dst[3];
  barrier_var(slot);
  __u32 cls = b->cls[slot & (SG_V6_BLOCK_SLOTS - 1)];
  if ((cls & SG_V6_NODE) && cls != SG_V6_TRIE) {
    /* Longer prefixes under this /32: one 256-slot node per further byte, down to /64. */
    void* l3 = bpf_map_lookup_elem(&sg_v6_l3_outer, &gen);
    if (!l3) return 0;
#pragma unroll
    for (int k = 4; k < 8; k++) {
      __u32 node = cls & ~SG_V6_NODE;
      struct sg_v6_node* n = bpf_map_lookup_elem(l3, &node);
      if (!n) return 0;
      cls = n->cls[dst[k]];
      if (!(cls & SG_V6_NODE) || cls == SG_V6_TRIE) break;
    }
    /* A /64 slot never points to a further node: that would be a broken table (fail closed). */
    if ((cls & SG_V6_NODE) && cls != SG_V6_TRIE) return 0;
  }
  if (cls != SG_V6_TRIE) return cls;
  void* trie = bpf_map_lookup_elem(&sg_v6_lpm_outer, &gen);
  if (!trie) return 0;
  struct sg_lpm_v6_key key = {.prefixlen = 128};
  __builtin_memcpy(key.addr, dst, 16);
  __u32* v = bpf_map_lookup_elem(trie, &key);
  return v ? *v : 0;
}

/*
 * IPv4 addresses an IPv6 destination embeds, which a relay or translator on the way would send
 * to: 6to4 2002:AABB:CCDD::/48, NAT64 64:ff9b::/96, IPv4-mapped ::ffff:0:0/96, and Teredo
 * 2001:0::/32 (server in bits 32-63, client in bits 96-127 inverted). Fills v4[0..1] (host order)
 * and returns how many (0 for every other address).
 */
static __always_inline int sg_embedded_v4(const __u8* d, __u32* v4) {
  __u32 w0 = ((__u32)d[0] << 24) | ((__u32)d[1] << 16) | ((__u32)d[2] << 8) | d[3];
  __u32 w1 = ((__u32)d[4] << 24) | ((__u32)d[5] << 16) | ((__u32)d[6] << 8) | d[7];
  __u32 w2 = ((__u32)d[8] << 24) | ((__u32)d[9] << 16) | ((__u32)d[10] << 8) | d[11];
  __u32 w3 = ((__u32)d[12] << 24) | ((__u32)d[13] << 16) | ((__u32)d[14] << 8) | d[15];
  if ((w0 >> 16) == 0x2002) {
    v4[0] = (w0 << 16) | (w1 >> 16);
    return 1;
  }
  if (w0 == 0x20010000) {
    v4[0] = w1;
    v4[1] = ~w3;
    return 2;
  }
  if ((w0 == 0x0064ff9b && w1 == 0 && w2 == 0) || (w0 == 0 && w1 == 0 && w2 == 0x0000ffff)) {
    v4[0] = w3;
    return 1;
  }
  return 0;
}

/* Datasets an embedded IPv4 address lets through (its class's unconditional mask, 0 when it
 * has none: an exception limited to ports never covers a translated destination). */
static __always_inline __u64 sg_allowed_v4(__u32 gen, void* classes, __u32 n_classes, __u32 a) {
  __u8 b[4] = {(__u8)(a >> 24), (__u8)(a >> 16), (__u8)(a >> 8), (__u8)a};
  __u32 cls = sg_classify_v4(gen, b);
  if (cls >= n_classes || cls == 0) return 0;
  struct sg_class* c = bpf_map_lookup_elem(classes, &cls);
  return c ? c->allowed_datasets : 0;
}

/* Token bucket per guest; false (and counted as suppressed) when the guest is over its rate. */
static __always_inline int sg_event_allowed(__u32 slot, __u64 now) {
  struct sg_net_ratelimit* rl = bpf_map_lookup_elem(&sg_ratelimit, &slot);
  if (!rl) return 0;
  __u64 rate = *(volatile __u32*)&sg_cfg.events_per_sec;
  __u32 burst = *(volatile __u32*)&sg_cfg.event_burst;
  int ok = 0;
  /* A flood finds the bucket empty: say so without taking the lock (a racy read can only make
   * this frame take the locked path below, which decides exactly). */
  if (!rate || (*(volatile __u32*)&rl->tokens == 0 &&
                now - *(volatile __u64*)&rl->last_ns < SG_NS_PER_SEC / rate)) {
    __sync_fetch_and_add(&rl->suppressed, 1);
    return 0;
  }
  bpf_spin_lock(&rl->lock);
  if (rate) {
    __u64 elapsed = now - rl->last_ns;
    if (elapsed >= SG_NS_PER_SEC || rl->last_ns == 0) {
      rl->tokens = burst;
      rl->last_ns = now;
    } else {
      __u64 add = elapsed * rate / SG_NS_PER_SEC;
      if (add) {
        __u64 t = rl->tokens + add;
        rl->tokens = t > burst ? burst : t;
        rl->last_ns += add * SG_NS_PER_SEC / rate;
      }
    }
    if (rl->tokens) {
      rl->tokens--;
      ok = 1;
    }
  }
  bpf_spin_unlock(&rl->lock);
  if (!ok) __sync_fetch_and_add(&rl->suppressed, 1);
  return ok;
}

/*
 * The functions below are global (not static, never inlined): the verifier checks each of them
 * once on its own instead of once per path through the caller, which keeps verification of the
 * whole program fast and far from its instruction limit. They take at most five arguments.
 */

/* What the event of a frame needs beyond the frame itself. */
struct sg_decision {
  __u64 broken; /* datasets whose rule the frame broke (residency or quota) */
  __u64 now;
  __u32 cls;
  __u16 country;
  __u8 verdict;
  __u8 reason;
};

static __always_inline const struct sg_net_guest* sg_guest_at(__u32 entry) {
  if (entry == 0 || entry > SG_MAX_GUESTS * 2) return 0;
  /* The mask keeps the verifier's bounds through clang's 32-bit arithmetic (a power of two). */
  return &sg_guest_cfg[(entry - 1) & (SG_MAX_GUESTS * 2 - 1)];
}

__noinline int sg_parse_frame(struct __sk_buff* skb, struct sg_pkt* p) {
  if (!p) return -1;
  return sg_parse(skb, p);
}

__noinline int sg_report(struct __sk_buff* skb, __u32 entry, const struct sg_pkt* p,
                         const struct sg_decision* d) {
  const struct sg_net_guest* g = sg_guest_at(entry);
  if (!g || !p || !d) return 0;
  __u32 slot = g->slot;
  if (!sg_event_allowed(slot, d->now)) return 0;
  struct sg_net_event* ev = bpf_ringbuf_reserve(&sg_events, sizeof(*ev), 0);
  if (!ev) {
    struct sg_net_ratelimit* rl = bpf_map_lookup_elem(&sg_ratelimit, &slot);
    if (rl) __sync_fetch_and_add(&rl->suppressed, 1);
    return 0;
  }
  ev->ts_ns = d->now;
  ev->violating = d->broken;
  ev->guest_slot = slot;
  ev->ifindex = skb->ifindex;
  ev->len = skb->len;
  ev->country = d->country;
  ev->class_id = (__u16)d->cls;
  ev->ethertype = p->ethertype;
  ev->dataset = d->broken ? sg_ctz64(d->broken) : SG_GUEST_DS_NONE;
  ev->verdict = d->verdict;
  ev->reason = d->reason;
  ev->family = p->family;
  ev->l4proto = p->l4proto;
  ev->reserved = 0;
  __builtin_memcpy(ev->dst, p->dst, 16);
  bpf_ringbuf_submit(ev, 0);
  return 1;
}

/*
 * Reserve len bytes of the window budget at quota entry idx, starting a new window first if the
 * current one has expired. Returns 1 when the frame fits (and is now accounted), 0 when it would
 * exceed the budget.
 */
__noinline int sg_quota_take(__u32 idx, __u64 budget, __u64 window, __u64 len, __u64 now) {
  struct sg_net_quota* q = bpf_map_lookup_elem(&sg_quotas, &idx);
  if (!q) return 0;
  int ok = 0;
  bpf_spin_lock(&q->lock);
  if (q->window_start_ns == 0 || now - q->window_start_ns >= window) {
    q->window_start_ns = now;
    q->used_bytes = 0;
  }
  if (q->used_bytes + len <= budget) {
    q->used_bytes += len;
    ok = 1;
  } else {
    q->exceeded++;
  }
  bpf_spin_unlock(&q->lock);
  return ok;
}

/* Gives back a reservation of the window that contains now (nothing when it has rolled over). */
__noinline int sg_quota_give(__u32 idx, __u64 window, __u64 len, __u64 now) {
  struct sg_net_quota* q = bpf_map_lookup_elem(&sg_quotas, &idx);
  if (!q) return 0;
  bpf_spin_lock(&q->lock);
  if (now - q->window_start_ns < window && q->used_bytes >= len) q->used_bytes -= len;
  bpf_spin_unlock(&q->lock);
  return 0;
}

/*
 * Egress quotas: reserve the frame in every quota'd dataset the guest holds; if one in enforce mode
 * is over budget, give the reservations back and return 1 (drop). *violating gets the datasets
 * over budget.
 */
__noinline int sg_quota_check(__u32 entry, __u32 gen, __u64 len, __u64 now, __u64* violating) {
  const struct sg_net_guest* g = sg_guest_at(entry);
  if (!g || !violating) return 0;
  *violating = 0;
  void* polmap = bpf_map_lookup_elem(&sg_policy_outer, &gen);
  if (!polmap) return 0;
  __u32 zero = 0;
  struct sg_net_policy* pol = bpf_map_lookup_elem(polmap, &zero);
  if (!pol) return 0;
  __u64 quota_mask = pol->quota_mask;
  __u32 slot = g->slot;
  if (slot >= SG_MAX_GUESTS) return 0;
  __u32 reserved = 0;
  __u64 over = 0;
  for (int i = 0; i < SG_MAX_GUEST_DATASETS; i++) {
    if (i >= g->n_ds) break;
    __u32 d = g->ds[i];
    if (d == SG_GUEST_DS_NONE) continue;
    d &= SG_MAX_DATASETS - 1;
    if (!((quota_mask >> d) & 1)) continue;
    if (sg_quota_take(slot * SG_MAX_GUEST_DATASETS + i, pol->ds[d].quota_bytes,
                      pol->ds[d].quota_window_ns, len, now))
      reserved |= 1u << i;
    else
      over |= 1ull << d;
  }
  *violating = over;
  if (!(over & pol->enforce_mask)) return 0;
  for (int i = 0; i < SG_MAX_GUEST_DATASETS; i++) {
    if (!((reserved >> i) & 1)) continue;
    __u32 d = g->ds[i] & (SG_MAX_DATASETS - 1);
    sg_quota_give(slot * SG_MAX_GUEST_DATASETS + i, pol->ds[d].quota_window_ns, len, now);
  }
  return 1;
}

/*
 * Datasets a port-limited exception class admits for this frame (*allowed): the rules of rule set
 * `set` whose protocol is the frame's and whose port range holds its destination port. A frame
 * without a parsed, unfragmented TCP/UDP header matches nothing.
 */
__noinline int sg_port_allowed(struct __sk_buff* skb, const struct sg_pkt* p, __u32 gen, __u32 set,
                               __u64* allowed) {
  if (!p || !allowed) return 0;
  *allowed = 0;
  if (p->l4off == 0 || (p->l4proto != 6 && p->l4proto != 17)) return 0;
  void* polmap = bpf_map_lookup_elem(&sg_policy_outer, &gen);
  if (!polmap) return 0;
  __u32 zero = 0;
  struct sg_net_policy* pol = bpf_map_lookup_elem(polmap, &zero);
  if (!pol || set >= pol->n_rulesets || set >= SG_PORT_RULESETS) return 0;
  __be16 port;
  if (bpf_skb_load_bytes(skb, p->l4off + 2, &port, sizeof(port)) < 0) return 0;
  __u16 dport = bpf_ntohs(port);
  __u64 m = 0;
  /* The compiler knows set < SG_PORT_RULESETS and would drop the mask; the verifier needs it. */
  asm volatile("" : "+r"(set));
  const struct sg_port_ruleset* rs = &pol->rulesets[set & (SG_PORT_RULESETS - 1)];
  for (int i = 0; i < SG_PORT_RULES; i++) {
    const struct sg_port_rule* r = &rs->rule[i];
    if (!r->datasets) break;
    if (r->proto == p->l4proto && dport >= r->port_lo && dport <= r->port_hi) m |= r->datasets;
  }
  *allowed = m;
  return 0;
}

/* Per-CPU counters of every dataset the guest holds. */
__noinline int sg_count(__u32 entry, __u64 broken, __u64 enforce, int drop, __u64 len) {
  const struct sg_net_guest* g = sg_guest_at(entry);
  if (!g) return 0;
  __u32 slot = g->slot;
  if (slot >= SG_MAX_GUESTS) return 0;
  for (int i = 0; i < SG_MAX_GUEST_DATASETS; i++) {
    if (i >= g->n_ds) break;
    __u32 d = g->ds[i];
    if (d == SG_GUEST_DS_NONE) continue;
    __u64 bit = 1ull << (d & (SG_MAX_DATASETS - 1));
    __u32 idx = slot * SG_MAX_GUEST_DATASETS + i;
    struct sg_net_counters* c = bpf_map_lookup_elem(&sg_counters, &idx);
    if (!c) continue;
    if (!drop) {
      c->packets++;
      c->bytes += len;
    }
    if (broken & bit) {
      if (enforce & bit) {
        c->dropped_packets++;
        c->dropped_bytes += len;
      } else {
        c->would_drop_packets++;
        c->would_drop_bytes += len;
      }
    }
  }
  return 0;
}

SEC("tc")
int sg_net_egress(struct __sk_buff* skb) {
#ifdef SG_NET_VARIANT
  /* Test builds of an "upgraded" object: one more instruction (so another tag), same behaviour. */
  asm volatile("r0 = 0" ::: "r0");
#endif
  __u32 ifindex = skb->ifindex;
  __u32 entry;
  if (ifindex < SG_GUEST_INDEX_DIRECT) {
    entry = *(volatile __u32*)&sg_guest_index[ifindex];
  } else {
    __u32* e = bpf_map_lookup_elem(&sg_guests, &ifindex);
    entry = e ? *e : 0;
  }
  const struct sg_net_guest* g = sg_guest_at(entry);
  if (!g) return SG_TC_ACT_SHOT; /* an interface nobody registered: fail closed */

  struct sg_pkt p = {};
  int malformed = sg_parse_frame(skb, &p) < 0;
  if (!malformed && p.control) return SG_TC_ACT_OK;

  __u64 held = g->datasets;
  __u64 len = skb->len;
  __u32 gen = *(volatile __u32*)&sg_cfg.active_gen & (SG_NET_GENERATIONS - 1);
  struct sg_net_policy* pol = 0;
  void* classes = bpf_map_lookup_elem(&sg_classes_outer, &gen);
  void* polmap = bpf_map_lookup_elem(&sg_policy_outer, &gen);
  if (polmap) {
    __u32 zero = 0;
    pol = bpf_map_lookup_elem(polmap, &zero);
  }

  struct sg_decision d = {};
  __u64 allowed = 0;
  __u64 enforce = ~0ull; /* without a policy everything is enforced */
  __u64 quota_mask = 0;
  if (!pol || !classes) {
    d.reason = SG_NET_REASON_NO_POLICY;
  } else {
    enforce = pol->enforce_mask;
    quota_mask = pol->quota_mask;
    if (malformed) {
      d.reason = SG_NET_REASON_MALFORMED;
    } else if (p.family == 4 || p.family == 6) {
      __u32 cls = p.family == 4 ? sg_classify_v4(gen, p.dst) : sg_classify_v6(gen, p.dst);
      if (cls >= pol->n_classes) cls = 0;
      struct sg_class* c = cls ? bpf_map_lookup_elem(classes, &cls) : 0;
      if (c) {
        d.cls = cls;
        d.country = c->country;
        allowed = c->allowed_datasets; /* exceptions too: only the datasets that list them */
        d.reason = SG_NET_REASON_RESIDENCY;
        if (c->flags & SG_CLASS_PORTS) {
          __u64 by_port = 0;
          sg_port_allowed(skb, &p, gen, c->flags >> SG_CLASS_RULESET_SHIFT, &by_port);
          allowed |= by_port;
        }
        __u32 v4[2] = {};
        int n = (p.family == 6 && allowed) ? sg_embedded_v4(p.dst, v4) : 0;
        if (n > 0) allowed &= sg_allowed_v4(gen, classes, pol->n_classes, v4[0]);
        if (n > 1) allowed &= sg_allowed_v4(gen, classes, pol->n_classes, v4[1]);
      } else {
        d.reason = SG_NET_REASON_UNKNOWN; /* class 0: allowed for nobody */
      }
    } else {
      d.reason = SG_NET_REASON_NON_IP;
#pragma unroll
      for (int i = 0; i < SG_MAX_GUEST_ETHERTYPES; i++)
        if (g->ethertypes[i] && g->ethertypes[i] == p.ethertype) allowed = ~0ull;
    }
  }

  __u64 violating = held & ~allowed;
  int drop = (violating & enforce) != 0 || d.reason == SG_NET_REASON_NO_POLICY;
  __u64 over = 0;
  if (!drop && (held & quota_mask)) {
    d.now = bpf_ktime_get_boot_ns();
    drop = sg_quota_check(entry, gen, len, d.now, &over);
    if (!violating && over) d.reason = SG_NET_REASON_QUOTA;
  }
  d.broken = violating | over;
  if (held) sg_count(entry, d.broken, enforce, drop, len);
  if (d.broken || drop) {
    if (!d.now) d.now = bpf_ktime_get_boot_ns();
    d.verdict = drop ? SG_VERDICT_DROP : SG_VERDICT_AUDIT;
    sg_report(skb, entry, &p, &d);
  }
  return drop ? SG_TC_ACT_SHOT : SG_TC_ACT_OK;
}
