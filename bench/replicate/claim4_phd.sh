#!/usr/bin/env bash
# Claim 4 (PHD paper): repeating each token K times in training lowers the loss at equal
# parameters and tokens, while inference keeps the KV cache of the original tokens (plus a
# window). Four models with the same weights' shapes (width 256, depth 6, 6.84M parameters) on
# the same tokens:
#   base         a plain LLaMA
#   phd2         PHD, K = 2 (hidden tokens attend all earlier tokens' originals and copies)
#   phd-cswa2    PHD-CSWA-2-16-32 (hidden tokens see a window of 16 inside chunks of 32)
#   phd-cswa3    PHD-CSWA-3-16-32
# A PHD step costs about K times a plain one, so the loss is also plotted against training FLOPs.
# Inference: each model decodes 64 tokens after a 128-token prompt (`bench decode`, 1 thread);
# its KV cache bytes and ms per token are recorded beside the losses.
# SEEDS default "1 2" (docs/replication.md reports both); about two hours on 2 cores in bf16.
#   bash bench/replicate/claim4_phd.sh      (run again to resume)
source "$(dirname "$0")/lib.sh"
EXPERIMENT=claim4
STEPS=${STEPS:-1000}   # 4.1M tokens per run
guard_committed_results STEPS=1000
SEEDS=${SEEDS:-1 2}
MODELS=(base phd2 phd-cswa2 phd-cswa3)
declare -A CONFIG=([base]=dense-d256 [phd2]=phd2-d256 [phd-cswa2]=phd-cswa2-d256 [phd-cswa3]=phd-cswa3-d256)

prepare_data
train_models
evaluate "${NAMES[@]}"
first=${SEEDS%% *}
for m in "${MODELS[@]}"; do
  json="$RESULTS/$EXPERIMENT/$m-s$first.decode.json"
  [ -s "$json" ] && [ "$json" -nt "$RUNS/$EXPERIMENT/$m-s$first/latest" ] && continue
  log "$m-s$first: KV cache and decoding speed"
  "$BIN" bench decode --model "$RUNS/$EXPERIMENT/$m-s$first" --threads 1 --tokens 64 \
    --prompt-tokens 128 | tail -n 1 > "$json.tmp"
  mv "$json.tmp" "$json"
done
runs=("base-s$first:baseline" "phd2-s$first:PHD-2" "phd-cswa2-s$first:PHD-CSWA-2-16-32"
      "phd-cswa3-s$first:PHD-CSWA-3-16-32")
PLOT_TITLE="Claim 4: PHD at equal parameters and tokens (seed $first)" \
  plot_runs loss_vs_tokens.png tokens "${runs[@]}"
PLOT_TITLE="Claim 4: PHD against training FLOPs (seed $first)" \
  plot_runs loss_vs_flops.png flops "${runs[@]}"
PLOT_TITLE="Claim 4: PHD at equal tokens, the ends (seed $first)" Y_RANGE=$(end_range "${runs[@]%%:*}") \
  plot_runs loss_vs_tokens_end.png tokens "${runs[@]}"
python3 bench/replicate/summarize.py "$RESULTS/$EXPERIMENT" \
  "base:baseline" "phd2:PHD-2" "phd-cswa2:PHD-CSWA-2-16-32" "phd-cswa3:PHD-CSWA-3-16-32"
python3 - "$RESULTS/$EXPERIMENT" "$first" "${MODELS[@]}" <<'PY' | tee -a "$RESULTS/$EXPERIMENT/results.md"
import json, sys
results, seed, models = sys.argv[1], sys.argv[2], sys.argv[3:]
print("\n| model | KV cache at 192 tokens | ms per token (1 thread) |\n|---|---:|---:|")
for m in models:
    d = json.load(open(f"{results}/{m}-s{seed}.decode.json"))
    print(f"| {m} | {d['kv_cache_bytes'] / 1024:.0f} KiB | {d['ms_per_token']:.3f} |")
PY
