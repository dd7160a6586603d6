#!/usr/bin/env bash
# The newcomer demo: one labelled TCG guest on the local libvirt whose forbidden traffic sovguardd
# refuses, on a network that never leaves this machine.
#
#   bash .ci/start-node.sh --demo   # shell 1: the node with the demo policy (runs `demo.sh policy`)
#   bash .ci/demo.sh up             # shell 2: network + guest, then what status and metrics show
#   bash .ci/demo.sh show           # the same report again
#   bash .ci/demo.sh down           # removes the guest, the network and the guest image
#   bash .ci/start-node.sh --undo   # stops what start-node started, removes /var/lib/sovguard-demo
#
# The guest (sovguard-demo: /boot/vmlinuz-* + the test harness's busybox initramfs) holds the
# ENFORCE dataset demo-de-only (examples/demo/demo-policy.textproto) and pings two addresses in the
# network namespace sgdemo-dst: 198.51.100.1 (operator zone DE: allowed) and 203.0.113.1 (zone
# US: forbidden). Topology (documentation addresses only; the bridge has no address and the host
# routes nothing into it):
#   guest eth0 192.0.2.10 -- tap sgdemo-tap --+-- bridge sgdemo-br
#                                             +-- veth sgdemo-r <=> sgdemo-d in netns sgdemo-dst
#                                                 (192.0.2.1/24 gateway, 198.51.100.1, 203.0.113.1)
# nftables counters in sgdemo-dst's prerouting hook count what really arrives there.
set -euo pipefail
# A relative SOVGUARD_BUILD_DIR is the caller's (the hook link into it must be absolute).
[[ -z ${SOVGUARD_BUILD_DIR:-} ]] || SOVGUARD_BUILD_DIR=$(realpath -m "$SOVGUARD_BUILD_DIR")
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/release}
ctl=$build/enforcer/ctl/sovguardctl
uri=qemu:///system
state=/var/lib/sovguard-demo # demo policy, its signing key, the demo node's state (start-node --demo)
run=/run/sovguard-demo       # guest image, domain XML, serial console (demo.sh up .. down)
status_json=/run/sovguard/status.json
name=sovguard-demo tap=sgdemo-tap br=sgdemo-br ns=sgdemo-dst vr=sgdemo-r vd=sgdemo-d
guest_ip=192.0.2.10/24 gw=192.0.2.1 allowed=198.51.100.1 forbidden=203.0.113.1
dataset=demo-de-only

die() {
  echo "demo: $*" >&2
  exit 1
}
[[ $(id -u) == 0 ]] || die "run as root (libvirt qemu:///system, network namespaces)"

# Signed bundle = the shipped default policy (unchanged) + the demo policy, signed by a key made
# for the demo; start-node.sh --demo hands the daemon this bundle and this key directory only.
make_policy() {
  [[ -x $ctl ]] || die "$ctl not built: run bash .ci/start-node.sh --demo"
  mkdir -p "$state/keys"
  chmod 0700 "$state"
  if [[ ! -f $state/signer.key ]]; then
    openssl genpkey -algorithm ed25519 -out "$state/signer.key"
    openssl pkey -in "$state/signer.key" -pubout -out "$state/keys/demo.pem"
  fi
  "$ctl" policy check policy/data/default-eu-eea.textproto examples/demo/demo-policy.textproto
  # Seconds since the epoch: every new bundle is newer than the last one (anti-rollback).
  "$ctl" policy bundle --key "$state/signer.key" --version "$(date +%s)" --issuer sovguard-demo \
    policy/data/default-eu-eea.textproto examples/demo/demo-policy.textproto -o "$state/demo.bundle"
}

counter() { # nftables counter NAME in the destination namespace: packets that arrived there
  ip netns exec "$ns" nft -j list counter inet sgdemo "$1" |
    sed -n 's/.*"packets": *\([0-9]*\).*/\1/p'
}

show() {
  [[ -f $status_json ]] || die "$status_json missing: is sovguardd running?"
  echo "== sovguardctl status (guest $name)"
  "$ctl" status | sed -n "/^policy:/,/^measured:/p;/^$name /,/^\$/p;/^  dataset $dataset /p" |
    grep -v '^measured:' || true
  echo "== curl -s 127.0.0.1:9477/metrics (guest $name)"
  curl -sf 127.0.0.1:9477/metrics | grep -E "^sovguard_(guest_packets_total|violations_total|guest_attached)\{[^}]*$name" ||
    echo "(no per-guest series yet)"
  echo "== packets that arrived in $ns (nftables, before anything there could drop)"
  echo "allowed   $allowed: $(counter allowed)"
  echo "forbidden $forbidden: $(counter forbidden)"
}

