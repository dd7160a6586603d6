#!/usr/bin/env bash
# .ci/host-check.sh must see what a test leaves behind before CI relies on it: a snapshot, then a
# leaked network namespace and tap device -> compare fails naming both; after removing them ->
# compare passes. Root (kernel tier).
set -uo pipefail
check=$1/.ci/host-check.sh
work=$(mktemp -d)
ns=sgt-hc-$$
tap=sgthc$$
cleanup() { ip netns del "$ns" 2>/dev/null; ip link del "$tap" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

bash "$check" snapshot "$work/before" || { echo "FAIL: snapshot"; exit 1; }
ip netns add "$ns" || { echo "FAIL: ip netns add"; exit 1; }
ip tuntap add dev "$tap" mode tap || { echo "FAIL: ip tuntap add"; exit 1; }
if bash "$check" compare "$work/before" >"$work/diff" 2>&1; then
  cat "$work/diff"; echo "FAIL: host-check passed with a leaked netns and tap"; exit 1
fi
grep -q "^+$ns\$" "$work/diff" || { cat "$work/diff"; echo "FAIL: the leaked netns is not named"; exit 1; }
grep -q "^+link $tap\$" "$work/diff" || { cat "$work/diff"; echo "FAIL: the leaked tap is not named"; exit 1; }
ip netns del "$ns" && ip link del "$tap" || { echo "FAIL: cleanup"; exit 1; }
bash "$check" compare "$work/before" || { echo "FAIL: host-check differs after the cleanup"; exit 1; }
echo "PASS: host-check named the leaked netns and tap and passed once they were gone"
