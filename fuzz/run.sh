#!/usr/bin/env bash
# fuzz/run.sh BUILD SECONDS [TARGET...]
#
# Writes the seed corpora (BUILD/make_corpus -> BUILD/corpus/<target>/), then runs every
# libFuzzer target built in BUILD (or only the TARGETs named) for SECONDS each, FUZZ_JOBS
# (default 2) at a time, one thread each. A crash, sanitizer report, leak, timeout (>10 s for
# one input) or out-of-memory (an RSS above 2 GB, or a single allocation above 512 MB, which is
# how a loader allocating what a header claims before checking it shows up) is a finding: its
# input is saved under BUILD/fuzz-artifacts/<target>/ and the script exits non-zero naming it.
# Corpora grow across runs (libFuzzer adds new inputs to BUILD/corpus/<target>/).
#
# Reproduce a finding:  bash scripts/sanitize_env.sh BUILD/<target> BUILD/fuzz-artifacts/<target>/crash-...
set -uo pipefail

if [ $# -lt 2 ]; then
  echo "usage: fuzz/run.sh BUILD SECONDS [TARGET...]" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
jobs=${FUZZ_JOBS:-2}
sanitize="$root/scripts/sanitize_env.sh"

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in "$build"/*_fuzzer; do
    [ -x "$f" ] && targets+=("$(basename "$f")")
  done
fi
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz/run.sh: no *_fuzzer executables in $build (build target 'fuzzers' first)" >&2
  exit 2
fi

corpus="$build/corpus"
artifacts="$build/fuzz-artifacts"
logs="$build/fuzz-logs"
mkdir -p "$corpus" "$artifacts" "$logs"
OMP_NUM_THREADS=1 bash "$sanitize" "$build/make_corpus" "$corpus" "$root" || {
  echo "fuzz/run.sh: make_corpus failed" >&2
  exit 1
}

run_target() {
  local t=$1
  local dict=()
  [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
  rm -rf "${artifacts:?}/$t"
  mkdir -p "$artifacts/$t" "$corpus/$t"
  # One thread: the loaders under test are serial, and the targets run FUZZ_JOBS at a time.
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 bash "$sanitize" "$build/$t" \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$t/" "${dict[@]}" \
    "$corpus/$t" >"$logs/$t.log" 2>&1
  echo $? >"$logs/$t.rc"
}

start=$(date +%s)
running=0
for t in "${targets[@]}"; do
  if [ ! -x "$build/$t" ]; then
    echo "fuzz/run.sh: no target $build/$t" >&2
    exit 2
  fi
  rm -f "$logs/$t.rc"
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

status=0
printf '%-28s %12s %8s %12s  %s\n' target executions exec/s "corpus size" result
for t in "${targets[@]}"; do
  log="$logs/$t.log"
  rc=$(cat "$logs/$t.rc" 2>/dev/null || echo "?")
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  corp=$(grep -o 'corp: [0-9]*/[0-9]*[A-Za-z]*' "$log" | tail -1 | sed 's/corp: //')
  found=$(find "$artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'leak-*' \
            -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  result=ok
  if [ "$rc" != 0 ] || [ -n "$found" ]; then
    status=1
    result="FAILED (exit $rc)"
  fi
  printf '%-28s %12s %8s %12s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${corp:-?}" "$result"
  if [ "$result" != ok ]; then
    for f in $found; do echo "    finding: $f"; done
    echo "    log: $log"
    grep -m1 -E '^==[0-9]+==ERROR|^SUMMARY|runtime error|uncaught exception|invariant failed|out-of-memory|Timeout|Deadly' "$log" |
      sed 's/^/    /'
  fi
done
echo "fuzz/run.sh: ${#targets[@]} targets x ${seconds}s in $(($(date +%s) - start))s"
exit $status
