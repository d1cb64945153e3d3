#include "train/trainer.h"

#include <fcntl.h>
#include <omp.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

#include "core/error.h"
#include "core/fault_injection.h"
#include "core/memory.h"
#include "core/timer.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "train/lr_schedule.h"

namespace chainlm {

namespace fs = std::filesystem;

nlohmann::json TrainOptions::to_json() const {
  return {{"data_dir", data_dir},       {"steps", steps},
          {"batch_size", batch_size},   {"micro_batch", micro_batch},
          {"seq_len", seq_len},         {"lr", lr},
          {"min_lr_ratio", min_lr_ratio}, {"warmup", warmup},
          {"weight_decay", weight_decay}, {"grad_clip", grad_clip},
          {"beta1", beta1},             {"beta2", beta2},
          {"eval_every", eval_every},   {"eval_windows", eval_windows},
          {"save_every", save_every},   {"keep_checkpoints", keep_checkpoints},
          {"seed", seed},               {"chain_loss_weights", chain_loss_weights},
          {"freeze_chains", freeze_chains}, {"train_only", train_only},
          {"init", init},               {"on_nonfinite", on_nonfinite},
          {"max_nonfinite_skips", max_nonfinite_skips}};
}

TrainOptions TrainOptions::from_json(const nlohmann::json& j) {
  TrainOptions o;
  o.data_dir = j.at("data_dir").get<std::string>();
  o.steps = j.at("steps");
  o.batch_size = j.at("batch_size");
  o.micro_batch = j.at("micro_batch");
  o.seq_len = j.at("seq_len");
  o.lr = j.at("lr");
  o.min_lr_ratio = j.at("min_lr_ratio");
  o.warmup = j.at("warmup");
  o.weight_decay = j.at("weight_decay");
  o.grad_clip = j.at("grad_clip");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.eval_every = j.at("eval_every");
  o.eval_windows = j.at("eval_windows");
  o.save_every = j.at("save_every");
  o.keep_checkpoints = j.at("keep_checkpoints");
  o.seed = j.at("seed");
  o.chain_loss_weights = j.at("chain_loss_weights").get<std::vector<float>>();
  // Absent in states written before chain tuning existed.
  o.freeze_chains = j.value("freeze_chains", 0);
  o.train_only = j.value("train_only", std::string());
  o.init = j.value("init", std::string());
  o.on_nonfinite = j.value("on_nonfinite", std::string("stop"));
  o.max_nonfinite_skips = j.value("max_nonfinite_skips", 8);
  return o;
}

namespace {
const char* const kMemoryAdvice =
    "lower --batch-size or --seq-len, use --micro-batch (gradient accumulation) or a smaller model";
}  // namespace

MemoryEstimate Trainer::memory_estimate(const ModelConfig& c, const TrainOptions& o, int ranks) {
  const int rows = std::max(1, o.batch_size / std::max(1, ranks));
  const int micro = o.micro_batch > 0 ? std::min(o.micro_batch, rows) : rows;
  const int T = o.seq_len > 0 ? o.seq_len : c.max_seq_len;
  int weighted = 1;  // the full model alone by default
  if (!o.chain_loss_weights.empty()) {
    weighted = 0;
    for (float w : o.chain_loss_weights) weighted += w > 0;
  }
  return training_memory(c, micro, T, std::max(1, weighted));
}

void Trainer::check_memory(const ModelConfig& c, const TrainOptions& o, int ranks, uint64_t held) {
  check_memory_fits("train", memory_estimate(c, o, ranks), o.processes_per_machine, o.memory_limit,
                    kMemoryAdvice, held);
}

Trainer::Trainer(Model& model, TrainOptions options, const Communicator& comm)
    : model_(model),
      opt_(std::move(options)),
      comm_(comm),
      train_((fs::path(opt_.data_dir) / "train.bin").string()),
      val_((fs::path(opt_.data_dir) / "val.bin").string()),
      optimizer_(model_.params(), OptimizerConfig{opt_.beta1, opt_.beta2, 1e-8f,
                                                  opt_.weight_decay, opt_.grad_clip}) {
  const ModelConfig& c = model_.config();
  T_ = opt_.seq_len > 0 ? opt_.seq_len : c.max_seq_len;
  CHAINLM_CHECK(T_ <= c.max_seq_len, "--seq-len ", T_, " exceeds the model's max_seq_len ",
                c.max_seq_len);
  CHAINLM_CHECK(opt_.steps > 0, "--steps must be positive");
  CHAINLM_CHECK(opt_.batch_size > 0, "--batch-size must be positive");
  // The global batch is split evenly over the ranks; each rank runs its share in micro-batches
  // of at most micro_batch sequences.
  const int ranks = comm_.size();
  CHAINLM_CHECK(opt_.batch_size % ranks == 0, "--batch-size ", opt_.batch_size,
                " is the global batch and must be a multiple of the number of ranks (", ranks,
                ")");
  CHAINLM_CHECK(opt_.micro_batch >= 0, "--micro-batch must be >= 0");
  rows_ = opt_.batch_size / ranks;
  micro_ = opt_.micro_batch > 0 ? std::min(opt_.micro_batch, rows_) : rows_;
  CHAINLM_CHECK(rows_ % micro_ == 0, "--batch-size ", opt_.batch_size,
                ranks > 1 ? cat(" over ", ranks, " ranks gives ", rows_, " sequences per rank, which")
                          : std::string(),
                " must be a multiple of --micro-batch ", micro_);
  accum_ = rows_ / micro_;
  CHAINLM_CHECK(opt_.lr > 0, "--lr must be positive");
  CHAINLM_CHECK((long)train_.vocab_size() <= c.vocab_size, train_.path(), ": tokens use a vocabulary of ",
                train_.vocab_size(), " but the model's vocab_size is ", c.vocab_size);
  CHAINLM_CHECK(train_.size() > (uint64_t)T_, train_.path(), ": ", train_.size(),
                " tokens is fewer than one window of seq_len+1 = ", T_ + 1);
  CHAINLM_CHECK(val_.num_windows(T_) > 0 || val_.size() > 1, val_.path(),
                ": the validation split is empty");
  if (opt_.warmup < 0) opt_.warmup = std::min<long>(100, opt_.steps / 10);
  const int n = model_.layout().n;
  if (opt_.chain_loss_weights.empty()) {
    opt_.chain_loss_weights.assign(n, 0.0f);
    opt_.chain_loss_weights.back() = 1.0f;
  }
  CHAINLM_CHECK((int)opt_.chain_loss_weights.size() == n, "--chain-loss-weights lists ",
                opt_.chain_loss_weights.size(), " weights but the model has ", n, " chains");
  weights_ = opt_.chain_loss_weights;
  CHAINLM_CHECK(opt_.train_only.empty() || opt_.train_only == "head", "--train-only '",
                opt_.train_only, "': the only choice is 'head'");
  CHAINLM_CHECK(opt_.on_nonfinite == "stop" || opt_.on_nonfinite == "skip", "--on-nonfinite '",
                opt_.on_nonfinite, "': choose 'stop' or 'skip'");
  CHAINLM_CHECK(opt_.max_nonfinite_skips >= 0, "--max-nonfinite-skips must be >= 0");
  const FreezeSpec freeze{opt_.freeze_chains, opt_.train_only == "head"};
  model_.set_freeze(freeze);
  if (freeze.chains > 0) {
    bool trains = false;
    for (int i = freeze.chains; i < n; ++i) trains = trains || weights_[i] > 0;
    CHAINLM_CHECK(trains, "--chain-loss-weights put no weight on a sub-model with more than the ",
                  freeze.chains, " frozen chain(s), so nothing would train");
  }
  // The weights are already in memory (counted in the estimate, gone from what is available).
  memory_estimate_ = memory_estimate(c, opt_, ranks);
  check_memory_fits("train", memory_estimate_, opt_.processes_per_machine, opt_.memory_limit,
                    kMemoryAdvice, model_.params().size() * sizeof(float));
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

Trainer::~Trainer() {
  if (reducer_) model_.set_backward_hook(nullptr);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

double Trainer::comm_seconds() const { return reducer_ ? reducer_->comm_seconds() : 0.0; }
double Trainer::comm_wait_seconds() const { return reducer_ ? reducer_->wait_seconds() : 0.0; }

float Trainer::current_lr() const {
  return cosine_lr(step_, opt_.warmup, opt_.steps, opt_.lr, opt_.lr * opt_.min_lr_ratio);
}

double Trainer::trainable_fraction() const {
  const ParamStore& ps = model_.params();
  return (double)ps.trainable_numel() / (double)ps.numel();
}

StepLosses Trainer::train_step() {
  ParamStore& ps = model_.params();
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
    StepLosses l = model_.forward_backward(tokens_.data(), targets_.data(), micro_, T_, weights_,
                                           grad_scale);
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
    const std::string kept =
        last_saved_.empty() ? std::string()
                            : cat(" The latest checkpoint, ", last_saved_, ", holds finite weights.");
    const std::string message =
        skip ? cat("step ", number, ": ", nonfinite, " after ", skipped_in_a_row_,
                   " skipped step(s) in a row (--max-nonfinite-skips ", opt_.max_nonfinite_skips,
                   "); giving up, the run looks diverged. No weight was changed.", kept,
                   " Lower --lr.")
             : cat("step ", number, ": ", nonfinite,
                   "; stopped before any weight was changed.", kept,
                   " Lower --lr, or pass --on-nonfinite skip to skip such steps.");
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
    for (int i = 0; i < r; ++i) val_.window(w0 + i, T, tok.data() + (size_t)i * T, tgt.data() + (size_t)i * T);
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
  const std::string path = (fs::path(opt_.out_dir) / "metrics.jsonl").string();
  const std::string text = line.dump() + "\n";
  errno = 0;
  std::FILE* f = std::fopen(path.c_str(), "a");
  bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size() && std::fflush(f) == 0;
  int err = errno;
  if (f && std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) fail("cannot append to ", path, ": ", std::strerror(err ? err : EIO));
}

namespace {

std::string checkpoint_name(long step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08ld", step);
  return name;
}

// The step of a checkpoint directory name "step-NNNNNNNN", -1 for any other name.
long checkpoint_step(const std::string& name) {
  if (name.size() < 6 || name.size() > 20 || name.rfind("step-", 0) != 0) return -1;
  long step = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return -1;
    step = step * 10 + (name[i] - '0');
  }
  return step;
}

// What a writer killed mid-way leaves in a run directory: temporary checkpoint directories
// (being built, or an old one being removed) and atomic_file's temporary files.
bool is_leftover(const std::string& name) {
  for (const char* prefix : {".tmp-step-", ".old-step-", ".write-probe.", "latest.tmp.",
                             "metrics.jsonl.tmp."})
    if (name.rfind(prefix, 0) == 0) return true;
  return false;
}

// The checkpoint `run/latest` names, "" when there is none (or it cannot be read).
std::string latest_name(const fs::path& run) {
  try {
    std::string name = read_file((run / "latest").string());
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    return name;
  } catch (const Error&) {
    return std::string();
  }
}

// Moves the complete directory `tmp` to `target`. A `target` that exists already (a checkpoint
// of this step that a killed run wrote but never named in `latest`) is swapped with it
// atomically, so a complete directory stands at `target` at every moment.
void install_directory(const fs::path& tmp, const fs::path& target) {
  std::error_code ec;
  if (!fs::exists(target, ec)) {
    fs::rename(tmp, target, ec);
    if (ec) fail("cannot rename ", tmp.string(), " to ", target.string(), ": ", ec.message());
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, target.c_str(), RENAME_EXCHANGE) != 0) {
    const int err = errno;
    // A filesystem without atomic exchange: a directory `latest` does not name may go first.
    const bool unsupported = err == EINVAL || err == ENOSYS || err == EOPNOTSUPP;
    if (!unsupported || latest_name(target.parent_path()) == target.filename().string())
      fail("cannot replace ", target.string(), " with ", tmp.string(), ": ", std::strerror(err));
    fs::remove_all(target, ec);
    if (!ec) fs::rename(tmp, target, ec);
    if (ec) fail("cannot replace ", target.string(), ": ", ec.message());
    return;
  }
  fs::remove_all(tmp, ec);  // now the old directory; a leftover if this fails
}

}  // namespace

std::string Trainer::nonfinite_state() const {
  const ParamStore& ps = model_.params();
  const std::vector<float>* moments[2] = {&const_cast<Optimizer&>(optimizer_).m(),
                                          &const_cast<Optimizer&>(optimizer_).v()};
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    const float* arrays[3] = {ps.values() + p.offset, moments[0]->data() + p.offset,
                              moments[1]->data() + p.offset};
    const char* what[3] = {"weight", "AdamW first moment", "AdamW second moment"};
    for (int a = 0; a < 3; ++a)
      for (long k = 0; k < (long)p.numel(); ++k)
        if (!std::isfinite(arrays[a][k]))
          return cat(what[a], " '", p.name, "'[", k, "] = ", arrays[a][k]);
  }
  return std::string();
}

