#!/usr/bin/env bash
# What the test suite must leave as it found it on the host, as a text snapshot:
#   host-check.sh snapshot FILE   writes the snapshot
#   host-check.sh compare FILE    takes a new one; exit 1 printing every difference, 0 when equal
# Covered: owner/group/mode of libvirt's state and hook directories and the hook files (link
# targets, content digests), bpffs pins, cgroups under libvirt's machine cgroups and the BPF
# programs attached there, network namespaces, host interfaces and their qdiscs and tc filters,
# the root namespace's nftables ruleset, mounts, accounts and groups, sovguard's own state
# directories, and processes a test starts (swtpm, libvirtd, virtlogd, qemu-system, sovguardd,
# dnsmasq, qemu-nbd, headless chromium and its crash handler). Root only. Every section is
# printed even when a command fails (its error is part of the snapshot, so a tool that starts
# failing is a difference too).
set -uo pipefail
export LC_ALL=C

section() { printf '== %s\n' "$1"; }

# Paths with type, owner, group, mode and (for links) target.
files() {
  local p
  for p in "$@"; do
    [[ -e $p || -L $p ]] || { echo "absent $p"; continue; }
    find "$p" -printf '%y %u:%g %m %p -> %l\n' 2>&1 | sort
  done
}
# The same, and a digest of every regular file.
files_and_contents() {
  files "$@"
  local p
  for p in "$@"; do
    [[ -e $p ]] && find "$p" -type f -exec sha256sum {} + 2>&1 | sort -k2
  done
}

snapshot() {
  section "libvirt state and hooks"
  files /var/lib/libvirt /var/cache/libvirt /var/log/libvirt /run/libvirt
  files_and_contents /etc/libvirt/hooks
  section "sovguard state"
  files_and_contents /etc/sovguard /var/lib/sovguard /run/sovguard /run/sovguard-test /usr/sbin/sovguardd \
    /usr/libexec/sovguard /usr/lib/systemd/system/sovguardd.service
  section "packages"
  dpkg-query -W -f='${Package} ${Status}\n' sovguard 2>&1
  section "accounts"
  sha256sum /etc/passwd /etc/group /etc/shadow /etc/gshadow 2>&1
  section "bpffs pins"
  findmnt -rn -t bpf -o TARGET | sort | while read -r m; do find "$m" -printf '%y %m %p\n' | sort; done
  section "machine cgroups"
  find /sys/fs/cgroup -maxdepth 3 -type d \( -name machine -o -name machine.slice \) 2>/dev/null |
    sort | while read -r m; do
      find "$m" -type d | sort | while read -r cg; do
        echo "$cg"
        # Attached programs by type, flags and name (not id: a successor daemon's is new).
        bpftool cgroup show "$cg" 2>&1 | awk 'NR > 1 {$1 = ""; print " " $0}' | sort
      done
    done
  section "network namespaces"
  ip netns list 2>&1 | sort
  section "host interfaces, qdiscs and tc filters"
  ip -o link show 2>&1 | awk -F': ' '{print $2}' | sed 's/@.*//' | sort | while read -r dev; do
    echo "link $dev"
    tc qdisc show dev "$dev" 2>&1 | sed 's/ refcnt [0-9]*//'
    for dir in ingress egress; do
      tc filter show dev "$dev" "$dir" 2>&1 | sed "s/^/$dir: /"
    done
  done
  section "nftables ruleset (root namespace)"
  nft list ruleset 2>&1
  section "mounts"
  # /run/netns itself is iproute2's (made a mount point by the first `ip netns add`, kept for
  # good); the namespaces in it are listed above and mounted below.
  findmnt -rn -o TARGET,FSTYPE,SOURCE 2>&1 | grep -v '^/run/netns ' | sort
  section "processes"
  # Zombies are left out: they hold nothing but a pid, and PID 1 here reaps them late.
  ps -eo stat=,comm=,args= 2>&1 |
    awk '$1 !~ /^Z/ && $2 ~ /^(swtpm|libvirtd|virtlogd|qemu-system-.*|sovguardd|dnsmasq|qemu-nbd|iperf3|chromium|chrome_crashpad.*)$/ {
      $1 = ""; print substr($0, 2) }' | sort
}

case "${1:-}" in
  snapshot)
    [[ $# -eq 2 ]] || { echo "usage: $0 snapshot FILE" >&2; exit 2; }
    snapshot >"$2"
    ;;
  compare)
    [[ $# -eq 2 && -f $2 ]] || { echo "usage: $0 compare FILE (an earlier snapshot)" >&2; exit 2; }
    now=$(mktemp)
    trap 'rm -f "$now"' EXIT
    snapshot >"$now"
    if ! diff -u --label "host before" --label "host after" "$2" "$now"; then
      echo "host-check: the host differs from the snapshot $2 (- before, + after)"
      exit 1
    fi
    echo "host-check: the host is as the snapshot $2 found it"
    ;;
  *)
    echo "usage: $0 snapshot|compare FILE" >&2
    exit 2
    ;;
esac
