#!/usr/bin/env bash
# Claim 5 (neither paper): Chain-of-Model and PHD together. Does token repetition help every
# sub-model of a CoLM as it helps a dense model (claim 4), and do the sub-models stay usable?
#   colm       CoLM [1,1,1,1], width 256, chain-loss weights 1,1,1,1
#   colm-phd   the same with PHD-CSWA-2-16-32 (each token twice in training; inference keeps the
#              original tokens' KV cache and a window of 16 inside chunks of 32)
# Every sub-model of both on the validation split, against tokens and against FLOPs.
# SEEDS default "1 2"; about an hour on 2 cores in bf16.
#   bash bench/replicate/claim5_colm_phd.sh      (run again to resume)
source "$(dirname "$0")/lib.sh"
EXPERIMENT=claim5
STEPS=${STEPS:-1200}   # 4.9M tokens per run
guard_committed_results STEPS=1200
SEEDS=${SEEDS:-1 2}

MODELS=(colm colm-phd)
declare -A CONFIG=([colm]=colm-d256 [colm-phd]=colm-phd-cswa2-d256)
declare -A OPTIONS=([colm]="--chain-loss-weights 1,1,1,1" [colm-phd]="--chain-loss-weights 1,1,1,1")

prepare_data
train_models
evaluate "${NAMES[@]}"
first=${SEEDS%% *}
for k in 1 4; do
  for x in tokens flops; do
    CHAINS=$k PLOT_TITLE="Claim 5: CoLM x PHD, sub-model $k (seed $first)" plot_runs "submodel${k}_vs_$x.png" "$x" \
      "colm-s$first:CoLM [1,1,1,1]" "colm-phd-s$first:CoLM [1,1,1,1] + PHD-CSWA-2-16-32"
  done
done
python3 bench/replicate/summarize.py "$RESULTS/$EXPERIMENT" \
  "colm:CoLM [1,1,1,1]" "colm-phd:CoLM [1,1,1,1] + PHD-CSWA-2-16-32"