void Trainer::prepare_run_dir() {
  const fs::path run(opt_.out_dir);
  std::error_code ec;
  fs::create_directories(run, ec);
  if (ec) fail("cannot create the run directory ", run.string(), ": ", ec.message(),
               " (nothing was trained)");
  // The run's lock: a second process training into the same directory would take this
  // one's temporary directories for a killed writer's. flock locks end with the process,
  // however it ends, so a killed run never leaves a stale lock behind.
  if (lock_fd_ < 0) {
    const std::string lock = (run / ".lock").string();
    // Read-only: an open writable file would keep the filesystem from being remounted.
    const int fd = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
      fail("cannot write to the run directory ", run.string(), ": creating ", lock, " failed: ",
           std::strerror(errno), " (nothing was trained)");
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      const int err = errno;
      ::close(fd);
      if (err == EWOULDBLOCK)
        fail("another process is training into ", run.string(), " (it holds ", lock,
             "); nothing was trained");
      // A filesystem without flock (some network mounts): train unlocked, as before locks.
    } else {
      lock_fd_ = fd;
    }
  }
  // Checkpoints are written into the directory itself: find out now, not after the first
  // hour of training, whether that works.
  const std::string probe = (run / cat(".write-probe.", ::getpid())).string();
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    if (::write(fd, "x", 1) != 1) err = errno ? errno : EIO;
    if (::close(fd) != 0 && err == 0) err = errno;
    ::unlink(probe.c_str());
  }
  if (err != 0)
    fail("cannot write to the run directory ", run.string(), ": ", std::strerror(err),
         " (nothing was trained)");
  // Leftovers of a writer killed mid-checkpoint: never checkpoints (loaders follow `latest`,
  // which only ever names a complete directory), removed here.
  for (const auto& e : fs::directory_iterator(run, ec))
    if (is_leftover(e.path().filename().string())) {
      std::error_code ignored;
      fs::remove_all(e.path(), ignored);
    }
}


