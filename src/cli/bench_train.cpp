// chainlm bench train: this machine's GEMM peak for the precision (the best kernel's) and a training step of a config, in one
// run, so the ratio (MFU) is taken under the same conditions. Under mpirun: a data-parallel
// step (each rank B/N sequences, gradients summed as in training) and its communication time.
#include <algorithm>
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/bench_util.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "core/wait_policy.h"
#include "kernels/attention.h"
#include "model/memory_estimate.h"
#include "model/model.h"
#include "model/training_flops.h"
#include "train/distributed.h"
#include "train/optimizer.h"
#include "train/trainer.h"

namespace chainlm::cli {

void bench_train(const std::string& config_path, int B, int T, int threads, int steps,
                 const std::string& weights_arg, bool baseline, double bucket_mb, bool overlap,
                 Precision precision, bool vs_fp32) {
  const Communicator& comm = Communicator::world();
  const int ranks = comm.size();
  // The checks every rank meets alike end the job with one message, rank 0's (each rank printed
  // its own), and exit code 1 on every rank. A rank's own option (--threads, which mpirun's MPMD
  // form may give one rank alone) goes through the same agreement, naming the rank: a rank that
  // stopped at it alone left the others waiting for it for ever (a user trial).
  ModelConfig config;
  const int global_batch = B;
  std::string setup_error, own_error;
  try {
    apply_threads_option(threads, launched_by_mpi() ? default_threads_per_rank(comm) : 0);
  } catch (const Error& e) {
    own_error = with_rank_named(comm, e.what());
  }
  try {
    CHAINLM_CHECK(B % ranks == 0, "bench train: --batch-size ", B, " must be a multiple of the ",
                  ranks, " ranks");
    CHAINLM_CHECK(!baseline || ranks == 1, "bench train: --baseline runs in one process");
    CHAINLM_CHECK(!vs_fp32 || precision == Precision::Bf16,
                  "bench train: --vs-fp32 compares --precision bf16 with fp32");
    CHAINLM_CHECK(!vs_fp32 || ranks == 1, "bench train: --vs-fp32 runs in one process");
    CHAINLM_CHECK(!(vs_fp32 && baseline),
                  "bench train: --vs-fp32 and --baseline exclude each other");
    CHAINLM_CHECK(bucket_mb > 0, "bench train: --bucket-mb must be positive");
    B /= ranks;  // this rank's rows
    // The sub-models whose losses are weighted (each adds a head gradient), the last alone by
    // default.
    auto weighted_submodels = [](const std::string& arg) {
      int n = 0;
      for (float w :
           arg.empty() ? std::vector<float>{1.0f} : parse_float_list(arg, "--chain-loss-weights"))
        n += w > 0;
      return std::max(n, 1);
    };
    config = load_config(config_path);
    // The default (0) fits the config: 256 tokens, or its max_seq_len when that is shorter (a
    // config of 128 was refused for the default it had not chosen).
    if (T == 0) T = std::min(256, config.max_seq_len);
    CHAINLM_CHECK(T <= config.max_seq_len, "--seq-len ", T, " exceeds max_seq_len ",
                  config.max_seq_len);
    // As train refuses what cannot fit (an oversized config died in the allocator here), by
    // train's own estimate (it left out the GEMM workspace train counts); the --vs-fp32 and
    // --baseline twins are of the same size.
    TrainOptions as_trained;
    as_trained.batch_size = global_batch;
    as_trained.seq_len = T;
    as_trained.precision = precision_name(precision);
    as_trained.chain_loss_weights.assign(weighted_submodels(weights_arg), 1.0f);
    check_memory_fits(cat("bench train with ", config_path),
                      Trainer::memory_estimate(config, as_trained, ranks),
                      vs_fp32 || baseline ? 2 : 1, 0,
                      "use a smaller config, --batch-size or --seq-len", 0, false);
  } catch (const Error& e) {
    setup_error = e.what();
  }
  end_job_on_first_error(comm, own_error.empty() ? setup_error : own_error);
  Model model(config);
  const ModelConfig& c = model.config();
  if (baseline) require_phd_for_baseline(c, "bench train", config_path);
  model.init_random(1);
  std::vector<float> weights(c.n_chains(), 0.0f);
  weights.back() = 1.0f;
  if (!weights_arg.empty()) weights = parse_float_list(weights_arg, "--chain-loss-weights");
  CHAINLM_CHECK((int)weights.size() == c.n_chains(), "--chain-loss-weights needs ", c.n_chains(),
                c.n_chains() == 1 ? " entry" : " entries");
  int k = 0;
  for (int i = 0; i < c.n_chains(); ++i)
    if (weights[i] > 0) k = i + 1;
  model.ensure_grads();
  const bool bf16 = precision == Precision::Bf16;
  if (bf16) model.use_bf16_weights(/*keep_fp32=*/true);
  Optimizer opt(model.params(), OptimizerConfig{});
  std::unique_ptr<GradientReducer> reducer;
  if (ranks > 1)
    reducer = std::make_unique<GradientReducer>(
        comm, model.params().grads(), model.params().size(), model.gradient_ready_points(),
        (std::size_t)(bucket_mb * (1 << 20) / sizeof(float)), overlap);
  // The model compared with, stepped right after each timed step: the same without PHD
  // (baseline, in the same precision), or the same in fp32 (vs_fp32).
  ModelConfig base_config = c;
  if (baseline) base_config.phd = PhdConfig{};
  std::unique_ptr<Model> base;
  std::unique_ptr<Optimizer> base_opt;
  if (baseline || vs_fp32) {
    base = std::make_unique<Model>(base_config);
    base->init_random(1);
    if (bf16 && baseline) base->use_bf16_weights(/*keep_fp32=*/true);
    base_opt = std::make_unique<Optimizer>(base->params(), OptimizerConfig{});
  }
  std::vector<int> tokens((size_t)B * T), targets((size_t)B * T);
  Rng rng(7 + comm.rank());
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = (int)rng.below(c.vocab_size);
    targets[i] = (int)rng.below(c.vocab_size);
  }
  auto step_of = [&](Model& m, Optimizer& o, long s) {
    m.refresh_bf16_weights();  // bf16: the step's one conversion of the weights, timed with it
    m.params().zero_grads();
    if (reducer) {
      reducer->begin();
      if (reducer->overlap()) m.set_backward_hook([&](std::size_t from) { reducer->ready(from); });
    }
    m.forward_backward(tokens.data(), targets.data(), B, T, weights, 1.0f / ranks);
    if (reducer) {
      m.set_backward_hook(nullptr);
      reducer->finish();
    }
    o.step(m.params(), s, 1e-4f);
  };
  auto one_step = [&](long s) { step_of(model, opt, s); };
  one_step(1);  // warm-up: buffers, page faults, BLAS threads
  if (base) step_of(*base, *base_opt, 1);
  const double tokens_per_step = (double)global_batch * T;
  // 6 * params + 12 * L * keys * D for one weighted sub-model (model/training_flops.h).
  const double flops_per_token = training_flops_per_token(model, T, weights);
  // The machine's speed drifts (shared hosts): measure the GEMM peak right beside every
  // timed step and take the median of the per-step ratios.
  // Under mpirun every rank measures its own peak at the same time as the others (so the sum is
  // the peak of the cores the job runs on), the step's time is the slowest rank's, and the
  // communication figures are rank 0's.
  std::vector<double> times, peaks, openblas_peaks, onednn_peaks, bf16_peaks, mfus, base_times, ratios, comms, waits;
  for (int s = 0; s < steps; ++s) {
    const GemmPeak measured = measure_gemm_peak(2048, 2, precision);
    double peak[4] = {measured.best(precision), measured.openblas_gflops, measured.onednn_gflops,
                      measured.bf16_gflops};
    comm.allreduce_sum(peak, 4);
    peaks.push_back(peak[0]);
    openblas_peaks.push_back(peak[1]);
    onednn_peaks.push_back(peak[2]);
    bf16_peaks.push_back(peak[3]);
    comm.barrier();
    Timer t;
    one_step(s + 2);
    double dt = t.seconds();
    comm.allreduce_max(&dt, 1);
    times.push_back(dt);
    if (reducer) {
      comms.push_back(reducer->comm_seconds());
      waits.push_back(reducer->wait_seconds());
    }
    mfus.push_back(flops_per_token * tokens_per_step / times.back() / 1e9 / peaks.back());
    if (base) {
      Timer tb;
      step_of(*base, *base_opt, s + 2);
      base_times.push_back(tb.seconds());
      ratios.push_back(times.back() / base_times.back());
    }
  }
  const double step_s = median(times), peak = median(peaks);
  const double model_gflops = flops_per_token * tokens_per_step / step_s / 1e9;
  nlohmann::json j = {{"bench", "train"},
                      {"config", config_path},
                      {"chains", c.chains},
                      {"kv_share", c.kv_share},
                      {"active_chains", k},
                      {"batch_size", global_batch},
                      {"seq_len", T},
                      {"threads", num_threads()},
                      {"omp_wait_policy", omp_wait_policy()},
                      {"steps", steps},
                      {"params", model.num_params(c.n_chains())},
                      {"step_ms", step_s * 1e3},
                      {"tokens_per_s", tokens_per_step / step_s},
                      {"model_gflops", model_gflops},
                      {"mfu", median(mfus)}};
  add_gemm_fields(j, GemmPeak{median(openblas_peaks), median(onednn_peaks), median(bf16_peaks)}, precision);
  j["peak_gflops"] = peak;  // the median of the steps' best, which mfu divides by
  // Attention's tile products follow the precision where the build has AVX512-BF16.
  if (precision == Precision::Bf16)
    j["attention_products"] = attention_runs_bf16_products() ? "bf16" : "fp32";
  if (c.phd.enabled()) j["phd"] = c.phd.name();
  if (reducer) {
    // The gradients cross the network once per step: a ring allreduce sends (and receives)
    // 2(N-1)/N times the gradient bytes per rank.
    const double grad_bytes = 4.0 * model.params().size();
    j["ranks"] = ranks;
    j["nodes"] = comm.nodes();
    j["rows_per_rank"] = B;
    j["grad_bytes"] = grad_bytes;
    j["ring_bytes_per_rank"] = 2.0 * (ranks - 1) / ranks * grad_bytes;
    j["buckets"] = reducer->buckets().size();
    j["bucket_mb"] = bucket_mb;
    j["overlap"] = reducer->overlap();
    j["comm_ms"] = median(comms) * 1e3;
    j["comm_wait_ms"] = median(waits) * 1e3;
    j["comm_fraction"] = median(waits) / step_s;
  }
  // The median of per-step ratios: each step is compared with the other model's step run
  // right after it, under the same load.
  if (baseline) {
    j["baseline_step_ms"] = median(base_times) * 1e3;
    j["step_ratio"] = median(ratios);
    j["step_ratio_over_repeat"] = median(ratios) / c.phd.repeat;
  }
  if (vs_fp32) {
    std::vector<double> speedups;
    for (double r : ratios) speedups.push_back(1.0 / r);
    j["fp32_step_ms"] = median(base_times) * 1e3;
    j["fp32_tokens_per_s"] = tokens_per_step / median(base_times);
    j["speedup_vs_fp32"] = median(speedups);
  }
  if (comm.is_root()) std::printf("%s\n", j.dump().c_str());
}

}  // namespace chainlm::cli
