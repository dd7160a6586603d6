#!/usr/bin/env bash
# Builds every fuzz target with clang + libFuzzer and runs each for $1 seconds (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
build=${SOVGUARD_FUZZ_BUILD_DIR:-build/fuzz}
cmake -S . -B "$build" -DSOVGUARD_FUZZ=ON -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16 \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOVGUARD_BUILD_BENCH=OFF >/dev/null
targets=$(cmake --build "$build" --target help | sed -n 's/^\.\.\. \(fuzz_[a-z0-9_]*\).*/\1/p')
if [[ -z "$targets" ]]; then
  echo "fuzz: no fuzz targets defined"
  exit 0
fi
# shellcheck disable=SC2086
cmake --build "$build" -j"$(nproc)" --target $targets
failed=0
for t in $targets; do
  bin=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  corpus=$(cat "$build/$t.corpus" 2>/dev/null || true)
  work=$(mktemp -d)
  [[ -n "$corpus" && -d "$corpus" ]] && cp -r "$corpus"/. "$work"/
  echo "fuzz: $t for ${seconds}s"
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/$t-" "$work" >"$build/$t.log" 2>&1; then
    echo "fuzz: $t FAILED; crash input under $build/$t-*; last lines:"
    tail -30 "$build/$t.log"
    failed=1
  fi
  rm -rf "$work"
done
exit $failed
