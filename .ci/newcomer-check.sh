#!/usr/bin/env bash
# The README's newcomer sequence on this machine, as CI checks around the test suite (.ci/test.sh
# runs `pre` before ctest and `post` after it, so the suite runs on a host a newcomer left as the
# README says: daemon stopped, enforcement pinned, libvirtd/virtlogd/swtpm and the hook left).
#   pre   host snapshot; start-node.sh until sovguardd is ready; Ctrl-C (SIGINT to its process
#         group, as a terminal sends it); then what its message says keeps running must: every
#         process it names runs, every one it started is named, the pins and the storage programs
#         on the machine cgroup stay, the hook is where it says, sovguardd is gone.
#   post  start-node.sh --demo until ready; demo.sh up: the demo guest covered, its allowed pings
#         counted by sovguardd and arriving, its forbidden ones counted as dropped and none
#         arriving (nftables counters in the destination namespace); Ctrl-C while the guest still
#         runs; start-node.sh --undo (no --force) stops and undefines the guest, releases the
#         enforcement; then the host must be as pre's snapshot found it (host-check.sh).
# usage: newcomer-check.sh pre|post. Root. SOVGUARD_BUILD_DIR: a build in which sovguardd,
# sovguardctl, the hook and sovguard-verify are built (default build/test): it is not reconfigured.
# Logs in BUILD/ci/newcomer-*. Exit 0 when every check held, 1 with "newcomer-check: FAILED: ...".
set -uo pipefail
[[ -z ${SOVGUARD_BUILD_DIR:-} ]] || SOVGUARD_BUILD_DIR=$(realpath -m "$SOVGUARD_BUILD_DIR")
cd "$(dirname "$0")/.."
root=$(pwd)
export SOVGUARD_BUILD_DIR=${SOVGUARD_BUILD_DIR:-$root/build/test}
build=$SOVGUARD_BUILD_DIR
ctl=$build/enforcer/ctl/sovguardctl
out=$build/ci
snapshot=$out/host-before-newcomer.txt
lock=/run/sovguard/sovguardd.lock
pins=/sys/fs/bpf/sovguard
hook=/etc/libvirt/hooks/qemu.d/sovguard
demo=sovguard-demo
ready_seconds=300 # Debug+ASan daemon on a loaded 2-core host: 11-26 s measured; a bound only

failures=0
fail() {
  echo "newcomer-check: FAILED: $*"
  failures=$((failures + 1))
}
# A failed stage leaves no daemon running (pre: the suite comes next), post also no demo or node.
cleanup_on_die=0 node_pid=
die() {
  echo "newcomer-check: FAILED: $*"
  if node_alive; then
    kill -INT -- "-$node_pid"
    for ((i = 0; i < 600; i++)); do node_alive || break; sleep 0.1; done
  fi
  ((cleanup_on_die)) && bash .ci/start-node.sh --undo --force
  exit 1
}
# start-node.sh runs (not a zombie: this shell reaps it only in `wait`).
node_alive() { [[ -n $node_pid ]] && grep -q '^State:[[:space:]]*[^Z]' "/proc/$node_pid/status" 2>/dev/null; }
daemon_runs() { [[ -f $lock ]] && ! flock -n "$lock" true; }
# libvirtd, virtlogd and swtpm processes as "comm pid" lines.
services() { ps -eo comm=,pid= | awk '$1 ~ /^(libvirtd|virtlogd|swtpm)$/' | sort; }

# start-node.sh ARGS... in its own session (a terminal's foreground process group), output to
# LOG; returns once sovguardd logged "ready" (sets node_pid), fails on an early exit or timeout.
start_node() {
  local log=$1
  shift
  # stderr, not the journal, so its "ready" line is in LOG.
  env -u JOURNAL_STREAM setsid bash .ci/start-node.sh "$@" >"$log" 2>&1 </dev/null &
  node_pid=$!
  local i
  for ((i = 0; i < ready_seconds * 10; i++)); do
    grep -q 'sovguardd: ready, but NOT ENFORCED' "$log" &&
      { tail -30 "$log"; die "start-node.sh $*: the daemon runs NOT ENFORCED (above)"; }
    grep -q 'sovguardd: ready$' "$log" && return 0
    node_alive || { tail -30 "$log"; die "start-node.sh $* exited before sovguardd was ready (above; $log)"; }
    sleep 0.1
  done
  tail -30 "$log"
  die "start-node.sh $*: sovguardd not ready in $ready_seconds s ($log)"
}

