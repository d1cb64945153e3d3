#pragma once
// The training loop: AdamW with warmup + cosine schedule, gradient accumulation, global
// norm clipping, the multi-chain objective (SPEC A5), periodic validation, a live progress
// line, a JSONL metrics log and crash-safe checkpoints that resume exactly.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/model.h"
#include "train/dataset.h"
#include "train/optimizer.h"

namespace chainlm {

struct TrainOptions {
  std::string data_dir;  // train.bin, val.bin and the tokenizer (chainlm prepare)
  std::string out_dir;   // run directory
  long steps = 1000;
  int batch_size = 8;    // sequences per optimizer step
  int micro_batch = 0;   // sequences per forward/backward; 0 = batch_size (no accumulation)
  int seq_len = 0;       // 0 = the model's max_seq_len
  float lr = 1e-3f;
  float min_lr_ratio = 0.1f;
  long warmup = -1;      // -1 = min(100, steps / 10)
  float weight_decay = 0.1f;
  float grad_clip = 1.0f;  // 0 = off
  float beta1 = 0.9f, beta2 = 0.95f;
  long eval_every = 100;   // 0 = only at the end
  int eval_windows = 64;   // validation windows of seq_len tokens (0 = whole split)
  long save_every = 0;     // 0 = at every validation
  int keep_checkpoints = 2;
  uint64_t seed = 1337;
  std::vector<float> chain_loss_weights;  // empty = full model only, [0, ..., 0, 1]
  // Chain tuning (SPEC A7): freeze the first freeze_chains chains; train_only "head" trains
  // the output head alone. Stored in the trainer state, so a resumed run stays frozen.
  int freeze_chains = 0;
  std::string train_only;  // "" (everything not frozen) or "head"
  std::string init;        // the checkpoint the weights came from (--init), for the record
  bool quiet = false;

  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

class Trainer {
 public:
  // The model must already hold its initial weights. Throws on inconsistent options.
  Trainer(Model& model, TrainOptions options);

  // Restores model, optimizer and step from a checkpoint written by save().
  void restore(const std::string& checkpoint_dir);
  // Runs from the current step to options.steps.
  void run();

  // One optimizer step; returns the losses of its micro-batches averaged.
  StepLosses train_step();
  // Mean validation loss of every sub-model k = 1..n (index k-1).
  std::vector<double> validate();
  // Writes a complete checkpoint directory step-N into the run directory, atomically.
  std::string save();

  long step() const { return step_; }
  const TrainOptions& options() const { return opt_; }
  float current_lr() const;
  // Trainable parameters (not frozen) over all parameters.
  double trainable_fraction() const;

 private:
  void log_metrics(const nlohmann::json& line);

  Model& model_;
  TrainOptions opt_;
  TokenDataset train_, val_;
  int T_ = 0, micro_ = 0, accum_ = 0;
  long step_ = 0;
  Optimizer optimizer_;
  std::vector<int> tokens_, targets_;
  std::vector<float> weights_;
};

}  // namespace chainlm
