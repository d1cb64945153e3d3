#pragma once
// The options of a training run (chainlm train). to_json/from_json store them in every
// checkpoint's trainer_state.json, so a resumed run goes on with the options it started with;
// the data-parallel and memory-budget fields describe the process, not the run, and are not
// stored.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/model.h"

namespace chainlm {

struct TrainOptions {
  std::string data_dir;  // train.bin, val.bin and the tokenizer (chainlm prepare)
  std::string out_dir;   // run directory
  long steps = 1000;
  int batch_size = 8;   // sequences per optimizer step, over all ranks (the global batch)
  int micro_batch = 0;  // at most this many sequences per forward/backward (gradient
                        // accumulation); 0 = all of a rank's share of the batch at once
  int seq_len = 0;      // 0 = the model's max_seq_len
  float lr = 1e-3f;
  float min_lr_ratio = 0.1f;
  long warmup = -1;  // -1 = min(100, steps / 10)
  // The cosine schedule's length (0 = steps, fixed when the run starts): raising --steps on
  // resume keeps the schedule and holds its final LR rather than re-stretching it (a jump).
  long lr_schedule_steps = 0;
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // 0 = off
  float beta1 = 0.9f, beta2 = 0.95f;
  long eval_every = 100;  // 0 = only at the end
  int eval_windows = 64;  // validation windows of seq_len tokens (0 = whole split)
  long save_every = 0;    // 0 = at every validation
  int keep_checkpoints = 2;
  uint64_t seed = 1337;
  std::vector<float> chain_loss_weights;  // empty = full model only, [0, ..., 0, 1]
  // Chain tuning (SPEC A7): freeze the first freeze_chains chains; train_only "head" trains
  // the output head alone. Stored in the trainer state, so a resumed run stays frozen.
  int freeze_chains = 0;
  std::string train_only;  // "" (everything not frozen) or "head"
  std::string init;        // the checkpoint the weights came from (--init), for the record
  // A step whose loss or gradient norm is not finite: "stop" ends the run with an error,
  // "skip" leaves weights and moments untouched and goes on with the next step, giving up
  // after max_nonfinite_skips such steps in a row.
  std::string on_nonfinite = "stop";
  // "fp32" or "bf16" (docs/precision.md): bf16 runs every GEMM on bf16 operands over fp32
  // master weights; the state (weights, moments, checkpoints) is fp32 either way, so it may
  // change on resume.
  std::string precision = "fp32";
  int max_nonfinite_skips = 8;
  // Sample generations during training (docs/training.md): every sample_every steps (0 = off)
  // and at the last step, sample_tokens greedy tokens (0 = 32, or what the context leaves)
  // after sample_prompt (BOS alone when empty) from each sub-model in sample_chains (empty =
  // every sub-model). Stored, so a resumed run keeps sampling; all may change on resume.
  long sample_every = 0;
  std::string sample_prompt;
  int sample_tokens = 0;
  std::vector<int> sample_chains;
  bool quiet = false;
  // Data parallelism (docs/distributed.md); neither is part of the run's state. Gradients are
  // summed in buckets of at most bucket_mb megabytes; overlap_comm reduces each layer's
  // buckets while the backward computes the layers below it.
  double bucket_mb = 16;
  bool overlap_comm = false;
  // The memory budget of one process (0 = what the machine has available); a run whose
  // estimate exceeds it is refused before the large buffers are allocated. Not run state.
  uint64_t memory_limit = 0;
  int processes_per_machine = 1;  // ranks sharing this machine's memory
  // A resume (train --resume), whose batch is the run's: its messages offer other rank counts,
  // a new run's another --batch-size. Not run state.
  bool resuming = false;

  // Throws naming the first option outside its range, by its flag (--lr, --grad-clip, ...).
  void check_ranges() const;
  // What the optimizer leaves alone: freeze_chains, train_only, and the chains past the last
  // one with a loss weight (FreezeSpec::used_chains), which no trained sub-model computes.
  FreezeSpec freeze_spec() const;

  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

}  // namespace chainlm