# Ctrl-C: SIGINT to start-node's process group, then it must exit within 60 s.
interrupt_node() {
  local log=$1 i
  kill -INT -- "-$node_pid" || die "kill -INT -$node_pid"
  for ((i = 0; i < 600; i++)); do node_alive || break; sleep 0.1; done
  ! node_alive || { kill -KILL -- "-$node_pid"; die "start-node.sh still runs 60 s after Ctrl-C ($log)"; }
  wait "$node_pid" 2>/dev/null
  daemon_runs && fail "sovguardd still holds $lock after Ctrl-C"
  grep -q '^start-node: sovguardd stopped; its kernel enforcement stays in force\.$' "$log" ||
    fail "after Ctrl-C start-node did not say that the kernel enforcement stays in force ($log)"
  grep -q '^start-node: undo all of it with: bash .ci/start-node.sh --undo' "$log" ||
    fail "after Ctrl-C start-node did not name --undo ($log)"
}

# What the Ctrl-C message says keeps running must, and what runs that start-node started (not in
# BEFORE, a services() list) must be named in it.
check_message() {
  local log=$1 before=$2 named comm pid
  named=$(sed -n 's/^start-node: still running, started for this node: //p' "$log" |
    grep -oE '[a-z]+ \(pid [0-9]+\)' | sed -E 's/ \(pid ([0-9]+)\)/ \1/')
  while read -r comm pid; do
    [[ -n $comm ]] || continue
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] ||
      fail "the Ctrl-C message names $comm (pid $pid), which does not run"
  done <<<"$named"
  while read -r comm pid; do
    [[ -n $comm ]] || continue
    grep -qx "$comm $pid" <<<"$before" && continue
    grep -qx "$comm $pid" <<<"$named" ||
      fail "$comm (pid $pid) started with the node and still runs, but the Ctrl-C message does not name it"
  done < <(services)
  [[ -n $(find "$pins" -mindepth 1 -maxdepth 1 2>/dev/null) ]] ||
    fail "the message says enforcement stays in force, but $pins holds no pins"
  local machine
  machine=$(find /sys/fs/cgroup -maxdepth 3 -type d \( -name machine -o -name machine.slice \) | head -1)
  [[ -n $machine ]] && [[ -n $(bpftool cgroup show "$machine" 2>/dev/null | awk 'NR > 1') ]] ||
    fail "the message says enforcement stays in force, but no program is attached to the machine cgroup ${machine:-(none)}"
  if [[ -L $hook ]]; then
    grep -q "^start-node: the libvirt hook $hook points into" "$log" ||
      fail "the hook $hook is left, but the Ctrl-C message does not say so"
  else
    grep -q '^start-node: the libvirt hook' "$log" && fail "the Ctrl-C message names a hook that is not there"
  fi
}

pre() {
  daemon_runs && die "a sovguardd runs here (pid $(cat $lock)): stop it (or bash .ci/start-node.sh --undo) first"
  [[ -e /run/sovguard-start-node ]] &&
    die "/run/sovguard-start-node exists: a node start-node.sh started is left; bash .ci/start-node.sh --undo first"
  # Mounted first, as run-tests.sh does (sovguardd and the harness mount them where missing).
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
  mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security
  bash .ci/host-check.sh snapshot "$snapshot" || die "host snapshot failed"
  local before log=$out/newcomer-pre.log
  before=$(services)
  echo "newcomer-check pre: start-node.sh (log $log)"
  start_node "$log"
  interrupt_node "$log"
  check_message "$log" "$before"
  sed -n '/^start-node: sovguardd stopped/,$p' "$log"
  # Left as a newcomer leaves it (daemon stopped, pins, cgroup programs, libvirtd, swtpm, hook):
  # the suite runs on top of it, and its host check holds it to what it found.
}

post() {
  daemon_runs && die "a sovguardd runs here (pid $(cat $lock)): stop it first"
  if [[ ! -f $snapshot ]]; then
    echo "newcomer-check post: no snapshot from pre ($snapshot): taking it now"
    bash .ci/host-check.sh snapshot "$snapshot" || die "host snapshot failed"
  fi
  local before log=$out/newcomer-post.log
  before=$(services)
  cleanup_on_die=1
  echo "newcomer-check post: start-node.sh --demo (log $log)"
  start_node "$log" --demo
  echo "newcomer-check post: demo.sh up (log $out/newcomer-demo.log)"
  if ! bash .ci/demo.sh up >"$out/newcomer-demo.log" 2>&1; then
    tail -30 "$out/newcomer-demo.log"
    fail "demo.sh up failed (above)"
  else
    demo_checks
  fi
  # Ctrl-C while the demo guest still runs, then --undo without --force.
  interrupt_node "$log"
  check_message "$log" "$before"
  echo "newcomer-check post: start-node.sh --undo (demo guest left running)"
  cleanup_on_die=0
  if ! bash .ci/start-node.sh --undo >"$out/newcomer-undo.log" 2>&1; then
    cat "$out/newcomer-undo.log"
    fail "start-node.sh --undo (no --force) failed with the demo guest left running (above)"
  else
    cat "$out/newcomer-undo.log"
  fi
  virsh -q -c qemu:///system dominfo "$demo" >/dev/null 2>&1 && fail "--undo left the demo guest $demo defined"
  ip netns list | grep -qw sgdemo-dst && fail "--undo left the demo's network namespace sgdemo-dst"
  [[ -e $pins ]] && fail "--undo left pins in $pins: $(find "$pins" | head -5 | tr '\n' ' ')"
  [[ -e $hook || -L $hook ]] && fail "--undo left the hook $hook"
  [[ -e /run/sovguard-start-node ]] && fail "--undo left /run/sovguard-start-node"
  # Everything else: the host as pre's snapshot found it (before the first start-node).
  bash .ci/host-check.sh compare "$snapshot" ||
    fail "the newcomer sequence (start-node .. --undo) left the host changed (above)"
}

