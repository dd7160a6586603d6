#!/usr/bin/env bash
# Builds every fuzz target with clang + libFuzzer and runs each for $1 seconds (default 30) on its
# committed seed corpus. Fails when there is no target, a target lacks its corpus, runs no input or
# finds a crash. `fuzz.sh --build-only` builds and stops (.ci/test.sh builds while the suite runs,
# then runs the fuzzers after it: the build left is then a make with nothing to do).
set -euo pipefail
cd "$(dirname "$0")/.."
build_only=0
if [[ ${1:-} == --build-only ]]; then
  build_only=1
  shift
fi
seconds=${1:-30}
build=${SOVGUARD_FUZZ_BUILD_DIR:-build/fuzz}
cmake -S . -B "$build" -DSOVGUARD_FUZZ=ON -DCMAKE_C_COMPILER=clang-16 -DCMAKE_CXX_COMPILER=clang++-16 \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSOVGUARD_BUILD_BENCH=OFF >/dev/null
targets=$(cmake --build "$build" --target help | sed -n 's/^\.\.\. \(fuzz_[a-z0-9_]*\).*/\1/p')
if [[ -z "$targets" ]]; then
  echo "fuzz: FAILED: no fuzz targets in $build (SOVGUARD_FUZZ=ON defines fuzz_*)"
  exit 1
fi
# sovguard_fuzzers depends on every fuzz_* target: one make run schedules all their objects on all
# cores (naming the targets one by one builds one after the other).
cmake --build "$build" -j"$(nproc)" --target sovguard_fuzzers
((build_only)) && exit 0
# One target: its verdict in $build/$t.verdict ("ok" or what failed), its output in $build/$t.log.
fuzz_one() {
  local t=$1 bin corpus work
  bin=$(find "$build" -type f -name "$t" -perm -u+x | head -1)
  corpus=$(cat "$build/$t.corpus" 2>/dev/null || true)
  # A target without its committed seed corpus fuzzes from nothing: a failure, not a quiet run.
  if [[ -z "$bin" || -z "$corpus" || ! -d "$corpus" || -z "$(ls -A "$corpus")" ]]; then
    echo "binary '${bin}' or seed corpus '${corpus}' missing or empty" >"$build/$t.verdict"
    return
  fi
  work=$(mktemp -d)
  cp -r "$corpus"/. "$work"/
  if ! "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
       -artifact_prefix="$build/$t-" "$work" >"$build/$t.log" 2>&1; then
    echo "crash input under $build/$t-*" >"$build/$t.verdict"
  elif ! grep -Eq '^stat::number_of_executed_units: [1-9]' "$build/$t.log"; then
    echo "ran no input" >"$build/$t.verdict"
  else
    echo ok >"$build/$t.verdict"
  fi
  rm -rf "$work"
}
# As many targets at once as there are cores, each for the full time.
jobs_max=$(nproc)
for t in $targets; do
  rm -f "$build/$t.verdict"
  while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
  echo "fuzz: $t for ${seconds}s"
  fuzz_one "$t" &
done
wait
failed=0
for t in $targets; do
  verdict=$(cat "$build/$t.verdict" 2>/dev/null || echo "no verdict")
  [[ $verdict == ok ]] && continue
  echo "fuzz: $t FAILED: $verdict; last lines:"
  tail -30 "$build/$t.log" 2>/dev/null
  failed=1
done
exit $failed
