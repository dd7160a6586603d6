#!/usr/bin/env bash
# The README's test command: installs what is needed, builds (Debug = ASan+UBSan), runs every
# test tier with ctest (unit, kernel, integration), then each fuzz target for a bounded time.
# Run as root on Debian 12. Exit status is non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
build=${SOVGUARD_BUILD_DIR:-$root/build/test}
fuzz_seconds=${SOVGUARD_FUZZ_SECONDS:-30}

bash .ci/install-deps.sh
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Debug -DSOVGUARD_SHARED_DATA_DIR="$root/../shared/data"
cmake --build "$build" -j"$(nproc)"
ctest --test-dir "$build" --output-on-failure -j"$(nproc)" --timeout 900

# libFuzzer: a separate clang build of the fuzz targets only, each run for a bounded time on its
# committed seed corpus (the corpus itself already ran above as unit tests).
bash .ci/fuzz.sh "$fuzz_seconds"