# The demo guest covered, its traffic counted by sovguardd and at the destination.
demo_checks() {
  local status allowed forbidden i
  # Bounded poll: sovguardd's counters and the destination's, until both kinds were seen.
  for ((i = 0; i < 300; i++)); do
    status=$("$ctl" status 2>&1)
    allowed=$(ip netns exec sgdemo-dst nft -j list counter inet sgdemo allowed | sed -n 's/.*"packets": *\([0-9]*\).*/\1/p')
    grep -qE "^  dataset demo-de-only .*passed [1-9][0-9]* .*dropped [1-9]" <<<"$status" &&
      ((${allowed:-0} >= 3)) && break
    sleep 0.1
  done
  forbidden=$(ip netns exec sgdemo-dst nft -j list counter inet sgdemo forbidden | sed -n 's/.*"packets": *\([0-9]*\).*/\1/p')
  echo "newcomer-check post: at the destination: allowed ${allowed:-?}, forbidden ${forbidden:-?}"
  grep -E "^  dataset demo-de-only " <<<"$status"
  ((${allowed:-0} >= 3)) || fail "fewer than 3 allowed pings arrived at 198.51.100.1 (${allowed:-none})"
  [[ $forbidden == 0 ]] || fail "forbidden packets arrived at 203.0.113.1: ${forbidden:-unreadable}"
  grep -qE "^  dataset demo-de-only .*dropped [1-9]" <<<"$status" ||
    fail "sovguardctl status counts no dropped packet for demo-de-only"
  python3 - "/run/sovguard/status.json" "$demo" <<'EOF' || fail "the demo guest is not covered (above)"
import json, sys
status = json.load(open(sys.argv[1]))
guests = [g for g in status["guests"] if g["name"] == sys.argv[2]]
problems = []
if len(guests) != 1:
    problems.append(f"{len(guests)} guests named {sys.argv[2]} in the status")
for g in guests:
    if [d["id"] for d in g["datasets"]] != ["demo-de-only"]:
        problems.append(f"datasets {g['datasets']}, not demo-de-only")
    if not g["attachments"] or not all(a["attached"] for a in g["attachments"]):
        problems.append(f"attachments {g['attachments']}")
    if not g["interfaces"] or not all(n["covered"] for n in g["interfaces"]):
        problems.append(f"interfaces {g['interfaces']}")
    if g.get("error"):
        problems.append(f"error {g['error']}")
for p in problems:
    print("newcomer-check:", p)
sys.exit(1 if problems else 0)
EOF
  # The counters are exported from the kernel maps on a period: poll, bounded (30 s).
  local seen=0 i
  for ((i = 0; i < 30; i++)); do
    if curl -sf 127.0.0.1:9477/metrics |
      grep -E '^sovguard_guest_packets_total\{' | grep "guest=\"$demo\"" |
      grep 'dataset="demo-de-only"' | grep 'verdict="drop"' | grep -qE ' [1-9][0-9]*$'; then
      seen=1
      break
    fi
    sleep 1
  done
  ((seen)) || fail "the metrics count no dropped packet of $demo within 30 s (sovguard_guest_packets_total, verdict drop)"
}

[[ $(id -u) == 0 ]] || die "run as root"
[[ -x $build/enforcer/daemon/sovguardd && -x $ctl ]] || die "$build: sovguardd/sovguardctl not built"
mkdir -p "$out"
case ${1:-} in
  pre) pre ;;
  post) post ;;
  *) echo "usage: $0 pre|post" >&2; exit 2 ;;
esac
if ((failures)); then
  echo "newcomer-check $1: FAILED ($failures check(s) above; $SECONDS s)"
  exit 1
fi
echo "newcomer-check $1: passed in $SECONDS s"
