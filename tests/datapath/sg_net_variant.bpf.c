/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The residency program built with one extra instruction: another tag, the same maps and
 * behaviour. Stands in for an upgraded BPF object in the upgrade test. */
#define SG_NET_VARIANT 1
#include "net/sg_net.bpf.c"
