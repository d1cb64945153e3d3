#!/usr/bin/env bash
# Runs the benchmarks recorded in bench/RESULTS.md, one JSON line each.
# Every line measures its own ceiling (sgemm peak, memory bandwidth) in the same run, so
# its ratios are comparable across noisy machines; absolute figures are not.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/chainlm
THREADS=${THREADS:-2}
STEPS=${STEPS:-5}
STORIES=../shared/data/stories260K

echo "# training step (issue 2)"
for cfg in configs/ref30m.json configs/ref30m-chains2222.json configs/ref30m-chains2222-air.json; do
  $BIN bench train --config "$cfg" --batch-size 8 --seq-len 256 --threads "$THREADS" --steps "$STEPS"
done

echo "# batch-1 decoding (issue 3)"
for t in 1 2; do
  [ -f "$STORIES/stories260K.bin" ] && $BIN bench decode --model "$STORIES/stories260K.bin" --threads $t
  $BIN bench decode --config configs/ref30m.json --threads $t
  $BIN bench decode --config configs/ref30m-chains2222-air.json --threads $t
  $BIN bench decode --config configs/ref30m-chains2222-air.json --threads $t --chains 1
done

echo "# prefill of 1024 tokens, CoLM-Air chain-1 prefill vs full (issue 3)"
$BIN bench prefill --config configs/ref30m-chains2222-air.json --prompt-tokens 1024 --threads "$THREADS"
$BIN bench prefill --config configs/ref30m.json --prompt-tokens 1024 --threads "$THREADS"

echo "# PHD-Transformer (issue 4): each line times the PHD model and the same model without PHD"
echo "# (same weights) interleaved, and reports their ratio"
for K in 2 3 4; do
  $BIN bench train --config configs/ref30m-phd-cswa-$K-16-32.json --batch-size 8 --seq-len 256 --threads "$THREADS" --steps "$STEPS" --baseline
  $BIN bench train --config configs/ref30m-phd-cswa-$K-16-32.json --batch-size 2 --seq-len 1024 --threads "$THREADS" --steps "$STEPS" --baseline
done
for t in 1 2; do
  $BIN bench decode --config configs/ref30m-phd-cswa-4-16-32.json --threads $t --baseline
done
$BIN bench prefill --config configs/ref30m-2k-phd-cswa-4-16-32.json --prompt-tokens 2048 --threads "$THREADS" --baseline
$BIN bench prefill --config configs/ref30m-2k-phd-swa-4-16.json --prompt-tokens 2048 --threads "$THREADS" --baseline

echo "# evaluation (issue 8): stories260K on the six BLiMP files (a few seconds in all), and"
echo "# every sub-model of the quickstart model on its validation split (when it has been run)"
if [ -f "$STORIES/stories260K.bin" ]; then
  for f in ../shared/data/eval/blimp/*.jsonl; do
    $BIN eval pairs --model "$STORIES/stories260K.bin" --tokenizer "$STORIES/tok512.model" --data "$f" --json
  done
fi
if [ -f runs/quickstart/latest ] && [ -f build/quickstart/data/val.bin ]; then
  $BIN eval ppl --model runs/quickstart --data build/quickstart/data/val.bin --threads "$THREADS" --json
fi

echo "# serving (issue 17): continuous batching at concurrency 1..8, and requests spread over every"
echo "# sub-model (the quickstart model, when it has been run: bench serve needs its tokenizer)"
if [ -f runs/quickstart/latest ]; then
  $BIN bench serve --model runs/quickstart --concurrency 1,2,4,8 --tokens 64 --threads "$THREADS"
  $BIN bench serve --model runs/quickstart --concurrency 1,8 --tokens 64 --chains mix --threads "$THREADS"
fi

echo "# data parallel (issue 6): 2 ranks x 1 thread vs 1 process x 2 threads, global batch 8 x 256,"
echo "# with the time spent in the gradient allreduce (comm_ms, comm_fraction)"
MPIRUN=(mpirun -np 2)
[ "$(id -u)" -eq 0 ] && MPIRUN+=(--allow-run-as-root)
$BIN bench train --config configs/ref30m.json --batch-size 8 --seq-len 256 --threads 2 --steps "$STEPS"
"${MPIRUN[@]}" $BIN bench train --config configs/ref30m.json --batch-size 8 --seq-len 256 --threads 1 --steps "$STEPS"
"${MPIRUN[@]}" $BIN bench train --config configs/ref30m.json --batch-size 8 --seq-len 256 --threads 1 --steps "$STEPS" --overlap-comm
