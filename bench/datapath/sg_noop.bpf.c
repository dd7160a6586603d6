/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The baseline for bench_datapath_prog_run: a tc program that does nothing but pass. */
#include "vmlinux.h"

#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int sg_noop(struct __sk_buff* skb) {
  return 0;
}
