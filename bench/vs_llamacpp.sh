#!/usr/bin/env bash
# Decoding and prefill speed of chainlm against llama.cpp on the same GGUF weights, interleaved
# (llama.cpp, chainlm, llama.cpp, ...) so the machine's drift hits both alike (issue 20). It
# downloads and builds nothing: give it llama.cpp's llama-bench, built beside the project
# (e.g. `cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF && cmake --build build --target
# llama-bench`), and GGUF files chainlm exported (`chainlm export --format gguf --type T`).
#   bash bench/vs_llamacpp.sh LLAMA_BENCH MODEL.gguf [MODEL.gguf ...]
# Environment: THREADS (default "1 2"), ROUNDS (3), TOKENS (128: llama-bench's tg128, decoding
# from a 1-token context; chainlm the same with --prompt-tokens 1).
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_BENCH=${1:?usage: bench/vs_llamacpp.sh LLAMA_BENCH MODEL.gguf [MODEL.gguf ...]}
shift
[ $# -gt 0 ] || { echo "vs_llamacpp.sh: give at least one GGUF model" >&2; exit 1; }
[ -x "$LLAMA_BENCH" ] || { echo "vs_llamacpp.sh: $LLAMA_BENCH is not an executable llama-bench" >&2; exit 1; }
THREADS=${THREADS:-"1 2"}
ROUNDS=${ROUNDS:-3}
TOKENS=${TOKENS:-128}
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
llama_tg() {  # tokens/s of llama-bench's generation test
  "$LLAMA_BENCH" -m "$1" -p 0 -n "$TOKENS" -t "$2" -r 1 -o json 2>/dev/null |
    python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["avg_ts"])'
}
chainlm_tg() {
  ./build/chainlm bench decode --model "$1" --threads "$2" --tokens "$TOKENS" --prompt-tokens 1 2>/dev/null |
    tail -1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["tokens_per_s"])'
}
printf '%-28s %7s %14s %14s %8s\n' model threads llama.cpp chainlm ratio
for model in "$@"; do
  for t in $THREADS; do
    l=() c=()
    for ((r = 0; r < ROUNDS; r++)); do
      l+=("$(llama_tg "$model" "$t")")
      c+=("$(chainlm_tg "$model" "$t")")
    done
    lm=$(printf '%s\n' "${l[@]}" | median)
    cm=$(printf '%s\n' "${c[@]}" | median)
    printf '%-28s %7s %14.1f %14.1f %8.2f\n' "$(basename "$model")" "$t" "$lm" "$cm" \
      "$(python3 -c "print($cm / $lm)")"
  done
done
echo "(tokens/s of decoding, median of $ROUNDS interleaved rounds; ratio = chainlm / llama.cpp)"
