/* SPDX-License-Identifier: GPL-2.0 */
/* The storage programs built with one extra check (never true): other tags, the same maps and
 * behaviour. Stands in for an upgraded BPF object in the upgrade test. */
#define SG_STORAGE_VARIANT 1
#include "storage/storage_guard.bpf.c"
