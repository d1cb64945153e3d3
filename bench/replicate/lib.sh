# Shared steps of the replication experiments (bench/replicate/claim*.sh), sourced by each.
#
# Every experiment is a list of training runs on one tokenized corpus, then an evaluation of
# every sub-model of every run on the same validation split, a table and plots. Runs live in
# $RUNS (default runs/replicate/, ignored by git); what is committed is the small part: each
# run's metrics.jsonl, the evaluation JSON, the tables and the PNGs, under
# bench/replicate/results/<experiment>/.
#
# Resumable: a run whose checkpoint already reached its steps is skipped, a run with an earlier
# checkpoint continues from it (`train --resume`, bit-identical to an uninterrupted run), so a
# killed experiment picks up where it stopped when started again.

set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$REPO"

# Settings come from the environment only: `claim1_colm_vs_dense.sh --help` started an hour of
# training with the defaults (a user trial).
if [ $# -gt 0 ]; then
  echo "replicate: $(basename "$0") takes no arguments (got: $*); its settings come from the" \
    "environment: STEPS=... SEEDS=... RUNS=... RESULTS=... (docs/replication.md)" >&2
  exit 2
fi

BIN_GIVEN=${BIN+set}
BIN=${BIN:-build/chainlm}
case $BIN in */*) ;; *) BIN=$(command -v "$BIN" || echo "$BIN") ;; esac  # a command's name: from PATH
RUNS=${RUNS:-runs/replicate}
RESULTS=${RESULTS:-bench/replicate/results}  # committed: metrics, evaluations, tables, plots
DATA=${DATA:-data/replicate}            # made by prepare_data: tok.model, and shards/
SHARDS=$DATA/shards
CORPUS_DIR=${CORPUS_DIR:-data/replicate_corpus}
THREADS=${THREADS:-2}
PRECISION=${PRECISION:-bf16}             # docs/precision.md: within 0.02% of fp32's loss
VOCAB=4096
SEQ_LEN=256
BATCH=16                                 # 4,096 tokens per step
declare -A OPTIONS=()                    # per-model training options (train_models); scripts fill it

if [ ! -x "$BIN" ] || [ -d "$BIN" ]; then
  if [ -n "$BIN_GIVEN" ]; then
    echo "replicate: BIN=$BIN is not an executable file (nor a command on PATH)" >&2
  else
    echo "replicate: $BIN is missing; run 'make build' first" >&2
  fi
  exit 1
fi
# The plots come last: a missing gnuplot is told before hours of training, not after.
command -v gnuplot > /dev/null || {
  echo "replicate: gnuplot is not installed; the plots need it (Debian's gnuplot-nox; make setup installs it)" >&2
  exit 1
}

# A rerun with other settings writes other numbers: into the committed results it would overwrite
# them file by file before summarize.py refused to mix them (a user trial). Call with the claim's
# step settings as NAME=DEFAULT; refused unless RESULTS is elsewhere or every setting is the
# committed one.
guard_committed_results() {
  [ "$(cd "$(dirname "$RESULTS")" 2> /dev/null && pwd)/$(basename "$RESULTS")" = \
    "$REPO/bench/replicate/results" ] || return 0
  local differ=() pair name default
  for pair in "$@" PRECISION=bf16 CORPUS_DIR=data/replicate_corpus; do
    name=${pair%%=*} default=${pair#*=}
    [ "${!name}" = "$default" ] || differ+=("$name=${!name}")
  done
  [ ${#differ[@]} -eq 0 ] && return 0
  echo "replicate: ${differ[*]} would overwrite the committed results in bench/replicate/results" \
    "with a run of other settings; give this rerun RESULTS (and RUNS) directories of its own" >&2
  exit 1
}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# The corpus (bench/replicate/corpus/build_corpus.sh: train.txt and its held-out val.txt), a
# SentencePiece BPE tokenizer of $VOCAB pieces trained on train.txt, and token shards that keep
# the corpus' split. Made once; every experiment reuses them.
# $DATA/corpus_dir names the corpus it was made from: another CORPUS_DIR with the same DATA was
# silently trained on the old shards (a user trial).
prepare_data() {
  local corpus
  corpus=$(mkdir -p "$CORPUS_DIR" && cd "$CORPUS_DIR" && pwd)
  if [ -s "$SHARDS/train.bin" ] && [ -s "$SHARDS/val.bin" ]; then
    if [ -s "$DATA/corpus_dir" ] && [ "$(cat "$DATA/corpus_dir")" != "$corpus" ]; then
      echo "replicate: DATA=$DATA was made from the corpus in $(cat "$DATA/corpus_dir")," \
        "not CORPUS_DIR=$CORPUS_DIR; give this corpus a DATA directory of its own" >&2
      exit 1
    fi
    return
  fi
  [ -s "$CORPUS_DIR/train.txt" ] && [ -s "$CORPUS_DIR/val.txt" ] ||
    bash bench/replicate/corpus/build_corpus.sh "$CORPUS_DIR"
  mkdir -p "$DATA"
  echo "$corpus" > "$DATA/corpus_dir"
  [ -s "$DATA/tok.model" ] ||
    "$BIN" tokenizer train --corpus "$CORPUS_DIR/train.txt" \
      --vocab-size "$VOCAB" --out "$DATA/tok.model" --seed 0
  "$BIN" prepare --tokenizer "$DATA/tok.model" --input "$CORPUS_DIR/train.txt" \
    --val-input "$CORPUS_DIR/val.txt" --out "$SHARDS" --overwrite
}

# The last step a run has a checkpoint of (0 when none), from the name `latest` points to.
checkpoint_step() {
  local latest="$1/latest"
  [ -f "$latest" ] || { echo 0; return; }
  local dir
  dir=$(cat "$latest")
  echo $((10#${dir#step-}))
}

# train_run NAME STEPS ARGS...: a training run of STEPS steps in $RUNS/$EXPERIMENT/NAME, with
# the experiment's fixed batch, sequence length, precision and threads; ARGS are the model
# (--config or --init) and anything else it needs. Skipped when done, resumed when started.
train_run() {
  local name=$1 steps=$2
  shift 2
  local out="$RUNS/$EXPERIMENT/$name" done
  done=$(checkpoint_step "$out")
  # A run started for another number of steps: resumed, it kept its learning-rate schedule
  # (and a longer one counted as done), so its results were neither run's. A base trained on
  # changes every expansion and tuning made from it too. Refused, naming what to remove.
  if [ "$done" -gt 0 ]; then
    local planned
    planned=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["options"]["lr_schedule_steps"])' \
      "$out/$(cat "$out/latest")/trainer_state.json")
    if [ "$planned" != "$steps" ]; then
      echo "replicate: $out was started for $planned steps, not $steps; remove it (in claim 3," \
        "with the runs made from it) or give RUNS and RESULTS directories of their own" >&2
      exit 1
    fi
  fi
  if [ "$done" -ge "$steps" ]; then
    log "$name: done ($done steps)"
    return
  fi
  local start=()
  if [ "$done" -gt 0 ]; then
    log "$name: resuming at step $done of $steps"
    # The model comes from the checkpoint: drop --config/--init and their values.
    local args=() skip=0 a
    for a in "$@"; do
      if [ $skip = 1 ]; then skip=0; continue; fi
      case $a in --config|--init) skip=1; continue ;; esac
      args+=("$a")
    done
    set -- "${args[@]}"
    start=(--resume)
  else
    log "$name: training $steps steps"
    rm -rf "$out"
  fi
  mkdir -p "$(dirname "$out")"
  "$BIN" train "${start[@]}" "$@" --data "$SHARDS" --out "$out" --steps "$steps" \
    --batch-size "$BATCH" --seq-len "$SEQ_LEN" --threads "$THREADS" --precision "$PRECISION" \
    --eval-every "${EVAL_EVERY:-100}" --save-every "${SAVE_EVERY:-200}" --quiet
}

# train_models: each model of MODELS with each seed of SEEDS for STEPS steps, from the config
# bench/replicate/configs/${CONFIG[model]}.json, peak LR 2e-3, plus the training options in
# ${OPTIONS[model]} when set; the runs are named MODEL-sSEED and listed in NAMES.
train_models() {
  NAMES=()
  local seed m extra
  for seed in $SEEDS; do
    for m in "${MODELS[@]}"; do
      read -r -a extra <<< "${OPTIONS[$m]:-}"
      train_run "$m-s$seed" "$STEPS" --config "bench/replicate/configs/${CONFIG[$m]}.json" \
        --lr 2e-3 --seed "$seed" "${extra[@]}"
      NAMES+=("$m-s$seed")
    done
  done
}

# evaluate NAME...: every sub-model of each run on the whole validation split, one JSON line
# per run in results/$EXPERIMENT/eval.jsonl (kept when the run has not changed since).
evaluate() {
  local results="$RESULTS/$EXPERIMENT" name
  mkdir -p "$results"
  for name in "$@"; do
    local out="$RUNS/$EXPERIMENT/$name" json="$results/$name.eval.json"
    if [ -s "$json" ] && [ "$json" -nt "$out/latest" ]; then continue; fi
    log "$name: evaluating every sub-model on the validation split"
    "$BIN" eval ppl --model "$out" --data "$SHARDS/val.bin" --seq-len "$SEQ_LEN" \
      --threads "$THREADS" --json > "$json.tmp"
    mv "$json.tmp" "$json"
    cp "$out/metrics.jsonl" "$results/$name.metrics.jsonl"
  done
}

# end_range NAME...: a loss range LO:HI around the runs' final validation losses (their full
# models), for a second picture in which their ends can be told apart.
end_range() {
  python3 - "$RESULTS/$EXPERIMENT" "$@" <<'PY'
import json, sys
losses = [json.load(open(f"{sys.argv[1]}/{n}.eval.json"))["chains"][-1]["loss"] for n in sys.argv[2:]]
print(f"{min(losses) - 0.1:.2f}:{max(losses) + 0.4:.2f}")
PY
}

# plot_runs OUT.png X RUN:LABEL...: runs overlaid (their full models; CHAINS=k for sub-model k of
# every run, or k1,k2,... one per run; X_OFFSET=x1,x2,... where each run's curve starts; Y_RANGE=
# LO:HI for the loss axis).
plot_runs() {
  local png=$1 x=$2
  shift 2
  local dirs=() labels=() item
  for item in "$@"; do
    dirs+=("$RUNS/$EXPERIMENT/${item%%:*}")
    labels+=("${item#*:}")
  done
  local extra=()
  [ -n "${CHAINS:-}" ] && extra+=(--chains "$CHAINS")
  [ -n "${X_OFFSET:-}" ] && extra+=(--x-offset "$X_OFFSET")
  [ -n "${Y_RANGE:-}" ] && extra+=(--y-range "$Y_RANGE")
  "$BIN" plot "${dirs[@]}" --x "$x" "${extra[@]}" --label "${labels[@]}" \
    --out "$RESULTS/$EXPERIMENT/$png" --overwrite --width 800 --height 500 \
    --title "${PLOT_TITLE:-$EXPERIMENT}"
}
