#!/usr/bin/env bash
# GGUF files llama.cpp's llama-quantize made from a chainlm GGUF, for tests/cli/gguf_cli_test.cpp:
# chainlm must read what llama.cpp's own tool writes from its files (it refused them as corrupt:
# llama-quantize copies chainlm's checksum entries and adds its own after them), and llama.cpp's
# Q8_0 blocks must be the ones chainlm computes from the same weights.
#   bash tests/vectors/llamacpp_gguf/make_vectors.sh LLAMA_QUANTIZE [CHAINLM]
# LLAMA_QUANTIZE: llama.cpp's llama-quantize, built beside the project (the committed files came
# from llama.cpp c392e5094: cmake -B build -DLLAMA_CURL=OFF && cmake --build build --target
# llama-quantize). CHAINLM defaults to build/chainlm. A tiny model (dim 32, one layer, 320 tokens)
# trained a few steps keeps the files small; its weights need not be good, only the same.
set -euo pipefail
cd "$(dirname "$0")"
QUANTIZE=${1:?usage: make_vectors.sh LLAMA_QUANTIZE [CHAINLM]}
CHAINLM=${2:-../../../build/chainlm}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
corpus=../../../../shared/data/corpus/tinyshakespeare.txt
"$CHAINLM" tokenizer train --corpus "$corpus" --vocab-size 320 --out "$work/tok.model" >/dev/null
"$CHAINLM" prepare --tokenizer "$work/tok.model" --input "$corpus" --out "$work/data" >/dev/null
cat >"$work/config.json" <<'JSON'
{"dim": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 320,
 "chains": [1], "max_seq_len": 64}
JSON
"$CHAINLM" train --config "$work/config.json" --data "$work/data" --out "$work/run" --steps 20 \
  --batch-size 4 --seq-len 32 --lr 0.01 --seed 1 --quiet --threads 1
"$CHAINLM" export --model "$work/run" --format gguf --type f32 --out tiny-f32.gguf.new
mv tiny-f32.gguf.new tiny-f32.gguf
"$QUANTIZE" --pure tiny-f32.gguf tiny-q8_0.llamacpp.gguf Q8_0 1 >/dev/null 2>&1
"$QUANTIZE" --pure tiny-f32.gguf tiny-q4_0.llamacpp.gguf Q4_0 1 >/dev/null 2>&1
ls -l ./*.gguf
