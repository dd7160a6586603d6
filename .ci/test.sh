#!/usr/bin/env bash
# The README's test command: installs what is needed, builds (Debug = ASan+UBSan), runs every
# test tier with ctest (unit, kernel, integration; .ci/run-tests.sh also fails on a skip not on
# .ci/skip-allowlist and on any change the suite left on the host), then each fuzz target for a
# bounded time. Run as root on Debian 12. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/test}
fuzz_seconds=${SOVGUARD_FUZZ_SECONDS:-30}

bash .ci/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DSOVGUARD_SHARED_DATA_DIR="$root/../shared/data"
cmake --build "$build" -j"$(nproc)"
# ctest, then every skip judged against .ci/skip-allowlist and the host compared with a snapshot
# taken before ctest; the fuzzers run even when that failed, the exit status counts both.
status=0
bash .ci/run-tests.sh "$build" || status=1

# libFuzzer: a separate clang build of the fuzz targets only, each run for a bounded time on its
# committed seed corpus (the corpus itself already ran above as unit tests).
bash .ci/fuzz.sh "$fuzz_seconds" || status=1
[[ $status -eq 0 ]] && echo "test.sh: all passed" || echo "test.sh: FAILED (see above)"
exit $status
