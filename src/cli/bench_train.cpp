// chainlm bench train: this machine's sgemm peak and a training step of a config, in one
// run, so the ratio (MFU) is taken under the same conditions.
#include <cstdio>
#include <vector>

#include "cli/bench_util.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "model/model.h"
#include "train/optimizer.h"

namespace chainlm::cli {

void bench_train(const std::string& config_path, int B, int T, int threads, int steps,
                 const std::string& weights_arg) {
  set_num_threads(threads);
  Model model(load_config(config_path));
  const ModelConfig& c = model.config();
  CHAINLM_CHECK(T <= c.max_seq_len, "--seq-len ", T, " exceeds max_seq_len ", c.max_seq_len);
  model.init_random(1);
  std::vector<float> weights(c.n_chains(), 0.0f);
  weights.back() = 1.0f;
  if (!weights_arg.empty()) weights = parse_float_list(weights_arg, "--chain-loss-weights");
  CHAINLM_CHECK((int)weights.size() == c.n_chains(), "--chain-loss-weights needs ", c.n_chains(),
                " entries");
  int k = 0;
  for (int i = 0; i < c.n_chains(); ++i)
    if (weights[i] > 0) k = i + 1;
  Optimizer opt(model.params(), OptimizerConfig{});
  std::vector<int> tokens((size_t)B * T), targets((size_t)B * T);
  Rng rng(7);
  for (size_t i = 0; i < tokens.size(); ++i) {
    tokens[i] = (int)rng.below(c.vocab_size);
    targets[i] = (int)rng.below(c.vocab_size);
  }
  auto one_step = [&](long s) {
    model.params().zero_grads();
    model.forward_backward(tokens.data(), targets.data(), B, T, weights, 1.0f);
    opt.step(model.params(), s, 1e-4f);
  };
  one_step(1);  // warm-up: buffers, page faults, BLAS threads
  const double tokens_per_step = (double)B * T;
  const double Dk = model.layout().dim.prefix(k);
  const double flops_per_token = 6.0 * model.matmul_params(k) + 6.0 * c.n_layers * T * Dk;
  // The machine's speed drifts (shared hosts): measure the sgemm peak right beside every
  // timed step and take the median of the per-step ratios.
  std::vector<double> times, peaks, mfus;
  for (int s = 0; s < steps; ++s) {
    peaks.push_back(measure_sgemm_gflops(2048, 2));
    Timer t;
    one_step(s + 2);
    times.push_back(t.seconds());
    mfus.push_back(flops_per_token * tokens_per_step / times.back() / 1e9 / peaks.back());
  }
  const double step_s = median(times), peak = median(peaks);
  const double model_gflops = flops_per_token * tokens_per_step / step_s / 1e9;
  nlohmann::json j = {{"bench", "train"},
                      {"config", config_path},
                      {"chains", c.chains},
                      {"kv_share", c.kv_share},
                      {"active_chains", k},
                      {"batch_size", B},
                      {"seq_len", T},
                      {"threads", num_threads()},
                      {"steps", steps},
                      {"params", model.num_params(c.n_chains())},
                      {"step_ms", step_s * 1e3},
                      {"tokens_per_s", tokens_per_step / step_s},
                      {"model_gflops", model_gflops},
                      {"sgemm_gflops", peak},
                      {"mfu", median(mfus)}};
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace chainlm::cli
