#!/usr/bin/env bash
# Times two chainlm binaries on the same benchmarks, interleaved (A B A B ...), and prints the
# median of each side and their ratio: the way to tell whether a change (a refactor, a compiler
# flag) moved training or decoding speed on a machine whose load drifts.
#   bash bench/compare.sh OLD_BINARY NEW_BINARY [ROUNDS]
# Build the old one from a worktree, e.g.
#   git worktree add /tmp/base HEAD~3 && cmake -S /tmp/base -B /tmp/base/build \
#     -DCHAINLM_BUILD_TESTS=OFF && cmake --build /tmp/base/build --target chainlm
# Set BENCHES (lines of `chainlm bench` arguments and the JSON field to compare) to choose.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=${1:?usage: bench/compare.sh OLD_BINARY NEW_BINARY [ROUNDS]}
NEW=${2:?usage: bench/compare.sh OLD_BINARY NEW_BINARY [ROUNDS]}
ROUNDS=${3:-3}
THREADS=${THREADS:-2}
BENCHES=${BENCHES:-"train --config configs/ref30m.json --batch-size 8 --seq-len 256 --threads $THREADS --steps 5|tokens_per_s
train --config configs/ref30m-phd-cswa-2-16-32.json --batch-size 8 --seq-len 256 --threads $THREADS --steps 3|tokens_per_s
decode --config configs/ref30m.json --threads 1|tokens_per_s
decode --config configs/ref30m.json --threads 2|tokens_per_s
decode --config configs/ref30m-phd-cswa-4-16-32.json --threads 1|tokens_per_s
prefill --config configs/ref30m.json --prompt-tokens 1024 --threads $THREADS|full_prefill_gflops"}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }

printf '%-100s %12s %12s %8s\n' "bench (field)" old new new/old
while IFS= read -r line; do
  args=${line%|*}
  key=${line##*|}
  old_values=() new_values=()
  for ((r = 0; r < ROUNDS; ++r)); do
    # Alternate which binary goes first, so a drift in the machine's load hits both alike.
    if ((r % 2 == 0)); then order=(old new); else order=(new old); fi
    for who in "${order[@]}"; do
      bin=$OLD
      [ "$who" = new ] && bin=$NEW
      # shellcheck disable=SC2086
      value=$("$bin" bench $args | field "$key")
      if [ "$who" = old ]; then old_values+=("$value"); else new_values+=("$value"); fi
    done
  done
  old_median=$(printf '%s\n' "${old_values[@]}" | median)
  new_median=$(printf '%s\n' "${new_values[@]}" | median)
  printf '%-100s %12.1f %12.1f %8.3f\n' "$args ($key)" "$old_median" "$new_median" \
    "$(awk -v a="$old_median" -v b="$new_median" 'BEGIN {print b / a}')"
done <<< "$BENCHES"
