#!/usr/bin/env bash
# The README's first command: installs what is needed, builds, and runs sovguardd in the foreground
# on embedded defaults (local libvirt, hardware TPM or a swtpm it starts, the shipped EU/EEA policy
# in audit mode and the shipped jurisdiction table). Ctrl-C stops it; enforcement stays pinned.
#   --demo   the demo node: the shipped default + examples/demo's ENFORCE policy as a bundle signed
#            by a demo key, its state (its own swtpm state, anti-rollback) in /var/lib/sovguard-demo;
#            then `bash .ci/demo.sh up` in another shell
#   --undo [--keep-enforcement] [--force]   removes the demo (guest, also one left running, and its
#            network), stops the daemon and the libvirtd, virtlogd and swtpm started for this
#            script, releases the kernel enforcement (unless asked to keep it; --force: also for
#            guests that stopped while no daemon ran; the demo guest it stopped is released
#            without it), removes the hook it installed, the state directories it created
#            (/var/lib/sovguard), /run/sovguard and /var/lib/sovguard-demo
# SOVGUARD_BUILD_DIR: the build to use (default build/release); one configured already (e.g. CI's
# Debug build/test) keeps its configuration, and only the four programs are brought up to date.
set -euo pipefail
# A relative SOVGUARD_BUILD_DIR is the caller's (the hook link into it must be absolute).
[[ -z ${SOVGUARD_BUILD_DIR:-} ]] || SOVGUARD_BUILD_DIR=$(realpath -m "$SOVGUARD_BUILD_DIR")
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/release}
hook=/etc/libvirt/hooks/qemu.d/sovguard
record=/run/sovguard-start-node # what this script started (tmpfs: gone with a reboot)
demo_state=/var/lib/sovguard-demo
daemon=$build/enforcer/daemon/sovguardd
state=/var/lib/sovguard # the node's state (swtpm, measurements, policy), as sovguardd defaults it
demo_guest=sovguard-demo

mode=node keep_enforcement=0 force=()
args=()
for a in "$@"; do
  case $a in
    --demo) mode=demo ;;
    --undo) mode=undo ;;
    --keep-enforcement) keep_enforcement=1 ;;
    --force) force=(--force) ;; # with --undo: release even while a guest is covered
    *) args+=("$a") ;;
  esac
done

# Pid files of what sovguardd starts when nothing answers (libvirtd -d, virtlogd -d, swtpm).
pidfiles=(/run/libvirtd.pid /run/virtlogd.pid /var/lib/sovguard/swtpm/swtpm.pid
  "$demo_state/state/swtpm/swtpm.pid")
alive() { # PIDFILE: prints the pid when the process named in it runs
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && [[ -e /proc/$pid ]] && grep -qE '^(libvirtd|virtlogd|swtpm)$' "/proc/$pid/comm" &&
    echo "$pid"
}
running_pids() { for f in "${pidfiles[@]}"; do alive "$f" || true; done; }

