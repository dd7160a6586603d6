#!/usr/bin/env bash
# Builds every fuzz target with clang + libFuzzer and runs each for $1 seconds (default 30) on its
# committed seed corpus. Fails when there is no target, a target lacks its corpus, runs no input or
# finds a crash.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=${SOVGUARD_FUZZ_BUILD_DIR:-build/fuzz}
cmake -S . -B "$build" -DSOVGUARD_FUZZ=ON -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16 \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOVGUARD_BUILD_BENCH=OFF >/dev/null
targets=$(cmake --build "$build" --target help | sed -n 's/^\.\.\. \(fuzz_[a-z0-9_]*\).*/\1/p')
if [[ -z "$targets" ]]; then
  echo "fuzz: FAILED: no fuzz targets in $build (SOVGUARD_FUZZ=ON defines fuzz_*)"
  exit 1
fi
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets
failed=0
for t in $targets; do
  bin=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  corpus=$(cat "$build/$t.corpus" 2>/dev/null || true)
  # A target without its committed seed corpus fuzzes from nothing: a failure, not a quiet run.
  if [[ -z "$bin" || -z "$corpus" || ! -d "$corpus" || -z "$(ls -A "$corpus")" ]]; then
    echo "fuzz: $t FAILED: binary '${bin}' or seed corpus '${corpus}' missing or empty"
    failed=1
    continue
  fi
  work=$(mktemp -d)
  cp -r "$corpus"/. "$work"/
  echo "fuzz: $t for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/$t-" "$work" >"$build/$t.log" 2>&1; then
    echo "fuzz: $t FAILED; crash input under $build/$t-*; last lines:"
    tail -30 "$build/$t.log"
    failed=1
  elif ! grep -Eq '^stat::number_of_executed_units: [1-9]' "$build/$t.log"; then
    echo "fuzz: $t FAILED: ran no input; last lines:"
    tail -30 "$build/$t.log"
    failed=1
  fi
  rm -rf "$work"
done
exit $failed
