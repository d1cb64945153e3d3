#!/usr/bin/env bash
# chainlm's training step against PyTorch's on the same config, fp32 and bf16 (PyTorch: bf16
# autocast), interleaved over ROUNDS rounds so the machine's drift hits both alike; prints each
# side's median tokens/s and the ratios issue 14 asks for (bench/RESULTS.md).
#   bash bench/vs_pytorch.sh [CONFIG] [ROUNDS]
# Needs Debian's python3-torch (apt-get install python3-torch; only this benchmark uses it) and a
# built ./build/chainlm. PyTorch runs with its own defaults (OpenMP wait policy included), as a
# user would run it.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${1:-configs/ref30m.json}
ROUNDS=${2:-3}
THREADS=${THREADS:-2}
PY=${PYTORCH_PYTHON:-/usr/bin/python3}
"$PY" -c 'import torch' 2>/dev/null || { echo "vs_pytorch.sh: $PY cannot import torch (apt-get install python3-torch)" >&2; exit 1; }
ARGS="--config $CONFIG --batch-size 8 --seq-len 256 --threads $THREADS --steps 3"
field() { python3 -c 'import json, sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])[sys.argv[1]])' "$1"; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
declare -A runs
for ((r = 1; r <= ROUNDS; r++)); do
  for p in fp32 bf16; do
    runs[chainlm_$p]+="$(./build/chainlm bench train $ARGS --precision $p 2>/dev/null | field tokens_per_s) "
    runs[pytorch_$p]+="$("$PY" bench/pytorch_train.py $ARGS --precision $p | field tokens_per_s) "
  done
done
declare -A med
for k in chainlm_fp32 chainlm_bf16 pytorch_fp32 pytorch_bf16; do
  med[$k]=$(tr ' ' '\n' <<<"${runs[$k]}" | grep . | median)
  printf '%-14s tokens/s median %8.0f  (runs: %s)\n' "$k" "${med[$k]}" "${runs[$k]}"
done
ratio() { python3 -c "print(f'{float(\"$1\") / float(\"$2\"):.2f}')"; }
echo "chainlm bf16 / chainlm fp32:  $(ratio "${med[chainlm_bf16]}" "${med[chainlm_fp32]}")"
echo "chainlm fp32 / PyTorch fp32:  $(ratio "${med[chainlm_fp32]}" "${med[pytorch_fp32]}")"
echo "chainlm bf16 / PyTorch bf16:  $(ratio "${med[chainlm_bf16]}" "${med[pytorch_bf16]}")"
