#!/usr/bin/env bash
# Runs ctest in BUILD and judges the result beyond ctest's exit status:
#   1. ctest itself (failures, timeouts, tests that did not run);
#   2. every skip against .ci/skip-allowlist (.ci/check-skips.py: only a missing kernel feature
#      listed there may skip; a missing prerequisite fails);
#   3. the host against a snapshot taken before ctest (.ci/host-check.sh: libvirt's directories,
#      hooks, bpffs pins, machine cgroups, network namespaces, tc filters, leftover processes...).
# usage: run-tests.sh BUILD [extra ctest arguments, e.g. -L unit]. Root. CI=true is exported, so a
# test missing a prerequisite fails instead of skipping. Exit 0 only when all three pass.
set -uo pipefail
cd "$(dirname "$0")/.."
[[ $# -ge 1 ]] || { echo "usage: $0 BUILD [ctest args...]" >&2; exit 2; }
build=$(realpath "$1")
shift
export CI=true
out="$build/ci"
mkdir -p "$out"
rm -f "$out/ctest-junit.xml"

# The harness mounts bpffs, tracefs and securityfs where missing (as systemd would on a real host):
# mounted here first, so the snapshot does not count them as the suite's change.
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing
mountpoint -q /sys/kernel/security || mount -t securityfs securityfs /sys/kernel/security

bash .ci/host-check.sh snapshot "$out/host-before.txt" || { echo "run-tests: host snapshot failed"; exit 2; }

status=0
# Whole output of passed and skipped tests in the XML (the skip reason is at its end).
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 900 \
  --output-junit "$out/ctest-junit.xml" --test-output-size-passed 4194304 \
  --test-output-size-failed 4194304 --no-tests=error "$@" || { echo "run-tests: ctest FAILED"; status=1; }

python3 .ci/check-skips.py "$out/ctest-junit.xml" .ci/skip-allowlist ||
  { echo "run-tests: skips not on .ci/skip-allowlist (above): FAILED"; status=1; }

bash .ci/host-check.sh compare "$out/host-before.txt" ||
  { echo "run-tests: the test suite changed the host (above): FAILED"; status=1; }
exit $status
