#!/usr/bin/env bash
# Claim 3 (CoLM paper): progressive scaling. A trained model grows by new chains (chain
# expansion: the same logits until the new chains train) and is then tuned, which should reach a
# larger model's quality for less compute than training that model from scratch.
#   base         a plain LLaMA of width 128 (4 heads, 2.24M parameters), BASE_STEPS steps
#   expanded     `chainlm expand --add-chains 4`: CoLM [4,4] of width 256 whose chain 1 is the base
#   tune-chain   the expanded model with chain 1 frozen (chain tuning), TUNE_STEPS steps
#   tune-all     the expanded model, every weight trained, TUNE_STEPS steps
#   scratch      the expanded shape (CoLM [4,4], width 256) from random weights,
#                BASE_STEPS + TUNE_STEPS steps (as many tokens as base and tuning together)
# Loss against training FLOPs, the tuned runs' curves starting at what the base cost, so whether
# expansion saves compute is read off the plot. SEEDS default "1 2"; about an hour on 2 cores.
#   bash bench/replicate/claim3_expansion.sh      (run again to resume)
source "$(dirname "$0")/lib.sh"
EXPERIMENT=claim3
# STEPS is the other claims' setting: here it would be ignored, and a rerun meant to be short
# trained 1200 steps (a user trial).
if [ -n "${STEPS:-}" ]; then
  echo "replicate: claim 3 takes BASE_STEPS and TUNE_STEPS (the base's and the tunings' steps)," \
    "not STEPS=$STEPS" >&2
  exit 2
fi
BASE_STEPS=${BASE_STEPS:-1200}   # 4.9M tokens
TUNE_STEPS=${TUNE_STEPS:-600}    # 2.5M tokens
guard_committed_results BASE_STEPS=1200 TUNE_STEPS=600
SEEDS=${SEEDS:-1 2}

prepare_data
names=()
for seed in $SEEDS; do
  train_run "base-s$seed" "$BASE_STEPS" --config bench/replicate/configs/dense-d128.json \
    --lr 2e-3 --seed "$seed"
  expanded="$RUNS/$EXPERIMENT/expanded-s$seed"
  if [ ! -f "$expanded/config.json" ]; then
    rm -rf "$expanded"
    "$BIN" expand --from "$RUNS/$EXPERIMENT/base-s$seed" --add-chains 4 --out "$expanded" \
      --seed "$seed" --threads "$THREADS"
  fi
  train_run "tune-chain-s$seed" "$TUNE_STEPS" --init "$expanded" --freeze-chains 1 --lr 1e-3 --seed "$seed"
  train_run "tune-all-s$seed" "$TUNE_STEPS" --init "$expanded" --lr 1e-3 --seed "$seed"
  train_run "scratch-s$seed" $((BASE_STEPS + TUNE_STEPS)) --config bench/replicate/configs/colm2-d256.json \
    --lr 2e-3 --seed "$seed"
  names+=("base-s$seed" "tune-chain-s$seed" "tune-all-s$seed" "scratch-s$seed")
done
evaluate "${names[@]}"

# The base's total tokens and FLOPs (its last logged step), where the tuned runs' curves start.
spent() {
  python3 - "$RESULTS/$EXPERIMENT/$1.metrics.jsonl" "$2" <<'PY'
import json, sys
last = 0
for line in open(sys.argv[1]):
    m = json.loads(line)
    if sys.argv[2] in m and "loss" in m:
        last = m[sys.argv[2]]
print(f"{last:.17g}")
PY
}
first=${SEEDS%% *}
base_flops=$(spent "base-s$first" flops)
base_tokens=$(spent "base-s$first" tokens)
runs=("base-s$first:base d128" "tune-chain-s$first:expanded, chain 2 tuned"
      "tune-all-s$first:expanded, all tuned" "scratch-s$first:CoLM [4,4] d256 from scratch")
PLOT_TITLE="Claim 3: expansion and tuning vs scratch (seed $first)" \
  X_OFFSET="0,$base_flops,$base_flops,0" plot_runs loss_vs_flops.png flops "${runs[@]}"
PLOT_TITLE="Claim 3: expansion and tuning vs scratch (seed $first)" \
  X_OFFSET="0,$base_tokens,$base_tokens,0" plot_runs loss_vs_tokens.png tokens "${runs[@]}"
PLOT_TITLE="Claim 3: the ends, against FLOPs (seed $first)" Y_RANGE=$(end_range "${runs[@]%%:*}") \
  X_OFFSET="0,$base_flops,$base_flops,0" plot_runs loss_vs_flops_end.png flops "${runs[@]}"

python3 bench/replicate/summarize.py --full "$RESULTS/$EXPERIMENT" \
  "base:base d128" "tune-chain:expanded + chain tuning" "tune-all:expanded + full tuning" \
  "scratch:CoLM [4,4] d256 from scratch"
python3 - "$RESULTS/$EXPERIMENT" $SEEDS <<'PY' | tee -a "$RESULTS/$EXPERIMENT/results.md"
import json, sys
results, seeds = sys.argv[1], sys.argv[2:]
def last(name, key):
    v = 0
    for line in open(f"{results}/{name}.metrics.jsonl"):
        m = json.loads(line)
        if key in m and "loss" in m:
            v = m[key]
    return v
def loss(name):
    return json.load(open(f"{results}/{name}.eval.json"))["chains"][-1]["loss"]
print("\n| path to a width-256 CoLM [4,4] | seed | val loss | training FLOPs (base included) | tokens |")
print("|---|---:|---:|---:|---:|")
for s in seeds:
    base_f, base_t = last(f"base-s{s}", "flops"), last(f"base-s{s}", "tokens")
    for name, what in [("tune-chain", "base + expansion + chain tuning"), ("tune-all", "base + expansion + full tuning")]:
        n = f"{name}-s{s}"
        print(f"| {what} | {s} | {loss(n):.4f} | {base_f + last(n, 'flops'):.3g} | {(base_t + last(n, 'tokens')) / 1e6:.2f}M |")
    n = f"scratch-s{s}"
    print(f"| from scratch | {s} | {loss(n):.4f} | {last(n, 'flops'):.3g} | {last(n, 'tokens') / 1e6:.2f}M |")
PY
