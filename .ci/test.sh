#!/usr/bin/env bash
# The README's test command: installs what is needed, builds (Debug = ASan+UBSan), runs every
# test tier with ctest (unit, kernel, integration; .ci/run-tests.sh also fails on a skip not on
# .ci/skip-allowlist and on any change the suite left on the host) between the two stages of the
# newcomer sequence (.ci/newcomer-check.sh pre|post), then each fuzz target for a bounded time.
# Run as root on Debian 12. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/test}
fuzz_seconds=${SOVGUARD_FUZZ_SECONDS:-30}

bash .ci/install-deps.sh
# The fuzz targets' clang build needs neither root nor the host: it runs in the background from
# here to the fuzzers, at the lowest CPU weight (its own session, so its own autogroup, at nice
# 19), so it takes only CPU the build and the suite leave idle (the suite's kernel and integration
# tests run one at a time: about one core is idle once the vm boots are done). Its log is
# BUILD/ci/fuzz-build.log; the fuzzers themselves run after the suite, each for its full time.
mkdir -p "$build/ci"
setsid bash -c 'echo 19 >/proc/self/autogroup 2>/dev/null || true
  nice -n 19 bash .ci/fuzz.sh --build-only; rc=$?
  echo "fuzz build: exit $rc after ${SECONDS} s"; exit $rc' >"$build/ci/fuzz-build.log" 2>&1 </dev/null &
fuzz_build=$!
# Never left behind, whatever ends this script.
trap 'rc=$?; kill -- -$fuzz_build 2>/dev/null && wait $fuzz_build 2>/dev/null; exit $rc' EXIT
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DSOVGUARD_SHARED_DATA_DIR="$root/../shared/data"
cmake --build "$build" -j"$(nproc)"
# Around the suite, the README's newcomer sequence (.ci/newcomer-check.sh): before it start-node
# until ready and Ctrl-C, leaving the stopped node in place for the suite; after it start-node
# --demo, the demo guest's traffic, Ctrl-C with the guest running, --undo, and the host compared
# with a snapshot taken before the first start-node. Inside, ctest, then every skip judged against
# .ci/skip-allowlist and the host compared with a snapshot taken before ctest. Every stage runs
# even when one before it failed; the exit status counts all of them and the fuzzers.
status=0
SOVGUARD_BUILD_DIR=$build bash .ci/newcomer-check.sh pre || status=1
bash .ci/run-tests.sh "$build" || status=1
SOVGUARD_BUILD_DIR=$build bash .ci/newcomer-check.sh post || status=1

# libFuzzer: a separate clang build of the fuzz targets only (built in the background since the
# start), each run for a bounded time on its committed seed corpus (the corpus itself already ran
# above as unit tests).
waited=$SECONDS
if ! wait $fuzz_build; then
  echo "test.sh: the fuzz build FAILED; its log:"
  cat "$build/ci/fuzz-build.log"
  status=1
fi
# What the overlap saved: the build's own time, of which only the wait here still adds to CI.
echo "test.sh: $(tail -1 "$build/ci/fuzz-build.log"), waited for it $((SECONDS - waited)) s"
trap - EXIT
bash .ci/fuzz.sh "$fuzz_seconds" || status=1
[[ $status -eq 0 ]] && echo "test.sh: all passed" || echo "test.sh: FAILED (see above)"
exit $status
