#!/usr/bin/env bash
# Decoding speed of chainlm against llama2.c's run.c on the same llama2.c checkpoint, 1 thread,
# interleaved (run.c, chainlm, run.c, ...) so the machine's drift hits both alike (issue 20). It
# downloads and builds nothing: give it run.c built beside the project (from karpathy/llama2.c:
# `gcc -Ofast -march=native run.c -lm -o run`), a llama2.c model and its tokenizer .bin.
#   bash bench/vs_runc.sh RUN MODEL.bin TOKENIZER.bin
# Environment: ROUNDS (5), TOKENS (256). run.c decodes greedily (-t 0) from its BOS token and
# reports "achieved tok/s" over every token after the first (its story goes to /dev/null);
# chainlm the same from a 1-token prompt (`bench decode --prompt-tokens 1`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: bench/vs_runc.sh RUN MODEL.bin TOKENIZER.bin}
MODEL=${2:?usage: bench/vs_runc.sh RUN MODEL.bin TOKENIZER.bin}
TOKENIZER=${3:?usage: bench/vs_runc.sh RUN MODEL.bin TOKENIZER.bin}
[ -x "$RUN" ] || { echo "vs_runc.sh: $RUN is not an executable run.c build" >&2; exit 1; }
ROUNDS=${ROUNDS:-5}
TOKENS=${TOKENS:-256}
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
r=() c=() ratios=()
for ((i = 0; i < ROUNDS; i++)); do
  rt=$("$RUN" "$MODEL" -z "$TOKENIZER" -t 0 -n "$TOKENS" 2>&1 >/dev/null | sed -n 's/.*achieved tok\/s: \([0-9.]*\).*/\1/p')
  [ -n "$rt" ] || { echo "vs_runc.sh: $RUN printed no 'achieved tok/s'" >&2; exit 1; }
  ct=$(./build/chainlm bench decode --model "$MODEL" --threads 1 --tokens "$TOKENS" --prompt-tokens 1 2>/dev/null |
    tail -1 | python3 -c 'import json, sys; print(json.loads(sys.stdin.read())["tokens_per_s"])')
  r+=("$rt") c+=("$ct") ratios+=("$(python3 -c "print($ct / $rt)")")
  printf 'round %d: run.c %.0f, chainlm %.0f tokens/s (%.2fx)\n' "$((i + 1))" "$rt" "$ct" "${ratios[-1]}"
done
printf 'median of %d rounds: run.c %.0f, chainlm %.0f tokens/s; chainlm / run.c per round, median %.2f\n' "$ROUNDS" \
  "$(printf '%s\n' "${r[@]}" | median)" "$(printf '%s\n' "${c[@]}" | median)" "$(printf '%s\n' "${ratios[@]}" | median)"
