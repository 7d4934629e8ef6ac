#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets, docs/testing.md: Fuzzing) for FUZZ_SECONDS each (default 60),
# starting from the checked-in seeds (fuzz/seeds/<target>) and a fresh scratch corpus. Fails on any crash,
# leak of a panic, timeout or out-of-memory, naming the target and the input libFuzzer saved. Prints one line
# per target: executions and corpus size. FUZZ_TARGETS picks a subset.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_cargo_tool cargo-fuzz@0.13.2 cargo-fuzz
seconds=${FUZZ_SECONDS:-60}
target_dir="$PAGESERVER_CACHE_DIR/fuzz-target"
all_targets="wal_stream wal_record pagestream_request libpq_frontend layer_file index_part archive_manifest"
# FUZZ_TARGETS: a space-separated subset (for the long runs of docs/testing.md, two streams side by side).
read -r -a targets <<<"${FUZZ_TARGETS:-$all_targets}"


cd fuzz
# -s none: no sanitizer (Rust is memory-safe; what we look for is panics, hangs and runaway allocations), so
# that the machine's stable toolchain builds it.
cargo fuzz build -s none --target-dir "$target_dir"
status=0
for t in "${targets[@]}"; do
  scratch=$(mktemp -d)
  out="$scratch/fuzz.log"
  mkdir "$scratch/corpus"
  if cargo fuzz run -s none --target-dir "$target_dir" "$t" "$scratch/corpus" "seeds/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$out" 2>&1; then
    execs=$(grep -o 'number_of_executed_units: [0-9]*' "$out" | tail -1 | grep -o '[0-9]*$' || echo '?')
    units=$(ls "$scratch/corpus" 2>/dev/null | wc -l)
    echo "fuzz $t: ${seconds}s, $execs executions, 0 crashes, corpus $units inputs"
  else
    echo "fuzz $t: FAILED"
    grep -aE 'panicked|ERROR|SUMMARY|Test unit written|==[0-9]+==' "$out" | head -20 || tail -30 "$out"
    status=1
  fi
  rm -rf "$scratch"
done
exit "$status"