if [[ $mode == undo ]]; then
  [[ $(id -u) == 0 ]] || { echo "start-node --undo: run as root" >&2; exit 1; }
  undo_before=$(running_pids)
  # 0. The demo, also a guest left running when start-node was stopped: removed while a daemon
  #    that sees its guest stop may still run (release below handles the case where none did).
  if virsh -q -c qemu:///system dominfo "$demo_guest" >/dev/null 2>&1 ||
    ip netns list 2>/dev/null | grep -qw sgdemo-dst || [[ -d /run/sovguard-demo ]]; then
    SOVGUARD_BUILD_DIR=$build bash .ci/demo.sh down ||
      { echo "start-node --undo: demo.sh down failed (above), nothing else undone" >&2; exit 1; }
  fi
  # 1. The daemon (SIGTERM keeps kernel enforcement; released below unless asked to keep it).
  lock=/run/sovguard/sovguardd.lock
  if [[ -f $lock ]] && ! flock -n "$lock" true; then
    pid=$(cat "$lock")
    grep -qx sovguardd "/proc/$pid/comm" || { echo "start-node --undo: $lock held by pid $pid, not sovguardd" >&2; exit 1; }
    kill -TERM "$pid"
    for ((i = 0; i < 300; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
    [[ ! -e /proc/$pid ]] || { echo "start-node --undo: sovguardd (pid $pid) still runs after 30 s" >&2; exit 1; }
    echo "start-node --undo: stopped sovguardd (pid $pid)"
  fi
  # 2. Guests still running would lose their guard (and keep QEMU running): refuse.
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    guests=$(virsh -q -c qemu:///system list --name | sed '/^$/d')
    if [[ -n $guests ]]; then
      echo "start-node --undo: guests still running: $guests; stop them first (demo: bash .ci/demo.sh down)" >&2
      exit 1
    fi
  fi
  # 3. Kernel enforcement, measured into the TPM log of the node that left it.
  last_args=()
  [[ -f $record/daemon.args ]] && mapfile -t last_args <"$record/daemon.args"
  if ((keep_enforcement)); then
    echo "start-node --undo: kernel enforcement kept (pins under /sys/fs/bpf/sovguard)"
  elif [[ -x $daemon ]]; then
    # Refuses while a guest is still covered (its message says what to do). The demo guest that
    # stopped while no daemon ran (removed above, or by demo.sh down after a Ctrl-C) is still in
    # the pinned state: when it is all the refusal names and libvirt no longer knows it, its
    # release is forced (and measured as forced).
    rc=0
    out=$("$daemon" "${last_args[@]}" --release-enforcement "${force[@]}" 2>&1) || rc=$?
    printf '%s\n' "$out"
    covered=$(sed -n 's/^  //p' <<<"$out")
    if ((rc != 0)) && ((${#force[@]} == 0)) && [[ -n $covered ]] &&
      ! grep -qv "^$demo_guest (" <<<"$covered" &&
      ! virsh -q -c qemu:///system dominfo "$demo_guest" >/dev/null 2>&1; then
      echo "start-node --undo: $demo_guest is gone (it stopped while no daemon ran): releasing it with --force"
      rc=0
      "$daemon" "${last_args[@]}" --release-enforcement --force || rc=$?
    fi
    if ((rc != 0)); then
      echo "start-node --undo: release refused (above), nothing else undone. A guest it names that" \
        "no longer runs (virsh list) stopped while no daemon ran: --undo --force releases it" >&2
      exit 1
    fi
    # A swtpm the release had to start to measure into is ours to stop too.
    mkdir -p "$record"
    for pid in $(running_pids); do grep -qx "$pid" <<<"$undo_before" || echo "$pid" >>"$record/started"; done
  else
    echo "start-node --undo: $daemon not built: kernel enforcement left in place" >&2
  fi
  # 4. What sovguardd started for this script (recorded when the daemon stopped), by pid.
  if [[ -f $record/started ]]; then
    while read -r pid; do
      [[ -e /proc/$pid ]] && grep -qE '^(libvirtd|virtlogd|swtpm)$' "/proc/$pid/comm" || continue
      comm=$(cat "/proc/$pid/comm")
      kill -TERM "$pid"
      for ((i = 0; i < 100; i++)); do [[ -e /proc/$pid ]] || break; sleep 0.1; done
      echo "start-node --undo: stopped $comm (pid $pid)"
    done < <(sort -u "$record/started")
  fi
  # 5. The hook, only when it is ours (a link into this tree), and the demo's state.
  if [[ -L $hook && $(readlink "$hook") == "$root/"* ]]; then
    rm -f "$hook"
    rmdir --ignore-fail-on-non-empty "$(dirname "$hook")"
    echo "start-node --undo: removed the libvirt hook $hook"
  fi
  # 6. What start-node created (recorded when it did): its state, nothing runs on it now; the
  #    hook's directories, when empty.
  if [[ -f $record/created ]]; then
    while read -r path; do
      [[ -e $path ]] || continue
      rm -rf "$path"
      echo "start-node --undo: removed $path (created by start-node)"
    done < <(sort -u "$record/created")
  fi
  if [[ -f $record/created-dirs ]]; then
    while read -r path; do
      [[ -d $path ]] && find "$path" -depth -type d -empty -delete
    done < <(sort -u "$record/created-dirs")
  fi
  # libvirt's `machine` partition cgroups, created in every hierarchy at a guest's first start
  # and never removed: removed (deepest first) when start-node's run created them and no guest
  # is left in them.
  if [[ -f $record/created-cgroups ]]; then
    while read -r path; do
      [[ -d $path ]] || continue
      if find "$path" -depth -type d -exec rmdir {} + 2>/dev/null; [[ ! -d $path ]]; then
        echo "start-node --undo: removed the cgroup $path (created by libvirt for this node)"
      else
        echo "start-node --undo: kept the cgroup $path: processes still run in it"
      fi
    done < <(sort -u "$record/created-cgroups")
  fi
  rm -rf "$demo_state" "$record" /run/sovguard # no daemon holds it now: stale status, sockets
  left=$(running_pids)
  [[ -z $left ]] || echo "start-node --undo: still running, not started by this script: pids $left"
  exit 0
fi

bash .ci/install-deps.sh
if [[ ! -f $build/CMakeCache.txt ]]; then
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOVGUARD_BUILD_TESTS=OFF -DSOVGUARD_BUILD_BENCH=OFF
fi
cmake --build "$build" -j"$(nproc)" --target sovguardd sovguardctl sovguard-libvirt-hook sovguard-verify
# What this script creates is recorded for --undo: the topmost directory that did not exist, in
# RECORD (created: removed with its content; created-dirs: removed only when empty).
mkdir -p "$record"
created() { # RECORD PATH
  local p=$2
  [[ -e $p ]] && return 0
  while [[ ! -e $(dirname "$p") ]]; do p=$(dirname "$p"); done
  echo "$p" >>"$record/$1"
}
[[ $mode == node ]] && created created "$state"
created created-dirs "$(dirname "$hook")"
# What libvirtd writes at its first start on a host (.ci/libvirt-first-start.paths, the list
# tests/support's ServicesAsFound reads too) and its `machine` cgroups: recorded when this host had
# none yet.
while read -r p; do
  if [[ $p == /* ]]; then created created "$p"; fi
done <"$root/.ci/libvirt-first-start.paths"
for h in /sys/fs/cgroup /sys/fs/cgroup/*/; do
  h=${h%/}
  [[ -d $h && ! -L $h && -e $h/cgroup.procs && ! -e $h/machine ]] && echo "$h/machine" >>"$record/created-cgroups"
done
# The qemu hook lets sovguardd cover a guest's taps before QEMU starts; libvirtd reads hooks when
# it starts, so a libvirtd already running picks it up at its next restart (until then guests are
# covered on their start event).
if [[ ! -e $hook ]]; then
  mkdir -p "$(dirname "$hook")"
  ln -sf "$build/enforcer/libvirt/hook/sovguard-libvirt-hook" "$hook"
  echo "start-node: installed the libvirt qemu hook at $hook"
fi
daemon_args=(--data-dir "$root/policy/data")
if [[ $mode == demo ]]; then
  SOVGUARD_BUILD_DIR=$build bash .ci/demo.sh policy
  daemon_args+=(--state-dir "$demo_state/state"
    --set "policy_bundle=$demo_state/demo.bundle" --set "trusted_keys_dir=$demo_state/keys")
fi
daemon_args+=("${args[@]}")
printf '%s\n' "${daemon_args[@]}" >"$record/daemon.args"
before=$(running_pids)

# Stopping the daemon keeps enforcing and leaves what it started running: say so, and how to undo.
on_exit() {
  local pid now=() names=()
  for pid in $(running_pids); do
    grep -qx "$pid" <<<"$before" || echo "$pid" >>"$record/started"
  done
  [[ -f $record/started ]] && for pid in $(sort -u "$record/started"); do
    [[ -e /proc/$pid ]] && names+=("$(cat "/proc/$pid/comm") (pid $pid)")
  done
  echo "start-node: sovguardd stopped; its kernel enforcement stays in force."
  ((${#names[@]})) && echo "start-node: still running, started for this node: ${names[*]}"
  [[ -L $hook ]] && echo "start-node: the libvirt hook $hook points into $build: with no daemon, libvirt refuses to start guests"
  echo "start-node: undo all of it with: bash .ci/start-node.sh --undo [--keep-enforcement]"
}
trap on_exit EXIT
echo "start-node: starting sovguardd (sovguardctl status in another shell shows what it enforces)"
"$daemon" "${daemon_args[@]}"
