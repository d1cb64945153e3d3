#pragma once
// The training loop: AdamW with warmup + cosine schedule, gradient accumulation, global
// norm clipping, the multi-chain objective (SPEC A5), periodic validation, a live progress
// line, a JSONL metrics log and crash-safe checkpoints that resume exactly.
//
// Its jobs live in files of their own: the step loop and validation (trainer.cpp), the contents
// of a checkpoint and resuming from one (trainer_checkpoint.cpp) over the run directory's
// crash-safe protocol (run_directory.h), what a run reports as it goes (training_progress.h),
// and the memory check (trainer_memory.cpp).
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/memory_estimate.h"
#include "model/model.h"
#include "train/dataset.h"
#include "train/distributed.h"
#include "train/optimizer.h"
#include "train/run_directory.h"
#include "train/train_options.h"

namespace chainlm {

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
  static MemoryEstimate memory_estimate(const ModelConfig& config, const TrainOptions& options,
                                        int ranks);
  static void check_memory(const ModelConfig& config, const TrainOptions& options, int ranks,
                           uint64_t held = 0);
  const MemoryEstimate& estimated_memory() const { return memory_estimate_; }

  // Restores model, optimizer and step from a checkpoint written by save(). With several
  // ranks only rank 0 needs to call it (run() hands its state to the others).
  void restore(const std::string& checkpoint_dir);
  // The tokenizer every checkpoint carries: the one in dir with its companion files (chat
  // template, EOS list, special tokens), read now (dir may be pruned or removed later). Without
  // this, the data directory's: a run from --init X or resumed from a checkpoint carries X's or
  // the checkpoint's, which the data's may equal without its companions (a data directory
  // prepared from tokenizer.json alone dropped a chat model's template at every checkpoint).
  void carry_tokenizer_of(const std::string& dir);
  // A resume with nothing to train: a killed writer's leftovers go (RunDirectory::tidy_finished).
  void tidy_finished_run() { run_dir_.tidy_finished(); }
  // Copies rank 0's weights, optimizer moments and step to every rank (collective).
  void sync_from_root();
  // Runs from the current step to options.steps. A stop signal (core/stop_signals.h, installed
  // by the train command) ends it after the current step, which is saved first: then
  // stopped_by() is the signal, and 0 after a run to the end.
  void run();
  int stopped_by() const { return stopped_by_; }

  // One optimizer step (collective); returns the losses of the whole global batch.
  StepLosses train_step();
  // The training and validation shards' fingerprints (TokenShard::fingerprint), for the ranks
  // of a data-parallel run to check they all read the same data.
  // Worked out once (the data stays the run's): the log's first line, resumed events and every
  // checkpoint record it.
  const std::string& data_fingerprint() const { return data_fingerprint_; }
  // Both shards' whole contents ("train.bin crc32 X; val.bin crc32 Y"), which the ranks compare
  // besides the fingerprints (those sample a shard over 4 MiB: a copy differing between the
  // samples trained to other losses without a word).
  std::string data_checksums() const;
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

  // Sample generations (options.sample_every): run() calls the sampler on rank 0 every
  // sample_every steps and at the last step, logs what it returns as {"step", "samples"} in
  // metrics.jsonl and prints it. Generation lives above this layer (infer), so the train command
  // supplies it. Each sample: {"chains", "text", ...}.
  using SampleFn = std::function<nlohmann::json(const Model& model)>;
  void set_sampler(SampleFn sampler) { sampler_ = std::move(sampler); }

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
  // Model FLOPs of one optimizer step over the global batch (model/training_flops.h).
  double flops_per_step() const;

 private:
  // restore()'s reading: weights, AdamW moments, step and skip counts of checkpoint dir.
  void restore_state(const std::string& dir);
  // Appends a line to the run's metrics.jsonl (rank 0 only; a no-op on the others). Under
  // mpirun a failed append (a full disk) is kept in log_error_ and ends every rank together at
  // the step's agreement (stop_agreed): thrown on rank 0 alone it ended the job by MPI_Abort.
  void log_metrics(const nlohmann::json& line);
  std::string log_error_;
  // How this process computes the steps: {"precision", "threads", "gemm"}. Recorded in the log
  // where a run starts or resumes and in every trainer state: a resume on another thread count
  // or GEMM library is not bit-identical to an uninterrupted run, and a report names each
  // precision the steps ran in.
  nlohmann::json compute_json() const;
  // Refuses a run whose estimate e, plus `held` bytes already allocated, does not fit.
  static void check_estimate_fits(const MemoryEstimate& e, const TrainOptions& o, uint64_t held);
  // The first weight or AdamW moment that is not finite, as "weight 'name'[i] = nan"; "" when
  // all are finite.
  std::string nonfinite_state() const;
  // Fails when the ranks' weights differ (they never should: same gradients, same steps).
  void check_replicas() const;

  Model& model_;
  TrainOptions opt_;
  const Communicator& comm_;
  TokenDataset train_, val_;
  std::string data_fingerprint_;
  int T_ = 0, rows_ = 0, micro_ = 0, accum_ = 0;
  MemoryEstimate memory_estimate_;
  long step_ = 0;
  int stopped_by_ = 0;
  // Whether any rank was asked to stop (a signal); throws, on every rank, rank 0's log_error_
  // when it has one. A collective under mpirun.
  bool stop_agreed() const;
  // Steps skipped for non-finite values, in all and in a row up to step_; AdamW's bias
  // correction counts the updates actually applied (step_ - skipped_).
  long skipped_ = 0, skipped_in_a_row_ = 0;
  // The data the restored checkpoint's steps read (data_fingerprint()), "" for a new run or a
  // checkpoint from before it was recorded.
  std::string restored_data_fingerprint_;
  std::string last_nonfinite_;
  RunDirectory run_dir_;  // opt_.out_dir: lock, metrics.jsonl, checkpoints (rank 0 writes)
  Optimizer optimizer_;
  std::vector<int> tokens_, targets_;
  std::vector<float> weights_;
  std::unique_ptr<GradientReducer> reducer_;
  SampleFn sampler_;
  std::vector<std::pair<std::string, std::string>> carried_tokenizer_;  // file name, bytes
};

// train --resume: fails, naming what differs, when the checkpoint's model (config.json, loaded
// as `model`) is not the one its trainer_state.json `state` records the run trained.
void check_run_model_unchanged(const Model& model, const nlohmann::json& state,
                               const std::string& resume_dir);

}  // namespace chainlm