std::string Trainer::save() {
  const std::string name = checkpoint_name(step_);
  const fs::path run(opt_.out_dir);
  const fs::path final_dir = run / name;
  const std::string kept =
      last_saved_.empty()
          ? std::string("no earlier checkpoint exists")
          : cat("'latest' still names the previous one, ", fs::path(last_saved_).filename().string());
  // The last line of defence: a checkpoint never holds a non-finite weight or moment.
  const std::string bad = nonfinite_state();
  CHAINLM_CHECK(bad.empty(), "step ", step_, ": refusing to write checkpoint ", final_dir.string(),
                ": ", bad, " is not finite; ", kept);
  // Built under a temporary name, every file fsynced (write_file_atomic), the directory
  // fsynced, then renamed into place and the run directory fsynced: `latest` is switched
  // only to a complete, durable directory.
  const fs::path tmp = run / cat(".tmp-", name, ".", ::getpid());
  try {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fs::create_directory(tmp, ec);
    if (ec) fail("cannot create ", tmp.string(), ": ", ec.message());
    // The log up to this step becomes as durable as the checkpoint: a resume keeps exactly
    // those lines, even after a power loss.
    const std::string metrics = (run / "metrics.jsonl").string();
    const int log = ::open(metrics.c_str(), O_RDONLY | O_CLOEXEC);
    if (log >= 0) {
      const int rc = ::fsync(log), err = errno;
      ::close(log);
      if (rc != 0 && err != EINVAL) fail("fsync of ", metrics, " failed: ", std::strerror(err));
    }
    save_model(model_, tmp.string());
    fault::point("checkpoint.after_weights");
    ParamStore& ps = model_.params();
    std::vector<TensorView> views;
    for (int i = 0; i < (int)ps.infos().size(); ++i) {
      const ParamInfo& p = ps.info(i);
      views.push_back({"m." + p.name, p.shape, optimizer_.m().data() + p.offset});
      views.push_back({"v." + p.name, p.shape, optimizer_.v().data() + p.offset});
    }
    write_safetensors((tmp / "optimizer.safetensors").string(), views);
    fault::point("checkpoint.after_optimizer");
    nlohmann::json state = {{"format", "chainlm-trainer-1"},
                            {"step", step_},
                            {"options", opt_.to_json()},
                            {"trainable_params", ps.trainable_numel()},
                            {"total_params", ps.numel()},
                            {"trainable_fraction", trainable_fraction()},
                            {"skipped_steps", skipped_},
                            {"skipped_in_a_row", skipped_in_a_row_}};
    write_file_atomic((tmp / "trainer_state.json").string(), state.dump(2) + "\n");
    save_tokenizer_to_dir(find_tokenizer_in_dir(opt_.data_dir), tmp.string());
    fsync_directory(tmp.string());
    fault::point("checkpoint.before_rename");
    install_directory(tmp, final_dir);
    fsync_directory(run.string());
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    fail("checkpoint at step ", step_, " not written: ", e.what(), "; ", kept,
         ec ? cat("; the partial ", tmp.string(), " could not be removed (", ec.message(),
                  "): it is no checkpoint, and the next run removes it")
            : cat(", and the partial ", tmp.filename().string(), " was removed"));
  }
  fault::point("checkpoint.before_latest");
  try {
    write_file_atomic((run / "latest").string(), name + "\n");
  } catch (const std::exception& e) {
    fail("checkpoint ", final_dir.string(), " was written but could not be made the latest: ",
         e.what(), "; ", kept);
  }
  last_saved_ = final_dir.string();
  fault::point("checkpoint.after_latest");
  // Only now that `latest` names the new checkpoint may older ones go: the keep_checkpoints
  // newest up to this step stay. Directories of later steps are a killed run's that `latest`
  // never named. Each is renamed away first, so a half-removed one never looks like a
  // checkpoint.
  std::vector<std::pair<long, fs::path>> ckpts;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run, ec)) {
    const long s = checkpoint_step(e.path().filename().string());
    if (s >= 0 && e.is_directory(ec)) ckpts.push_back({s, e.path()});
  }
  std::sort(ckpts.begin(), ckpts.end());
  const int keep = std::max(1, opt_.keep_checkpoints);
  std::vector<fs::path> doomed;
  int kept_count = 0;  // newest first: this step's directory is the first one kept
  for (auto it = ckpts.rbegin(); it != ckpts.rend(); ++it) {
    if (it->first <= step_ && kept_count < keep) ++kept_count;
    else doomed.push_back(it->second);
  }
  for (const fs::path& path : doomed) {
    const fs::path old = run / cat(".old-", path.filename().string(), ".", ::getpid());
    fs::rename(path, old, ec);
    if (!ec) fs::remove_all(old, ec);
    if (ec)
      std::fprintf(stderr, "warning: could not remove the old checkpoint %s: %s\n",
                   path.string().c_str(), ec.message().c_str());
  }
  fault::point("checkpoint.after_prune");
  return final_dir.string();
}

