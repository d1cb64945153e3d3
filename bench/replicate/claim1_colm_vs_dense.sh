#!/usr/bin/env bash
# Claim 1 (CoLM paper): a Chain-of-Model is comparable to a standard Transformer.
# Four models of width 256 and depth 6 trained on the same tokens, full-model loss only:
#   dense       a plain LLaMA (6.84M parameters)
#   colm        CoLM, chains [1,1,1,1] (5.06M: each linear keeps 10/16 of its blocks)
#   colm-air    CoLM-Air, the same chains with keys and values from chain 1 (4.62M)
#   dense-d224  a plain LLaMA of about CoLM's parameter count (width 224, 5.11M)
# Each model with SEEDS (default "1 2"); about an hour on 2 cores in bf16.
#   bash bench/replicate/claim1_colm_vs_dense.sh      (run again to resume)
source "$(dirname "$0")/lib.sh"
EXPERIMENT=claim1
STEPS=${STEPS:-1200}   # 4.9M tokens per run
guard_committed_results STEPS=1200
SEEDS=${SEEDS:-1 2}
MODELS=(dense colm colm-air dense-d224)
declare -A CONFIG=([dense]=dense-d256 [colm]=colm-d256 [colm-air]=colm-air-d256 [dense-d224]=dense-d224)

prepare_data
train_models
evaluate "${NAMES[@]}"
first=${SEEDS%% *}
runs=("dense-s$first:dense 6.84M" "colm-s$first:CoLM [1,1,1,1] 5.06M"
      "colm-air-s$first:CoLM-Air [1,1,1,1] 4.62M" "dense-d224-s$first:dense d224 5.11M")
PLOT_TITLE="Claim 1: CoLM vs dense (seed $first, full models)" plot_runs loss_vs_tokens.png tokens "${runs[@]}"
PLOT_TITLE="Claim 1: CoLM vs dense, the ends (seed $first)" Y_RANGE=$(end_range "${runs[@]%%:*}") \
  plot_runs loss_vs_tokens_end.png tokens "${runs[@]}"
python3 bench/replicate/summarize.py --full "$RESULTS/$EXPERIMENT" \
  "dense:dense d256" "colm:CoLM [1,1,1,1]" "colm-air:CoLM-Air [1,1,1,1]" "dense-d224:dense d224"
