#pragma once
// The training loop: AdamW with warmup + cosine schedule, gradient accumulation, global
// norm clipping, the multi-chain objective (SPEC A5), periodic validation, a live progress
// line, a JSONL metrics log and crash-safe checkpoints that resume exactly.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/memory_estimate.h"
#include "model/model.h"
#include "train/dataset.h"
#include "train/distributed.h"
#include "train/optimizer.h"

namespace chainlm {

struct TrainOptions {
  std::string data_dir;  // train.bin, val.bin and the tokenizer (chainlm prepare)
  std::string out_dir;   // run directory
  long steps = 1000;
  int batch_size = 8;    // sequences per optimizer step, over all ranks (the global batch)
  int micro_batch = 0;   // at most this many sequences per forward/backward (gradient
                         // accumulation); 0 = all of a rank's share of the batch at once
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
  // A step whose loss or gradient norm is not finite: "stop" ends the run with an error,
  // "skip" leaves weights and moments untouched and goes on with the next step, giving up
  // after max_nonfinite_skips such steps in a row.
  std::string on_nonfinite = "stop";
  int max_nonfinite_skips = 8;
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

  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
};

class Trainer {
 public:
  // The model must already hold its initial weights. Throws on inconsistent options.
  // With a communicator of N ranks, every rank constructs its own Trainer (the same options)
  // and computes rows [r*B/N, (r+1)*B/N) of every step's global batch; run() starts every
  // rank from rank 0's weights, moments and step, and only rank 0 writes to out_dir.
  Trainer(Model& model, TrainOptions options, const Communicator& comm = Communicator::single());
  ~Trainer();

  // What one process of this run holds: weights, gradients, moments, activations of one
  // micro-batch (src/model/memory_estimate.h). The constructor refuses a run whose estimate
  // does not fit options.memory_limit (or the available memory); call this first to refuse it
  // before even the weights are allocated.
  static MemoryEstimate memory_estimate(const ModelConfig& config, const TrainOptions& options, int ranks);
  static void check_memory(const ModelConfig& config, const TrainOptions& options, int ranks,
                           uint64_t held = 0);
  const MemoryEstimate& estimated_memory() const { return memory_estimate_; }

  // Restores model, optimizer and step from a checkpoint written by save(). With several
  // ranks only rank 0 needs to call it (run() hands its state to the others).
  void restore(const std::string& checkpoint_dir);
  // Copies rank 0's weights, optimizer moments and step to every rank (collective).
  void sync_from_root();
  // Runs from the current step to options.steps.
  void run();

  // One optimizer step (collective); returns the losses of the whole global batch.
  StepLosses train_step();
  // Mean validation loss of every sub-model k = 1..n (index k-1); the windows are split
  // across the ranks (collective).
  std::vector<double> validate();
  // Writes a complete checkpoint directory step-N into the run directory, atomically (rank 0
  // only; run() calls it there and holds the other ranks at a barrier meanwhile): every file
  // is fsynced inside a temporary directory, which is renamed into place before `latest` is
  // switched to it, and only then are older checkpoints pruned. On any failure (full disk,
  // read-only or unwritable directory, non-finite weights) nothing is left behind, `latest`
  // still names the previous checkpoint, and chainlm::Error says what and where.
  std::string save();
  // Creates the run directory and checks it is writable, removes what a killed writer left
  // (temporary checkpoint directories, temporary files) and takes the run's lock so no other
  // process trains into it meanwhile (rank 0 only; run() calls it).
  void prepare_run_dir();

  long step() const { return step_; }
  // Whether the last train_step was skipped (--on-nonfinite skip) and why; steps skipped so far.
  bool last_step_skipped() const { return !last_nonfinite_.empty(); }
  const std::string& last_nonfinite() const { return last_nonfinite_; }
  long skipped_steps() const { return skipped_; }
  // Sequences of every step this rank computes, and per forward/backward.
  int rows_per_rank() const { return rows_; }
  int micro_batch() const { return micro_; }
  // Of the last train_step: seconds inside the gradient allreduce, and the part of them the
  // step waited for (all of it without overlap_comm). Zero with one rank.
  double comm_seconds() const;
  double comm_wait_seconds() const;
  const TrainOptions& options() const { return opt_; }
  float current_lr() const;
  // Trainable parameters (not frozen) over all parameters.
  double trainable_fraction() const;

 private:
  void log_metrics(const nlohmann::json& line);
  // The first weight or AdamW moment that is not finite, as "weight 'name'[i] = nan"; "" when
  // all are finite.
  std::string nonfinite_state() const;
  // Fails when the ranks' weights differ (they never should: same gradients, same steps).
  void check_replicas() const;

  Model& model_;
  TrainOptions opt_;
  const Communicator& comm_;
  TokenDataset train_, val_;
  int T_ = 0, rows_ = 0, micro_ = 0, accum_ = 0;
  MemoryEstimate memory_estimate_;
  long step_ = 0;
  // Steps skipped for non-finite values, in all and in a row up to step_; AdamW's bias
  // correction counts the updates actually applied (step_ - skipped_).
  long skipped_ = 0, skipped_in_a_row_ = 0;
  std::string last_nonfinite_;
  std::string last_saved_;  // the newest checkpoint directory this run wrote or resumed from
  int lock_fd_ = -1;        // the run directory's lock (prepare_run_dir)
  Optimizer optimizer_;
  std::vector<int> tokens_, targets_;
  std::vector<float> weights_;
  std::unique_ptr<GradientReducer> reducer_;
};

}  // namespace chainlm
