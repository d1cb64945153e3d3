#!/usr/bin/env bash
# Speed on a shared machine: each benchmark quiet and with one busy process (a shell loop that
# keeps a core busy), under each OpenMP wait policy, interleaved; prints medians and the
# busy/quiet ratio (docs/training.md, "Shared machines").
#   bash bench/contention.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build/chainlm}
ROUNDS=${1:-3}
BENCHES=${BENCHES:-"train --config configs/quickstart-air.json --batch-size 8 --seq-len 128 --threads 2 --steps 20
train --config configs/ref30m.json --batch-size 8 --seq-len 256 --threads 2 --steps 3
decode --config configs/quickstart-air.json --threads 2 --prompt-tokens 32 --tokens 64
decode --config configs/ref30m.json --threads 2"}
# "chosen" leaves the environment alone: the policy chainlm picks for the command; "default" is
# libgomp's own (spin 300000 times, then sleep), which GOMP_SPINCOUNT=300000 restores.
POLICIES=${POLICIES:-"chosen passive default"}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
rate() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["tokens_per_s"])'; }
run() {  # run POLICY ARGS...
  local policy=$1
  shift
  case $policy in
    chosen) env -u OMP_WAIT_POLICY -u GOMP_SPINCOUNT "$BIN" bench "$@" | rate ;;
    passive) env -u GOMP_SPINCOUNT OMP_WAIT_POLICY=passive "$BIN" bench "$@" | rate ;;
    default) env -u OMP_WAIT_POLICY GOMP_SPINCOUNT=300000 "$BIN" bench "$@" | rate ;;
  esac
}

busy_pid=
stop_busy() { [ -n "$busy_pid" ] && kill "$busy_pid" 2> /dev/null; busy_pid=; }
trap stop_busy EXIT

printf '%-90s %-8s %10s %10s %8s\n' "bench" policy quiet busy ratio
while IFS= read -r args; do
  for policy in $POLICIES; do
    quiet=() busy=()
    for ((r = 0; r < ROUNDS; ++r)); do
      # shellcheck disable=SC2086
      quiet+=("$(run "$policy" $args)")
      sh -c 'while :; do :; done' &
      busy_pid=$!
      sleep 0.5
      # shellcheck disable=SC2086
      busy+=("$(run "$policy" $args)")
      stop_busy
    done
    q=$(printf '%s\n' "${quiet[@]}" | median)
    b=$(printf '%s\n' "${busy[@]}" | median)
    printf '%-90s %-8s %10.1f %10.1f %8.2f\n' "$args" "$policy" "$q" "$b" \
      "$(awk -v q="$q" -v b="$b" 'BEGIN {print b / q}')"
  done
done <<< "$BENCHES"
