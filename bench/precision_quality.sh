#!/usr/bin/env bash
# bf16 against fp32 training on the quickstart model (docs/precision.md, "Quality"): the same
# config, data, seed and steps as `make quickstart`, once per precision; prints every
# sub-model's validation loss of both runs and their relative difference, and plots each run.
# Usage: bash bench/precision_quality.sh [OUT_DIR]   (STEPS=600 by default; needs the quickstart
# data in build/quickstart/data: run `make quickstart` once first)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/chainlm
DATA=${DATA:-build/quickstart/data}
OUT=${1:-build/precision_quality}
STEPS=${STEPS:-600}
[ -s "$DATA/train.bin" ] || { echo "precision_quality: $DATA is missing; run 'make quickstart' first" >&2; exit 1; }
mkdir -p "$OUT"
for p in fp32 bf16; do
  if [ ! -s "$OUT/$p.json" ]; then
    rm -rf "$OUT/$p"
    $BIN train --config configs/quickstart-air.json --data "$DATA" --out "$OUT/$p" \
      --steps "$STEPS" --batch-size 16 --seq-len 128 --lr 2e-3 --eval-every 100 \
      --chain-loss-weights 1,1,1,1 --seed 1 --precision "$p" --quiet
    # Evaluated in fp32: the two runs' weights compared on equal terms.
    $BIN eval ppl --model "$OUT/$p" --data "$DATA/val.bin" --json > "$OUT/$p.json"
  fi
  $BIN plot "$OUT/$p" --out "$OUT/$p-loss.png" --title "quickstart model, $STEPS steps, $p" >/dev/null
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
runs = {p: json.load(open(f"{out}/{p}.json")) for p in ("fp32", "bf16")}
print("| sub-model | fp32 val loss | bf16 val loss | bf16 / fp32 - 1 |")
print("|---|---|---|---|")
for a, b in zip(runs["fp32"]["chains"], runs["bf16"]["chains"]):
    print(f"| {a['k']} chain(s) | {a['loss']:.4f} | {b['loss']:.4f} | {b['loss'] / a['loss'] - 1:+.2%} |")
PY
