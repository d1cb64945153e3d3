#include "train/trainer.h"

#include <algorithm>
#include <cmath>
#include <csignal>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/fault_injection.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/precision.h"
#include "core/stop_signals.h"
#include "core/threads.h"
#include "core/timer.h"
#include "core/version.h"
#include "io/data_directory.h"
#include "io/safetensors.h"
#include "kernels/gemm_backend.h"
#include "model/training_flops.h"
#include "train/lr_schedule.h"
#include "train/training_progress.h"

namespace chainlm {

namespace fs = std::filesystem;

std::string Trainer::data_checksums() const {
  return cat("train.bin crc32 ", crc32_hex(train_.content_crc()), "; val.bin crc32 ",
             crc32_hex(val_.content_crc()));
}

Trainer::Trainer(Model& model, TrainOptions options, const Communicator& comm)
    : model_(model),
      opt_(std::move(options)),
      comm_(comm),
      train_(data_shard_path(opt_.data_dir, "train.bin")),
      val_(data_shard_path(opt_.data_dir, "val.bin")),
      data_fingerprint_("train.bin " + train_.fingerprint() + "; val.bin " + val_.fingerprint()),
      run_dir_(opt_.out_dir),
      optimizer_(model_.params(), OptimizerConfig{opt_.beta1, opt_.beta2, 1e-8f, opt_.weight_decay,
                                                  opt_.grad_clip}) {
  const ModelConfig& c = model_.config();
  opt_.check_ranges();
  T_ = opt_.seq_len > 0 ? opt_.seq_len : c.max_seq_len;
  CHAINLM_CHECK(T_ <= c.max_seq_len, "--seq-len ", T_, " exceeds the model's max_seq_len ",
                c.max_seq_len);
  CHAINLM_CHECK(opt_.steps > 0, "--steps must be positive");
  CHAINLM_CHECK(opt_.batch_size > 0, "--batch-size must be positive");
  // The global batch is split evenly over the ranks; each rank runs its share in micro-batches
  // of at most micro_batch sequences.
  const int ranks = comm_.size();
  // A resume keeps the run's batch: the way on is another rank count, or a new run from the
  // checkpoint.
  std::string dividing;
  for (int r = 1; r <= opt_.batch_size && r <= 64; ++r)
    if (opt_.batch_size % r == 0) dividing += cat(dividing.empty() ? "" : ", ", r);
  CHAINLM_CHECK(
      opt_.batch_size % ranks == 0, "--batch-size ", opt_.batch_size,
      " is the global batch and must be a multiple of the number of ranks (", ranks, "): ",
      opt_.resuming
          ? cat("a resumed run keeps its batch: resume it on ", dividing,
                " rank(s), or start a new run from its checkpoint with --init and another "
                "--batch-size")
          : cat("give a multiple of ", ranks));
  CHAINLM_CHECK(opt_.micro_batch >= 0, "--micro-batch must be >= 0");
  rows_ = opt_.batch_size / ranks;
  micro_ = opt_.micro_batch > 0 ? std::min(opt_.micro_batch, rows_) : rows_;
  // The largest micro-batch that fits: a resume under mpirun with another rank count meets
  // this with the run's stored values, neither of which the user passed.
  int fits = micro_;
  while (rows_ % fits != 0) --fits;
  CHAINLM_CHECK(rows_ % micro_ == 0, "--batch-size ", opt_.batch_size,
                ranks > 1
                    ? cat(" over ", ranks, " ranks gives ", rows_, " sequences per rank, which")
                    : std::string(),
                " must be a multiple of --micro-batch ", micro_, "; pass --micro-batch ", fits,
                " (the steps stay the same; a resumed run may change it, not --batch-size)");
  accum_ = rows_ / micro_;
  CHAINLM_CHECK((long)train_.vocab_size() <= c.vocab_size, train_.path(),
                ": tokens use a vocabulary of ", train_.vocab_size(),
                " but the model's vocab_size is ", c.vocab_size);
  CHAINLM_CHECK(train_.size() > (uint64_t)T_, train_.path(), ": ", train_.size(),
                " tokens is fewer than one window of seq_len+1 = ", T_ + 1);
  CHAINLM_CHECK(val_.num_windows(T_) > 0 || val_.size() > 1, val_.path(),
                ": the validation split is empty");
  if (opt_.lr_schedule_steps <= 0) opt_.lr_schedule_steps = opt_.steps;
  if (opt_.warmup < 0) opt_.warmup = std::min<long>(100, opt_.lr_schedule_steps / 10);
  // A warmup as long as the schedule leaves no cosine decay (cosine_lr): the learning rate climbs
  // to --lr (or, past the run's end, part of the way) and then drops to its final value at once.
  if (opt_.warmup >= opt_.lr_schedule_steps && comm.is_root()) {
    const long W = opt_.warmup, S = opt_.steps;
    const std::string what =
        W > S ? cat("the run ends while the learning rate is still warming up, at ", S, "/", W,
                    " of --lr ", opt_.lr)
              : cat("there is no cosine decay: the learning rate climbs to --lr ", opt_.lr,
                    " over ", W, W == 1 ? " step" : " steps",
                    W < S ? ", then drops at once to its final value (--min-lr-ratio)"
                          : " and the run ends there");
    std::fprintf(
        stderr,
        "warning: --warmup %ld is not below the schedule's %ld steps (--lr-schedule-steps, else "
        "--steps): %s\n",
        W, opt_.lr_schedule_steps, what.c_str());
  }
  // A run ending before its schedule does (--steps lowered on resume: the schedule's length stays
  // unless --lr-schedule-steps is given again) ended near its peak learning rate with only
  // "--steps 300 -> 60" said.
  if (opt_.steps < opt_.lr_schedule_steps && opt_.steps > 0 && comm.is_root()) {
    const float last = cosine_lr(opt_.steps - 1, opt_.warmup, opt_.lr_schedule_steps, opt_.lr,
                                 opt_.lr * opt_.min_lr_ratio);
    std::fprintf(
        stderr,
        "note: the run ends at step %ld, before its learning-rate schedule's end at step "
        "%ld (--lr-schedule-steps, which a resume keeps unless it is given): its last step runs "
        "at %.3g, %.0f%% of --lr\n",
        opt_.steps, opt_.lr_schedule_steps, last, 100.0 * last / opt_.lr);
  }
  const int n = model_.layout().n;
  if (opt_.chain_loss_weights.empty()) {
    opt_.chain_loss_weights.assign(n, 0.0f);
    opt_.chain_loss_weights.back() = 1.0f;
  }
  CHAINLM_CHECK((int)opt_.chain_loss_weights.size() == n, "--chain-loss-weights lists ",
                opt_.chain_loss_weights.size(), " weights but the model has ",
                count_of(n, "chain"));
  weights_ = opt_.chain_loss_weights;
  CHAINLM_CHECK(opt_.train_only.empty() || opt_.train_only == "head", "--train-only '",
                opt_.train_only, "': the only choice is 'head'");
  CHAINLM_CHECK(opt_.on_nonfinite == "stop" || opt_.on_nonfinite == "skip", "--on-nonfinite '",
                opt_.on_nonfinite, "': choose 'stop' or 'skip'");
  CHAINLM_CHECK(opt_.max_nonfinite_skips >= 0, "--max-nonfinite-skips must be >= 0");
  // bf16: the GEMMs read bf16 copies of the fp32 master weights, made at the start of every
  // step (and of every validation), after the weights last changed.
  if (parse_precision(opt_.precision) == Precision::Bf16) model_.use_bf16_weights(/*keep_fp32=*/true);
  const FreezeSpec freeze = opt_.freeze_spec();
  model_.set_freeze(freeze);
  if (freeze.chains > 0) {
    bool trains = false;
    for (int i = freeze.chains; i < n; ++i) trains = trains || weights_[i] > 0;
    CHAINLM_CHECK(trains, "--chain-loss-weights put no weight on a sub-model with more than the ",
                  freeze.chains, " frozen chain(s), so nothing would train");
  }
  // The weights are already in memory (counted in the estimate, gone from what is available).
  memory_estimate_ = memory_estimate(c, opt_, ranks);
  check_estimate_fits(memory_estimate_, opt_, model_.params().size() * sizeof(float));
  model_.ensure_grads();
  tokens_.resize((size_t)micro_ * T_);
  targets_.resize((size_t)micro_ * T_);
  if (ranks > 1) {
    CHAINLM_CHECK(opt_.bucket_mb > 0, "the gradient bucket size must be positive");
    ParamStore& ps = model_.params();
    reducer_ = std::make_unique<GradientReducer>(
        comm_, ps.grads(), ps.size(), model_.gradient_ready_points(),
        (std::size_t)(opt_.bucket_mb * (1 << 20) / sizeof(float)), opt_.overlap_comm);
  }
}

namespace {

// Raises, on every rank together, the first rank's error when any rank has one (collective).
// Under mpirun it names that rank and its machine: rank 0's run directory (locked by another
// process, on a full disk) is on rank 0's machine alone.
void fail_together(const Communicator& comm, const std::string& local_error) {
  const std::string e = comm.first_error(with_rank_named(comm, local_error));
  if (e.empty()) return;
  if (comm.size() > 1) throw CollectiveError(e);
  throw Error(e);
}

}  // namespace

// Whether a stop signal reached any rank (collective under mpirun: every rank stops at the
// same step, or none does).
bool Trainer::stop_agreed() const {
  // One reduction for both: 2 when rank 0's log failed, else 1 when a rank was asked to stop.
  double asked = !log_error_.empty() ? 2.0 : stop_requested() ? 1.0 : 0.0;
  if (comm_.size() > 1) comm_.allreduce_max(&asked, 1);
  if (asked > 1.0) fail_together(comm_, log_error_);
  return asked > 0.0;
}

Trainer::~Trainer() {
  if (reducer_) model_.set_backward_hook(nullptr);
}

double Trainer::comm_seconds() const {
  return reducer_ ? reducer_->comm_seconds() : 0.0;
}
double Trainer::comm_wait_seconds() const {
  return reducer_ ? reducer_->wait_seconds() : 0.0;
}

float Trainer::current_lr() const {
  return cosine_lr(step_, opt_.warmup, opt_.lr_schedule_steps, opt_.lr, opt_.lr * opt_.min_lr_ratio);
}

double Trainer::flops_per_step() const {
  return training_flops_per_token(model_, T_, weights_) * opt_.batch_size * T_;
}

double Trainer::trainable_fraction() const {
  const ParamStore& ps = model_.params();
  return (double)ps.trainable_numel() / (double)ps.numel();
}

StepLosses Trainer::train_step() {
  ParamStore& ps = model_.params();
  model_.refresh_bf16_weights();  // bf16 runs: once per step, whatever the micro-batches
  ps.zero_grads();
  StepLosses avg;
  const int n = model_.layout().n;
  avg.chain_loss.assign(n, 0.0);
  // Every micro-batch, on every rank, holds micro_ * T targets (training windows have no
  // ignored targets), so scaling each one's mean-loss gradient by 1 / (micro-batches over all
  // ranks) makes the sum over ranks the gradient of the mean over the global batch's tokens,
  // whatever the number of ranks.
  const int parts = accum_ * comm_.size();
  const long number = step_ + 1;  // steps count from 1 in metrics.jsonl and messages
  last_nonfinite_.clear();
  // Fault injection (tests): a NaN gradient scale makes the whole backward NaN, on the last
  // rank only, so under mpirun the others see it only through the gradient sum.
  const bool poison = fault::nan_grad_at_step(number) && comm_.rank() == comm_.size() - 1;
  if (reducer_) reducer_->begin();
  for (int micro = 0; micro < accum_; ++micro) {
    // Row g of the global batch is keyed by (seed, step, g) alone, so neither the micro-batch
    // size nor the number of ranks changes the data a step sees.
    const int row0 = comm_.rank() * rows_ + micro * micro_;
    train_.train_batch(opt_.seed, step_, 0, opt_.batch_size, row0, micro_, T_, tokens_.data(),
                       targets_.data());
    // The last backward hands each finished layer's buckets to the reducer as it goes.
    const bool last = micro + 1 == accum_;
    if (reducer_ && reducer_->overlap() && last)
      model_.set_backward_hook([r = reducer_.get()](std::size_t from) { r->ready(from); });
    const float grad_scale =
        poison && micro == 0 ? std::numeric_limits<float>::quiet_NaN() : 1.0f / parts;
    StepLosses l =
        model_.forward_backward(tokens_.data(), targets_.data(), micro_, T_, weights_, grad_scale);
    if (reducer_ && reducer_->overlap() && last) model_.set_backward_hook(nullptr);
    avg.loss += l.loss / parts;
    avg.tokens += l.tokens;
    for (int i = 0; i < n; ++i) avg.chain_loss[i] += l.chain_loss[i] / parts;
  }
  if (reducer_) {
    reducer_->finish();
    // The losses of the global batch: every rank's sums, summed (NaN stays NaN, so a chain
    // that was not computed, or a non-finite loss on any rank, shows on all of them).
    std::vector<double> sums = {avg.loss, (double)avg.tokens};
    sums.insert(sums.end(), avg.chain_loss.begin(), avg.chain_loss.end());
    comm_.allreduce_sum(sums.data(), sums.size());
    avg.loss = sums[0];
    avg.tokens = (long)sums[1];
    std::copy(sums.begin() + 2, sums.end(), avg.chain_loss.begin());
  }
  fault::point("train.mid_step");  // gradients complete, no weight changed yet
  // Every rank decides from the same values, the summed loss and the norm of the summed
  // gradient, so under mpirun they all stop, or all skip, together.
  std::string nonfinite;
  if (!std::isfinite(avg.loss)) {
    nonfinite = cat("the loss is not finite (", avg.loss, ")");
  } else {
    avg.grad_norm = optimizer_.grad_norm(ps);
    if (!std::isfinite(avg.grad_norm))
      nonfinite = cat("the gradient norm is not finite (", avg.grad_norm, ")");
  }
  if (!nonfinite.empty()) {
    const bool skip = opt_.on_nonfinite == "skip";
    if (skip && skipped_in_a_row_ < opt_.max_nonfinite_skips) {
      // Weights and moments stay as they are; the step's data and learning rate are used up.
      ++skipped_;
      ++skipped_in_a_row_;
      ++step_;
      last_nonfinite_ = nonfinite;
      return avg;
    }
    const std::string& saved = run_dir_.last_checkpoint();
    const std::string kept =
        saved.empty() ? std::string()
                      : cat(" The latest checkpoint, ", saved, ", holds finite weights.");
    const std::string message =
        skip ? cat("step ", number, ": ", nonfinite, " after ", skipped_in_a_row_,
                   " skipped step(s) in a row (--max-nonfinite-skips ", opt_.max_nonfinite_skips,
                   "); giving up, the run looks diverged. No weight was changed.", kept,
                   " Lower --lr.")
             : cat("step ", number, ": ", nonfinite, "; stopped before any weight was changed.",
                   kept, " Lower --lr, or pass --on-nonfinite skip to skip such steps.");
    if (comm_.size() > 1) throw CollectiveError(message);
    fail(message);
  }
  skipped_in_a_row_ = 0;
  // AdamW's bias correction counts the updates applied, not the steps skipped.
  optimizer_.apply(ps, step_ + 1 - skipped_, current_lr(), avg.grad_norm);
  ++step_;
  return avg;
}

std::vector<double> Trainer::validate() {
  model_.refresh_bf16_weights();
  const int n = model_.layout().n;
  long windows = val_.num_windows(T_);
  int T = T_;
  if (windows == 0) {  // a tiny validation split: one shorter window
    T = (int)val_.size() - 1;
    windows = 1;
  }
  if (opt_.eval_windows > 0) windows = std::min<long>(windows, opt_.eval_windows);
  // Rank r takes windows [r*W/N, (r+1)*W/N); the sums and counts are added over the ranks.
  std::vector<double> sums(n + 1, 0.0);  // per sub-model, then the target count
  const long first = windows * comm_.rank() / comm_.size();
  const long end = windows * (comm_.rank() + 1) / comm_.size();
  const int rows = micro_;
  std::vector<int> tok((size_t)rows * T), tgt((size_t)rows * T);
  for (long w0 = first; w0 < end; w0 += rows) {
    const int r = (int)std::min<long>(rows, end - w0);
    for (int i = 0; i < r; ++i)
      val_.window(w0 + i, T, tok.data() + (size_t)i * T, tgt.data() + (size_t)i * T);
    long nt = 0;
    auto s = model_.evaluate(tok.data(), tgt.data(), r, T, n, &nt);
    for (int i = 0; i < n; ++i) sums[i] += s[i];
    sums[n] += (double)nt;
  }
  comm_.allreduce_sum(sums.data(), sums.size());
  const double count = std::max(sums[n], 1.0);
  sums.pop_back();
  for (auto& s : sums) s /= count;
  return sums;
}

void Trainer::log_metrics(const nlohmann::json& line) {
  if (!comm_.is_root()) return;
  if (comm_.size() == 1) return run_dir_.append_metrics(line);
  if (!log_error_.empty()) return;  // the run ends at the step's agreement
  try {
    run_dir_.append_metrics(line);
  } catch (const Error& e) {
    log_error_ = e.what();
  }
}

void Trainer::sync_from_root() {
  if (comm_.size() == 1) return;
  ParamStore& ps = model_.params();
  comm_.broadcast(&step_, sizeof step_);
  comm_.broadcast(ps.values(), ps.size() * sizeof(float));
  comm_.broadcast(optimizer_.m().data(), optimizer_.m().size() * sizeof(float));
  comm_.broadcast(optimizer_.v().data(), optimizer_.v().size() * sizeof(float));
}

void Trainer::check_replicas() const {
  if (comm_.size() == 1) return;
  // A fingerprint of the weights' bits (xor-rotate over 64-bit words); the ranks compare
  // its minimum and maximum.
  const ParamStore& ps = model_.params();
  const auto* w = reinterpret_cast<const uint32_t*>(ps.values());
  uint64_t h = 0;
  for (std::size_t i = 0; i < ps.size(); ++i) h = ((h << 7) | (h >> 57)) ^ w[i];
  double lo[2] = {(double)(h >> 32), (double)(h & 0xffffffffu)}, hi[2] = {lo[0], lo[1]};
  comm_.allreduce_min(lo, 2);
  comm_.allreduce_max(hi, 2);
  if (lo[0] != hi[0] || lo[1] != hi[1])
    throw CollectiveError(cat("step ", step_,
                              ": the ranks' weights differ; the replicas diverged (this is a bug: "
                              "the ranks apply the same summed gradient)"));
}

nlohmann::json Trainer::compute_json() const {
  return {{"precision", opt_.precision},
          {"ranks", comm_.size()},
          {"threads", num_threads()},
          {"gemm", gemm_backend_name(gemm_backend())},
          {"gemm_kernel", gemm_kernel_name()}};
}

void Trainer::run() {
  const bool root = comm_.is_root();
  // The run directory stays locked while this run writes into it.
  struct Unlock {
    RunDirectory& dir;
    ~Unlock() { dir.unlock(); }
  } unlock{run_dir_};
  std::string error;
  if (root) {
    try {
      prepare_run_dir();
      // The tokenizer the data was made with, taken now: a `prepare --overwrite` of the data
      // directory mid-run (the shards stay mapped) put the new one into every later checkpoint,
      // beside weights of the old vocabulary.
      if (carried_tokenizer_.empty()) carry_tokenizer_of(opt_.data_dir);
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  fail_together(comm_, error);
  sync_from_root();
  const int n = model_.layout().n;
  const long eval_every = opt_.eval_every > 0 ? opt_.eval_every : opt_.steps;
  const long save_every = opt_.save_every > 0 ? opt_.save_every : eval_every;
  TrainingProgress progress(opt_.quiet, root, step_, opt_.steps);  // rank 0 alone reports
  if (step_ == 0) {
    // Checkpoints no `latest` names (`latest` deleted, or a writer killed between the rename
    // and `latest`) would be pruned as this run writes its own: moved aside with the log
    // first, never deleted.
    if (root) {
      const RunDirectory::Superseded moved = run_dir_.supersede_after(-1);
      if (!moved.others.empty())
        std::fprintf(stderr,
                     "a new run in %s: %s, named like checkpoints but holding none (no "
                     "config.json and model.safetensors), moved to %s (nothing was deleted)\n",
                     opt_.out_dir.c_str(), moved.others.c_str(), moved.dir.c_str());
      if (!moved.dir.empty() && moved.checkpoints.empty() && moved.others.empty())
        std::fprintf(
            stderr,
            "a new run in %s: the log of an earlier run that stopped before its first checkpoint "
            "was moved to %s (nothing was deleted)\n",
            opt_.out_dir.c_str(), moved.dir.c_str());
      else if (!moved.checkpoints.empty())
        std::fprintf(
            stderr,
            "a new run in %s: the checkpoints no 'latest' named (%s) and the log were moved to %s "
            "(nothing was deleted; chainlm train --resume would have continued from the newest)\n",
            opt_.out_dir.c_str(), moved.checkpoints.c_str(), moved.dir.c_str());
    }
    // A new run starts a new log: lines left by an earlier attempt that died before its first
    // checkpoint belong to no checkpoint.
    if (root) run_dir_.reset_metrics();
    const ParamStore& ps = model_.params();
    nlohmann::json header = compute_json();
    header.update({{"step", 0},
                   {"data_fingerprint", data_fingerprint()},
                   {"chainlm_version", kChainlmVersion},
                   {"libraries", gemm_library_versions()},
                   {"trainable_params", ps.trainable_numel()},
                   {"total_params", ps.numel()},
                   {"trainable_fraction", trainable_fraction()},
                   {"memory_estimate_bytes", memory_estimate_.total()},
                   {"tokens_per_step", (long)opt_.batch_size * T_},
                   {"flops_per_step", flops_per_step()}});
    log_metrics(header);
    if (!opt_.init.empty()) {
      // A run that starts from existing weights records where it started.
      auto val = validate();
      log_metrics({{"step", 0}, {"val_loss", val}});
      progress.validation(0, val);
      // Trained weights on data made with another tokenizer of the same size (a llama2.c file
      // carries none to compare) start worse than guessing: 11.4 against ln(512) = 6.2 trained
      // on with a warning that did not say so.
      const double uniform = std::log((double)model_.config().vocab_size);
      const double worst = val.empty() ? 0 : *std::max_element(val.begin(), val.end());
      if (root && worst > uniform + 1)
        std::fprintf(stderr,
                     "warning: the initial weights' validation loss (%.3f) is worse than guessing "
                     "uniformly over the %d tokens (%.3f): is the data made with the tokenizer the "
                     "model was trained with?\n",
                     worst, model_.config().vocab_size, uniform);
    }
  } else if (step_ < opt_.steps) {
    nlohmann::json resumed = compute_json();
    resumed.update(
        {{"step", step_}, {"event", "resumed"}, {"data_fingerprint", data_fingerprint_}});
    // Other data under --data (moved data is the same): the run goes on over it, as one may
    // on purpose, but the log and the user are told (nothing tied a run to its data's content).
    if (!restored_data_fingerprint_.empty() && restored_data_fingerprint_ != data_fingerprint_) {
      resumed["data_changed_from"] = restored_data_fingerprint_;
      std::fprintf(stderr,
                   "resume: the data in %s is not what the run trained on so far (%s; now %s): the "
                   "steps from "
                   "here read it\n",
                   opt_.data_dir.c_str(), restored_data_fingerprint_.c_str(),
                   data_fingerprint_.c_str());
    }
    log_metrics(resumed);
  }
  while (step_ < opt_.steps) {
    Timer t;
    const float lr = current_lr();
    StepLosses l = train_step();
    const double dt = t.seconds();
    const bool skipped = last_step_skipped();
    if (skipped) {
      log_metrics({{"step", step_},
                   {"skipped", true},
                   {"nonfinite", last_nonfinite_},
                   {"skipped_steps", skipped_},
                   {"lr", lr},
                   {"step_ms", dt * 1e3}});
      progress.skipped(step_, last_nonfinite_, skipped_in_a_row_, skipped_);
    }
    const double tok_s = progress.add_step((double)opt_.batch_size * T_, dt);
    if (!skipped) {
      nlohmann::json line = {
          {"step", step_},         {"loss", l.loss},      {"lr", lr},
          {"tokens_per_s", tok_s}, {"step_ms", dt * 1e3}, {"peak_rss_bytes", peak_rss_bytes()},
          {"tokens", step_ * (long)opt_.batch_size * T_},  // the global batch's, since the run began
          {"flops", (double)step_ * flops_per_step()}};
      if (comm_.size() > 1) {
        line["ranks"] = comm_.size();
        line["comm_ms"] = comm_seconds() * 1e3;
        line["comm_wait_ms"] = comm_wait_seconds() * 1e3;
      }
      nlohmann::json chain_losses = nlohmann::json::array();
      for (int i = 0; i < n; ++i)
        chain_losses.push_back(std::isnan(l.chain_loss[i]) || weights_[i] == 0
                                   ? nlohmann::json(nullptr)
                                   : nlohmann::json(l.chain_loss[i]));
      line["chain_loss"] = chain_losses;
      if (skipped_ > 0) line["skipped_steps"] = skipped_;
      log_metrics(line);
      progress.step(step_, l.chain_loss, weights_, lr, tok_s);
    }
    const bool last = step_ == opt_.steps;
    if (step_ % eval_every == 0 || last) {
      auto val = validate();
      log_metrics({{"step", step_}, {"val_loss", val}});
      progress.validation(step_, val);
      progress.nonfinite_validation(step_, val);
    }
    if (sampler_ && root && opt_.sample_every > 0 && (step_ % opt_.sample_every == 0 || last)) {
      model_.refresh_bf16_weights();  // bf16 runs: generate with this step's weights
      const nlohmann::json samples = sampler_(model_);
      log_metrics({{"step", step_}, {"sample_prompt", opt_.sample_prompt}, {"samples", samples}});
      progress.samples(step_, opt_.sample_prompt, samples);
    }
    const bool stop = !last && stop_agreed();
    if (step_ % save_every == 0 || last || stop) {
      check_replicas();
      if (root && !log_error_.empty()) {
        error = log_error_;
      } else if (root) {
        try {
          const std::string dir = save();
          if (last || stop) progress.saved(dir);
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
      // Nobody runs ahead of a checkpoint being written; one that failed ends every rank.
      fail_together(comm_, error);
    }
    if (stop) {
      // Ctrl-C or SIGTERM: the step is saved; the command says how to go on.
      stopped_by_ = stop_signal() ? stop_signal() : SIGTERM;
      log_metrics({{"step", step_}, {"event", "stopped"}, {"signal", signal_name(stopped_by_)}});
      if (!log_error_.empty())  // the checkpoint is written; only the log's last line is missing
        std::fprintf(stderr, "warning: %s\n", log_error_.c_str());
      return;
    }
  }
  progress.peak_memory(peak_rss_bytes(), memory_estimate_.total());
}

}  // namespace chainlm
