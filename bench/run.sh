#!/usr/bin/env bash
# Runs the benchmarks recorded in bench/RESULTS.md, one JSON line each.
# Each line measures this machine's sgemm peak beside its own steps, so ratios (mfu) are
# comparable across noisy runs; absolute figures are not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/chainlm
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
for cfg in configs/ref30m.json configs/ref30m-chains2222.json configs/ref30m-chains2222-air.json; do
  $BIN bench train --config "$cfg" --batch-size 8 --seq-len 256 --threads "$THREADS" --steps "$STEPS"
done
