#!/usr/bin/env bash
# .ci/check-skips.py on a fixed ctest JUnit file and an allow-list naming only the BPF LSM: that
# skip is accepted; a prerequisite skip, a CPU feature not on the list and a disabled test are
# each named; exit 1. The same file without those three passes (exit 0), with that list and with
# the committed .ci/skip-allowlist. An unreadable file is exit 2.
set -uo pipefail
src=$1
check="python3 $src/.ci/check-skips.py"
fixture=$src/tests/ci/fixtures/skips.xml
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '# test list\nkernel-feature:bpf-lsm\n' >"$work/allowlist"

out=$($check "$fixture" "$work/allowlist"); rc=$?
echo "$out"
[[ $rc -eq 1 ]] || { echo "FAIL: exit $rc, want 1"; exit 1; }
for want in "allowed skip kernel.A.LsmSkip: kernel-feature:bpf-lsm:" \
            "NOT ALLOWED kernel.A.NotRoot: no kernel-feature reason: prerequisite: root" \
            "NOT ALLOWED unit.B.NoAvx512: not on the allow-list (cpu-feature:avx512)" \
            "NOT ALLOWED unit.D.Disabled: disabled" \
            "5 tests, 1 allowed skips, 3 not allowed"; do
  grep -qF "$want" <<<"$out" || { echo "FAIL: missing '$want'"; exit 1; }
done
grep -q "C.Passes" <<<"$out" && { echo "FAIL: a passing test was reported"; exit 1; }

python3 - "$fixture" "$work/ok.xml" <<'PY'
import sys, xml.etree.ElementTree as ET
t = ET.parse(sys.argv[1]); r = t.getroot()
for c in list(r):
    if c.get("name") in ("kernel.A.NotRoot", "unit.B.NoAvx512", "unit.D.Disabled"):
        r.remove(c)
t.write(sys.argv[2])
PY
$check "$work/ok.xml" "$work/allowlist" || { echo "FAIL: allowed skips only, exit $?"; exit 1; }
$check "$work/ok.xml" "$src/.ci/skip-allowlist" ||
  { echo "FAIL: allowed skips only, committed list, exit $?"; exit 1; }
$check "$work/missing.xml" "$src/.ci/skip-allowlist"; rc=$?
[[ $rc -eq 2 ]] || { echo "FAIL: missing file exit $rc, want 2"; exit 1; }
echo "PASS: check-skips accepts only allow-listed kernel features"