up() {
  [[ -x $ctl ]] || die "$ctl not built: run bash .ci/start-node.sh --demo"
  if [[ ! -f /run/sovguard/sovguardd.lock ]] || flock -n /run/sovguard/sovguardd.lock true; then
    die "no sovguardd runs: start bash .ci/start-node.sh --demo first (in another shell)"
  fi
  local source
  source=$("$ctl" status | sed -n 's/^policy: *\([^ ]*\) (sha256.*/\1/p')
  [[ $source == "$state/demo.bundle" ]] ||
    die "the running sovguardd applies '$source', not the demo policy $state/demo.bundle: stop it (Ctrl-C; enforcement stays pinned) and start bash .ci/start-node.sh --demo"
  if virsh -q -c "$uri" dominfo "$name" >/dev/null 2>&1 || ip netns list | grep -qw "$ns"; then
    die "the demo is already up (or half up): bash .ci/demo.sh down first"
  fi
  mkdir -p "$run"
  # The harness's guest: the newest distribution kernel with its modules, busybox initramfs.
  local kernel kver
  kernel=$(ls -1 /boot/vmlinuz-* | sort -V | tail -1)
  kver=${kernel#/boot/vmlinuz-}
  bash tests/harness/build-guest-initramfs.sh "$kver" tests/harness/guest-init.sh "$run/initramfs.cpio.gz"

  trap 'echo "demo: up failed; cleaning up"; down' ERR
  ip netns add "$ns"
  ip link add "$br" type bridge
  ip link add "$vr" type veth peer name "$vd" netns "$ns"
  ip link set "$vr" master "$br" up
  ip link set "$br" up
  ip -n "$ns" link set lo up
  ip -n "$ns" addr add "$gw/24" dev "$vd"
  ip -n "$ns" addr add "$allowed/32" dev "$vd"
  ip -n "$ns" addr add "$forbidden/32" dev "$vd"
  ip -n "$ns" link set "$vd" up
  ip netns exec "$ns" nft -f - <<EOF
table inet sgdemo {
  counter allowed {}
  counter forbidden {}
  chain pre { type filter hook prerouting priority -400;
    ip daddr $allowed counter name allowed
    ip daddr $forbidden counter name forbidden
  }
}
EOF

  local metadata="<sovguard:guest xmlns:sovguard=\"https://sovguard.eu/ns/guest/1\"><sovguard:dataset id=\"$dataset\"/></sovguard:guest>"
  local cmdline="console=ttyS0 quiet panic=-1 sg.ip=$guest_ip sg.gw=$gw sg.allowed=$allowed sg.forbidden=$forbidden sg.interval=0.2"
  sed -e "s|@NAME@|$name|" -e "s|@METADATA@|$metadata|" -e "s|@KERNEL@|$kernel|" \
    -e "s|@INITRD@|$run/initramfs.cpio.gz|" -e "s|@CMDLINE@|$cmdline|" -e "s|@TAP@|$tap|" \
    -e "s|@MAC@|52:54:00:5d:e0:01|" -e "s|@CONSOLE@|$run/console.log|" \
    tests/harness/guest-domain.xml.in >"$run/domain.xml"
  [[ -e /var/log/libvirt/qemu/$name.log ]] || touch "$run/libvirt-log-created"
  virsh -q -c "$uri" define "$run/domain.xml" >/dev/null
  # libvirt's hook asks sovguardd to cover the tap before QEMU runs; a refusal fails the start.
  virsh -q -c "$uri" start "$name"
  ip link set "$tap" master "$br"
  trap - ERR
  echo "demo: guest $name started (TCG); waiting for it to boot (up to 180 s)"
  local i
  for ((i = 0; i < 180; i++)); do
    grep -q "SOVGUARD: ready" "$run/console.log" 2>/dev/null && break
    sleep 1
  done
  grep -q "SOVGUARD: ready" "$run/console.log" 2>/dev/null ||
    die "guest did not boot in 180 s (console: $run/console.log); bash .ci/demo.sh down removes it"
  # Until an allowed packet arrived and the daemon's status counts a refused one (bounded: 30 s).
  for ((i = 0; i < 30; i++)); do
    [[ $(counter allowed) -gt 0 ]] &&
      "$ctl" status | grep -qE "^  dataset $dataset .*dropped [1-9]" && break
    sleep 1
  done
  show
}

# Also for a guest left running when start-node was stopped (Ctrl-C): stopped and undefined the
# same way; its pinned state then names a guest that stopped while no daemon ran, which
# `start-node.sh --undo` releases.
down() {
  trap - ERR
  if virsh -q -c "$uri" dominfo "$name" >/dev/null 2>&1; then
    virsh -q -c "$uri" destroy "$name" >/dev/null 2>&1 || true # not running: nothing to stop
    virsh -q -c "$uri" undefine "$name" >/dev/null
    echo "demo: guest $name destroyed and undefined"
    if [[ ! -f /run/sovguard/sovguardd.lock ]] || flock -n /run/sovguard/sovguardd.lock true; then
      echo "demo: no sovguardd saw $name stop: bash .ci/start-node.sh --undo releases its pinned state"
    fi
  fi
  # libvirt's log of the guest, kept after undefine: removed when up created it
  [[ -f $run/libvirt-log-created ]] && rm -f "/var/log/libvirt/qemu/$name.log"
  if ip link show "$br" >/dev/null 2>&1; then ip link del "$br"; fi
  if ip link show "$vr" >/dev/null 2>&1; then ip link del "$vr"; fi
  if ip netns list | grep -qw "$ns"; then ip netns del "$ns"; fi
  rm -rf "$run"
  echo "demo: network $br/$ns and $run removed"
}

case ${1:-} in
  policy) make_policy ;;
  up) up ;;
  show) show ;;
  down) down ;;
  *) die "usage: bash .ci/demo.sh up|show|down (policy: run by start-node.sh --demo)" ;;
esac
