/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Frame parsing for the residency datapath: Ethernet with up to two VLAN tags (802.1Q / 802.1ad;
 * on a real tap the kernel has usually moved the outer tag to skb metadata already), IPv4 with
 * options, IPv6 with extension headers. Anything truncated or invalid is "malformed", which the
 * caller treats like a destination no dataset may reach (fail closed).
 */
#ifndef SOVGUARD_BPF_NET_SG_NET_PARSE_H_
#define SOVGUARD_BPF_NET_SG_NET_PARSE_H_

#define SG_ETH_P_IP 0x0800
#define SG_ETH_P_ARP 0x0806
#define SG_ETH_P_8021Q 0x8100
#define SG_ETH_P_8021AD 0x88A8
#define SG_ETH_P_IPV6 0x86DD

#define SG_IPPROTO_HOPOPTS 0
#define SG_IPPROTO_UDP 17
#define SG_IPPROTO_ROUTING 43
#define SG_IPPROTO_FRAGMENT 44
#define SG_IPPROTO_AH 51
#define SG_IPPROTO_ICMPV6 58
#define SG_IPPROTO_DSTOPTS 60

/* Extension headers walked before giving up (fail closed: more is malformed). */
#define SG_MAX_IPV6_EXT 6
/* IPv4 options: at most 40 bytes, each option at least one byte; the walk covers all of them. */
#define SG_MAX_IPV4_OPT_BYTES 40
/* Largest IPv6 payload of a neighbour-discovery or MLD frame that passes unclassified: a whole
 * packet within the IPv6 minimum MTU (1280 bytes), which RFC 4861 sets as the redirect's bound. */
#define SG_ND_MAX_PAYLOAD (1280 - 40)

struct sg_eth {
  __u8 dst[6];
  __u8 src[6];
  __be16 proto;
};
struct sg_vlan {
  __be16 tci;
  __be16 proto;
};
struct sg_ext {
  __u8 nexthdr;
  __u8 hdrlen;
  __u8 type;    /* routing header: routing type */
  __u8 segleft; /* routing header: segments left */
  __be16 frag_off;
};
struct sg_ports {
  __be16 sport;
  __be16 dport;
};

struct sg_pkt {
  __u8 family;    /* 4, 6, 0 = not IP */
  __u8 l4proto;   /* last next-header seen */
  __u8 control;   /* ARP, ND/RS/RA, MLD, DHCP broadcast: always passes, never counted */
  __u8 malformed; /* truncated, invalid, or source-routed */
  __u16 ethertype;
  __u8 dst[16];
  __u16 l4off; /* offset of an unfragmented frame's L4 header (ports); 0 = none to match */
};

/* One IPv4 option per step: verdict 1 when the options end cleanly, -1 on a source route or an
 * option that runs past the header. */
struct sg_opt_walk {
  __u8 buf[64]; /* the option bytes, zero past len */
  __u32 pos;
  __u32 len;
  int verdict; /* 0 while walking */
};
static long sg_opt_step(__u64 index, void* ctx) {
  struct sg_opt_walk* w = ctx;
  __u32 pos = w->pos;
  if (pos >= w->len) {
    w->verdict = 1;
    return 1;
  }
  __u8 t = w->buf[pos & 63];
  if (t == 0) { /* end of options: the rest is padding */
    w->verdict = 1;
    return 1;
  }
  if (t == 1) { /* no-op */
    w->pos = pos + 1;
    return 0;
  }
  __u8 l = w->buf[(pos + 1) & 63];
  if (t == 0x83 || t == 0x89 || l < 2 || pos + l > w->len) { /* LSRR, SSRR, broken length */
    w->verdict = -1;
    return 1;
  }
  w->pos = pos + l;
  return 0;
}

static __always_inline int sg_parse_ipv4(struct __sk_buff* skb, void* data, void* data_end,
                                         __u32 off, struct sg_pkt* p) {
  struct iphdr* ip = data + off;
  if ((void*)(ip + 1) > data_end) return -1;
  if (ip->version != 4 || ip->ihl < 5) return -1;
  p->family = 4;
  p->l4proto = ip->protocol;
  __builtin_memcpy(p->dst, &ip->daddr, 4);
  __u32 hlen = ip->ihl * 4;
  if (data + off + hlen > data_end) return -1; /* options cut off */
  if (hlen > 20) {
    /* Loose/strict source route options would forward to addresses we never classified. Every
     * option is walked to the end of the header (bpf_loop: the verifier checks one step, not
     * every path through 40 of them); a walk that does not finish there is malformed. */
    struct sg_opt_walk w = {};
    /* hlen is 24..60 here. Built to start at 4, so that a verifier that does not narrow a
     * minimum from a "!= 0" test (Debian 12's 6.1) also sees a non-zero load size. */
    __u32 len = ((hlen - 24) & 63) + 4;
    if (len > SG_MAX_IPV4_OPT_BYTES) return -1;
    if (bpf_skb_load_bytes(skb, off + 20, w.buf, len) < 0) return -1;
    w.len = len;
    bpf_loop(SG_MAX_IPV4_OPT_BYTES, sg_opt_step, &w, 0);
    if (w.verdict != 1) return -1;
  }
  if ((ip->frag_off & bpf_htons(0x3fff)) == 0) p->l4off = off + hlen;
  /* Only the broadcast DHCP discover/request reaches the host unclassified. */
  if (ip->protocol == SG_IPPROTO_UDP && (ip->frag_off & bpf_htons(0x3fff)) == 0 &&
      ip->daddr == 0xffffffff) {
    struct sg_ports* ports = data + off + hlen;
    if ((void*)(ports + 1) > data_end) return -1;
    if (ports->sport == bpf_htons(68) && ports->dport == bpf_htons(67)) p->control = 1;
  }
  return 0;
}

