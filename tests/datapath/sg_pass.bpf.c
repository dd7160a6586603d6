/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* A tc program that passes everything: what a tamperer would put in place of ours. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sg_pass(struct __sk_buff* skb) {
  return 0; /* TC_ACT_OK */
}
