#!/usr/bin/env bash
# Claim 2 (CoLM paper): one Chain-of-Model holds a family of sub-models; is sub-model k as good
# as a dense model of its size trained alone on the same tokens? And what does training every
# sub-model cost the full one? Width 256, depth 6, the same tokens for every run:
#   colm-uniform  CoLM [1,1,1,1], chain-loss weights 1,1,1,1 (every sub-model trained)
#   colm-full     CoLM [1,1,1,1], the full model's loss only (the default)
#   dense-d64     a plain LLaMA of sub-model 1's shape (width 64, 2 heads, ffn 172)
#   dense-d128    a plain LLaMA of sub-model 2's shape (width 128, 4 heads, ffn 344)
# Every sub-model of each run is evaluated on the validation split. SEEDS default "1 2"; about
# an hour on 2 cores in bf16.
#   bash bench/replicate/claim2_elastic.sh      (run again to resume)
source "$(dirname "$0")/lib.sh"
EXPERIMENT=claim2
STEPS=${STEPS:-1200}   # 4.9M tokens per run
guard_committed_results STEPS=1200
SEEDS=${SEEDS:-1 2}

MODELS=(colm-uniform colm-full dense-d64 dense-d128)
declare -A CONFIG=([colm-uniform]=colm-d256 [colm-full]=colm-d256 [dense-d64]=dense-d64 [dense-d128]=dense-d128)
declare -A OPTIONS=([colm-uniform]="--chain-loss-weights 1,1,1,1")

prepare_data
train_models
evaluate "${NAMES[@]}"
first=${SEEDS%% *}
CHAINS=1,1,1 PLOT_TITLE="Claim 2: sub-model 1 (seed $first)" plot_runs submodel1.png tokens \
  "colm-uniform-s$first:CoLM, uniform weights," "colm-full-s$first:CoLM, full model only," \
  "dense-d64-s$first:dense d64 (its shape)"
CHAINS=2,2,1 PLOT_TITLE="Claim 2: sub-model 2 (seed $first)" plot_runs submodel2.png tokens \
  "colm-uniform-s$first:CoLM, uniform weights," "colm-full-s$first:CoLM, full model only," \
  "dense-d128-s$first:dense d128 (its shape)"
CHAINS=4,4 PLOT_TITLE="Claim 2: the full model (seed $first)" plot_runs submodel4.png tokens \
  "colm-uniform-s$first:CoLM, uniform weights," "colm-full-s$first:CoLM, full model only,"
python3 bench/replicate/summarize.py "$RESULTS/$EXPERIMENT" \
  "colm-uniform:CoLM uniform weights" "colm-full:CoLM full model only" \
  "dense-d64:dense d64" "dense-d128:dense d128"