void Trainer::restore(const std::string& checkpoint_dir) {
  const std::string dir = resolve_checkpoint_dir(checkpoint_dir);
  load_model_weights(model_, (fs::path(dir) / "model.safetensors").string());
  SafetensorsReader opt((fs::path(dir) / "optimizer.safetensors").string());
  ParamStore& ps = model_.params();
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    opt.read_f32("m." + p.name, p.shape, optimizer_.m().data() + p.offset);
    opt.read_f32("v." + p.name, p.shape, optimizer_.v().data() + p.offset);
  }
  const std::string state_path = (fs::path(dir) / "trainer_state.json").string();
  nlohmann::json state;
  try {
    state = nlohmann::json::parse(read_file(state_path));
    step_ = state.at("step").get<long>();
    skipped_ = state.value("skipped_steps", 0L);
    skipped_in_a_row_ = state.value("skipped_in_a_row", 0L);
  } catch (const nlohmann::json::exception& e) {
    fail(state_path, ": invalid trainer state: ", e.what());
  }
  CHAINLM_CHECK(step_ >= 0, state_path, ": negative step");
  last_saved_ = dir;
  // Keep only the metrics of steps before the restored one, so a resumed run's log reads
  // as one uninterrupted run.
  const fs::path metrics = fs::path(opt_.out_dir) / "metrics.jsonl";
  if (comm_.is_root() && fs::exists(metrics)) {
    std::ifstream in(metrics);
    std::string line, kept;
    while (std::getline(in, line)) {
      try {
        auto j = nlohmann::json::parse(line);
        if (j.value("step", 0L) <= step_) kept += line + "\n";
      } catch (const nlohmann::json::exception&) {
        // A torn last line from a crash: drop it.
      }
    }
    write_file_atomic(metrics.string(), kept);
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

namespace {

std::string format_eta(double seconds) {
  char buf[32];
  const long s = (long)seconds;
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

}  // namespace

namespace {

// Raises, on every rank together, the first rank's error when any rank has one (collective).
void fail_together(const Communicator& comm, const std::string& local_error) {
  const std::string e = comm.first_error(local_error);
  if (e.empty()) return;
  if (comm.size() > 1) throw CollectiveError(e);
  throw Error(e);
}

}  // namespace

void Trainer::run() {
  const bool root = comm_.is_root();
  // The run directory stays locked while this run writes into it.
  struct Unlock {
    int& fd;
    ~Unlock() {
      if (fd >= 0) ::close(fd);
      fd = -1;
    }
  } unlock{lock_fd_};
  std::string error;
  if (root) {
    try {
      prepare_run_dir();
    } catch (const std::exception& e) {
      error = e.what();
    }
  }
  fail_together(comm_, error);
  sync_from_root();
  const bool quiet = opt_.quiet || !root;  // rank 0 alone reports
  const bool tty = isatty(fileno(stderr));
  const int n = model_.layout().n;
  const long eval_every = opt_.eval_every > 0 ? opt_.eval_every : opt_.steps;
  const long save_every = opt_.save_every > 0 ? opt_.save_every : eval_every;
  Timer total;
  const long start_step = step_;
  double window_tokens = 0, window_seconds = 0;
  Timer since_print;  // without a terminal, print a line every few seconds, not every step
  if (step_ == 0) {
    // A new run starts a new log: lines left by an earlier attempt that died before its first
    // checkpoint belong to no checkpoint.
    if (root) write_file_atomic((fs::path(opt_.out_dir) / "metrics.jsonl").string(), "");
    const ParamStore& ps = model_.params();
    log_metrics({{"step", 0},
                 {"trainable_params", ps.trainable_numel()},
                 {"total_params", ps.numel()},
                 {"trainable_fraction", trainable_fraction()},
                 {"memory_estimate_bytes", memory_estimate_.total()}});
    if (!opt_.init.empty()) {
      // A run that starts from existing weights records where it started.
      auto val = validate();
      log_metrics({{"step", 0}, {"val_loss", val}});
      if (!quiet) {
        std::string s;
        for (int i = 0; i < n; ++i) s += cat(" k", i + 1, "=", std::round(val[i] * 1000) / 1000);
        std::fprintf(stderr, "step 0 | val loss%s\n", s.c_str());
      }
    }
  }
  while (step_ < opt_.steps) {
    Timer t;
    const float lr = current_lr();
    StepLosses l = train_step();
    const double dt = t.seconds();
    const bool skipped = last_step_skipped();
    if (skipped) {
      log_metrics({{"step", step_}, {"skipped", true}, {"nonfinite", last_nonfinite_},
                   {"skipped_steps", skipped_}, {"lr", lr}, {"step_ms", dt * 1e3}});
      if (root)
        std::fprintf(stderr,
                     "%swarning: step %ld skipped (--on-nonfinite skip): %s; weights and "
                     "optimizer state unchanged (%ld in a row, %ld in all)\n",
                     tty ? "\r\033[K" : "", step_, last_nonfinite_.c_str(), skipped_in_a_row_,
                     skipped_);
    }
    window_tokens += (double)opt_.batch_size * T_;
    window_seconds += dt;
    const double tok_s = window_tokens / window_seconds;
    if (window_seconds > 5) window_tokens = window_seconds = 0;  // a moving rate
    nlohmann::json line = {{"step", step_}, {"loss", l.loss}, {"lr", lr},
                           {"tokens_per_s", tok_s}, {"step_ms", dt * 1e3},
                           {"peak_rss_bytes", peak_rss_bytes()}};
    if (comm_.size() > 1) {
      line["ranks"] = comm_.size();
      line["comm_ms"] = comm_seconds() * 1e3;
      line["comm_wait_ms"] = comm_wait_seconds() * 1e3;
    }
    nlohmann::json chain_losses = nlohmann::json::array();
    for (int i = 0; i < n; ++i)
      chain_losses.push_back(std::isnan(l.chain_loss[i]) || weights_[i] == 0 ? nlohmann::json(nullptr)
                                                                             : nlohmann::json(l.chain_loss[i]));
    line["chain_loss"] = chain_losses;
    if (skipped_ > 0) line["skipped_steps"] = skipped_;
    if (!skipped) log_metrics(line);
    const bool print = !skipped && (tty || step_ == start_step + 1 || step_ == opt_.steps ||
                                    since_print.seconds() >= 5);
    if (!quiet && print) {
      since_print.reset();
      std::string chains;
      for (int i = 0; i < n; ++i)
        if (weights_[i] > 0) chains += cat(" k", i + 1, "=", std::round(l.chain_loss[i] * 1000) / 1000);
      const double eta = total.seconds() / (step_ - start_step) * (opt_.steps - step_);
      std::fprintf(stderr, "%sstep %ld/%ld | loss%s | lr %.2e | %.0f tok/s | ETA %s%s",
                   tty ? "\r\033[K" : "", step_, opt_.steps, chains.c_str(), lr, tok_s,
                   format_eta(eta).c_str(), tty ? "" : "\n");
      std::fflush(stderr);
    }
    const bool last = step_ == opt_.steps;
    if (step_ % eval_every == 0 || last) {
      auto val = validate();
      nlohmann::json v = {{"step", step_}, {"val_loss", val}};
      log_metrics(v);
      if (!quiet) {
        std::string s;
        for (int i = 0; i < n; ++i) s += cat(" k", i + 1, "=", std::round(val[i] * 1000) / 1000);
        std::fprintf(stderr, "%sstep %ld | val loss%s\n", tty ? "\r\033[K" : "", step_, s.c_str());
      }
    }
    if (step_ % save_every == 0 || last) {
      check_replicas();
      if (root) {
        try {
          const std::string dir = save();
          if (!quiet && last) std::fprintf(stderr, "saved %s\n", dir.c_str());
        } catch (const std::exception& e) {
          error = e.what();
        }
      }
      // Nobody runs ahead of a checkpoint being written; one that failed ends every rank.
      fail_together(comm_, error);
    }
  }
  if (!quiet)
    std::fprintf(stderr, "peak memory %s (estimated %s)\n", format_bytes((double)peak_rss_bytes()).c_str(),
                 format_bytes((double)memory_estimate_.total()).c_str());
}

}  // namespace chainlm
