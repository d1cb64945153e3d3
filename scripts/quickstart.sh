#!/usr/bin/env bash
# The main job of the README: train a small CoLM-Air model (4 chains) on Debian's fortunes
# text, then generate with 1, 2, 3 and 4 chains and print each sub-model's validation loss.
# Runs in a few minutes on 2 cores. Override with env vars: STEPS, OUT, CORPUS.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=build/chainlm
OUT=${OUT:-runs/quickstart}
WORK=${WORK:-build/quickstart}
STEPS=${STEPS:-600}
mkdir -p "$WORK"

# 1. Corpus: every fortune file (separated by lines holding only "%").
CORPUS=${CORPUS:-$WORK/fortunes.txt}
if [ ! -s "$CORPUS" ]; then
  dir=/usr/share/games/fortunes
  [ -d "$dir" ] || { echo "quickstart: $dir is missing; run 'make setup' (package fortunes)" >&2; exit 1; }
  find "$dir" -maxdepth 1 -type f ! -name '*.dat' ! -name '*.u8' ! -name 'ascii-art' -print0 \
    | sort -z | xargs -0 cat > "$CORPUS"
fi
echo "== corpus: $CORPUS ($(wc -c < "$CORPUS") bytes)"

# 2. Tokenizer (SentencePiece BPE) and token shards.
[ -s "$WORK/tok.model" ] || $BIN tokenizer train --corpus "$CORPUS" --vocab-size 2048 --out "$WORK/tok.model"
$BIN prepare --tokenizer "$WORK/tok.model" --input "$CORPUS" --out "$WORK/data" --overwrite

# 3. Train: every chain prefix weighted equally, so each sub-model is a usable model.
rm -rf "$OUT"
$BIN train --config configs/quickstart-air.json --data "$WORK/data" --out "$OUT" \
  --steps "$STEPS" --batch-size 16 --seq-len 128 --lr 2e-3 --eval-every 200 \
  --chain-loss-weights 1,1,1,1 --seed 1

# 4. Generate with each sub-model, and evaluate every sub-model on the validation split.
for k in 1 2 3 4; do
  echo
  echo "== $k chain(s):"
  $BIN generate --model "$OUT" --prompt "The meaning of life is" --max-tokens 60 \
    --temperature 0.8 --top-k 40 --seed 7 --chains "$k"
done
echo
echo "== every sub-model on the validation split (loss in nats/token):"
$BIN eval ppl --model "$OUT" --data "$WORK/data/val.bin"