static __always_inline int sg_parse_ipv6(void* data, void* data_end, __u32 off, struct sg_pkt* p) {
  struct ipv6hdr* ip6 = data + off;
  if ((void*)(ip6 + 1) > data_end) return -1;
  if (ip6->version != 6) return -1;
  p->family = 6;
  __builtin_memcpy(p->dst, &ip6->daddr, 16);
  __u8 nh = ip6->nexthdr;
  __u32 l4 = off + sizeof(struct ipv6hdr);
  int first_fragment = 1, fragment = 0;
  int i;
  for (i = 0; i < SG_MAX_IPV6_EXT; i++) {
    if (nh != SG_IPPROTO_HOPOPTS && nh != SG_IPPROTO_DSTOPTS && nh != SG_IPPROTO_ROUTING &&
        nh != SG_IPPROTO_FRAGMENT && nh != SG_IPPROTO_AH)
      break;
    if (l4 > 1024) return -1;
    struct sg_ext* h = data + l4;
    if ((void*)(h + 1) > data_end) return -1;
    if (nh == SG_IPPROTO_ROUTING && h->segleft != 0) return -1; /* e.g. SRv6: real target hidden */
    if (nh == SG_IPPROTO_FRAGMENT) {
      fragment = 1;
      if (h->frag_off & bpf_htons(0xfff8)) first_fragment = 0;
      l4 += 8;
    } else if (nh == SG_IPPROTO_AH) {
      l4 += ((__u32)h->hdrlen + 2) * 4;
    } else {
      l4 += ((__u32)h->hdrlen + 1) * 8;
    }
    nh = h->nexthdr;
  }
  if (i == SG_MAX_IPV6_EXT) return -1; /* a deeper chain could hide a routing header */
  p->l4proto = nh;
  if (!first_fragment || l4 > 1024) return 0;
  if (!fragment) p->l4off = l4;
  if (nh == SG_IPPROTO_ICMPV6) {
    __u8* type = data + l4;
    if ((void*)(type + 1) > data_end) return -1;
    /* Neighbour discovery (RS, RA, NS, NA, redirect; hop limit 255, RFC 4861) and MLD pass
     * unclassified only to link-scope destinations, which no router forwards: link-local unicast
     * fe80::/10 and link-scope multicast ff02::/16 (solicited-node included), and only up to the
     * size real ND never exceeds. ND to any other destination (a global gateway address, for
     * unreachability detection) is classified like every packet. */
    int link_scope = (p->dst[0] == 0xfe && (p->dst[1] & 0xc0) == 0x80) ||
                     (p->dst[0] == 0xff && p->dst[1] == 0x02);
    if (link_scope && bpf_ntohs(ip6->payload_len) <= SG_ND_MAX_PAYLOAD) {
      if (*type >= 133 && *type <= 137 && ip6->hop_limit == 255) p->control = 1;
      if ((*type == 130 || *type == 131 || *type == 132 || *type == 143) && p->dst[0] == 0xff)
        p->control = 1;
    }
  } else if (nh == SG_IPPROTO_UDP) {
    struct sg_ports* ports = data + l4;
    if ((void*)(ports + 1) > data_end) return -1;
    /* DHCPv6 to All_DHCP_Relay_Agents_and_Servers (ff02::1:2). */
    if (ports->sport == bpf_htons(546) && ports->dport == bpf_htons(547) && p->dst[0] == 0xff &&
        p->dst[1] == 0x02 && p->dst[13] == 0x01 && p->dst[15] == 0x02 && p->dst[2] == 0 &&
        p->dst[11] == 0 && p->dst[12] == 0 && p->dst[14] == 0)
      p->control = 1;
  }
  return 0;
}

/* Returns 0 when parsed (p filled), -1 when malformed. */
static __always_inline int sg_parse(struct __sk_buff* skb, struct sg_pkt* p) {
  void* data = (void*)(long)skb->data;
  void* data_end = (void*)(long)skb->data_end;
  struct sg_eth* eth = data;
  if ((void*)(eth + 1) > data_end) return -1;
  __be16 proto = eth->proto;
  __u32 off = sizeof(*eth);
#pragma unroll
  for (int i = 0; i < 2; i++) {
    if (proto != bpf_htons(SG_ETH_P_8021Q) && proto != bpf_htons(SG_ETH_P_8021AD)) break;
    struct sg_vlan* v = data + off;
    if ((void*)(v + 1) > data_end) return -1;
    proto = v->proto;
    off += sizeof(*v);
  }
  p->ethertype = bpf_ntohs(proto);
  if (proto == bpf_htons(SG_ETH_P_8021Q) || proto == bpf_htons(SG_ETH_P_8021AD)) return -1;
  if (proto == bpf_htons(SG_ETH_P_IP)) return sg_parse_ipv4(skb, data, data_end, off, p);
  if (proto == bpf_htons(SG_ETH_P_IPV6)) return sg_parse_ipv6(data, data_end, off, p);
  if (proto == bpf_htons(SG_ETH_P_ARP)) p->control = 1;
  return 0;
}

#endif /* SOVGUARD_BPF_NET_SG_NET_PARSE_H_ */
