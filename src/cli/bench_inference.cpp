// chainlm bench decode / prefill: batch-1 inference speed against the machine's ceilings
// measured in the same run (memory bandwidth for decoding, FLOPs for prefill).
#include <cstdio>
#include <memory>
#include <vector>

#include "cli/bench_util.h"
#include "cli/model_loading.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "infer/session.h"

namespace chainlm::cli {

namespace {

std::unique_ptr<Model> bench_model(const InferenceBenchArgs& a) {
  CHAINLM_CHECK(a.model.empty() != a.config.empty(), "bench: pass exactly one of --model or --config");
  if (!a.config.empty()) {
    auto m = std::make_unique<Model>(load_config(a.config));
    m->init_random(1);
    return m;
  }
  return std::move(load_model_and_tokenizer(a.model, "", false).model);
}

int active_chains(const InferenceBenchArgs& a, const Model& m) {
  const int n = m.config().n_chains();
  const int k = a.chains ? a.chains : n;
  CHAINLM_CHECK(k >= 1 && k <= n, "--chains ", a.chains, " is outside 1..", n);
  return k;
}

std::vector<int> random_prompt(int n, int vocab) {
  Rng rng(3);
  std::vector<int> t(n);
  for (auto& x : t) x = (int)rng.below(vocab);
  return t;
}

// FLOPs of a forward over rows [offset, offset+n) with k chains, logits for the last row only.
double forward_flops(const Model& m, int k, long offset, long n) {
  const ModelConfig& c = m.config();
  const ChainLayout& L = m.layout();
  const double head = (double)c.vocab_size * L.dim.prefix(k);
  const double matmul = 2.0 * n * ((double)m.matmul_params(k) - head);
  // q·k and p·v over the causal prefix of every row.
  const double keys = (double)n * offset + (double)n * (n + 1) / 2;
  const double attention = 4.0 * c.n_layers * L.head_dim * L.active_heads(k) * keys;
  return matmul + attention + 2.0 * head;
}

std::string model_name(const InferenceBenchArgs& a) { return a.model.empty() ? a.config : a.model; }

}  // namespace

void bench_decode(const InferenceBenchArgs& a) {
  set_num_threads(a.threads);
  auto model = bench_model(a);
  const ModelConfig& c = model->config();
  const int k = active_chains(a, *model);
  CHAINLM_CHECK(a.prompt_tokens >= 1 && a.tokens >= 1, "bench decode: --prompt-tokens and --tokens must be positive");
  CHAINLM_CHECK(a.prompt_tokens + a.tokens <= c.max_seq_len, "bench decode: prompt + tokens = ",
                a.prompt_tokens + a.tokens, " exceeds max_seq_len ", c.max_seq_len);
  auto prompt = random_prompt(a.prompt_tokens, c.vocab_size);
  auto feed = random_prompt(a.tokens + 1, c.vocab_size);
  InferenceSession session(*model);
  // Warm-up pass (page faults, thread start-up), then the timed one.
  session.prefill(prompt, k);
  session.decode(feed[0], k);
  session.reset();
  session.prefill(prompt, k);
  std::vector<double> ms;
  for (int i = 0; i < a.tokens; ++i) {
    Timer t;
    session.decode(feed[i], k);
    ms.push_back(t.seconds() * 1e3);
  }
  const double ms_per_token = median(ms);
  // Bytes a decode step must read: the sub-model's matrices and the K/V of the prefix
  // (at the median position of the run).
  const ChainLayout& L = model->layout();
  const double weight_bytes = 4.0 * (double)model->matmul_params(k);
  const double mid = a.prompt_tokens + a.tokens / 2.0;
  const double kv_bytes = 2.0 * 4.0 * c.n_layers * mid * L.active_kv_width(k);
  const double bandwidth = measure_read_bandwidth_gbs((size_t)(weight_bytes + kv_bytes));
  const double bound_ms = (weight_bytes + kv_bytes) / bandwidth / 1e6;
  nlohmann::json j = {{"bench", "decode"},
                      {"model", model_name(a)},
                      {"chains", k},
                      {"n_chains", c.n_chains()},
                      {"kv_share", c.kv_share},
                      {"threads", num_threads()},
                      {"prompt_tokens", a.prompt_tokens},
                      {"tokens", a.tokens},
                      {"ms_per_token", ms_per_token},
                      {"tokens_per_s", 1e3 / ms_per_token},
                      {"kv_cache_bytes", session.cache().bytes_used(L.kv)},
                      {"kv_cache_bytes_allocated", session.cache().bytes_allocated()},
                      {"bytes_read_per_token", weight_bytes + kv_bytes},
                      {"bandwidth_gbs", bandwidth},
                      {"bound_ms_per_token", bound_ms},
                      {"fraction_of_bound", bound_ms / ms_per_token}};
  std::printf("%s\n", j.dump().c_str());
}

void bench_prefill(const InferenceBenchArgs& a) {
  set_num_threads(a.threads);
  auto model = bench_model(a);
  const ModelConfig& c = model->config();
  const int k = active_chains(a, *model);
  const int n = a.prompt_tokens;
  CHAINLM_CHECK(n >= 2 && n <= c.max_seq_len, "bench prefill: --prompt-tokens must be in 2..",
                c.max_seq_len);
  auto prompt = random_prompt(n, c.vocab_size);
  InferenceSession session(*model, n);  // the whole prompt in one pass
  auto time_prefill = [&](bool chain1) {
    std::vector<double> s;
    for (int rep = 0; rep < 4; ++rep) {  // rep 0 warms up
      session.reset();
      Timer t;
      session.prefill(prompt, k, chain1);
      if (rep > 0) s.push_back(t.seconds() * 1e3);
    }
    return median(s);
  };
  const double peak = measure_sgemm_gflops(2048, 2);
  const double full_ms = time_prefill(false);
  const double full_flops = forward_flops(*model, k, 0, n);
  nlohmann::json j = {{"bench", "prefill"},
                      {"model", model_name(a)},
                      {"chains", k},
                      {"n_chains", c.n_chains()},
                      {"kv_share", c.kv_share},
                      {"threads", num_threads()},
                      {"prompt_tokens", n},
                      {"full_prefill_ms", full_ms},
                      {"full_prefill_gflops", full_flops / full_ms / 1e6},
                      {"sgemm_gflops", peak}};
  if (c.kv_share && k > 1) {
    const double chain1_ms = time_prefill(true);
    const double chain1_flops = forward_flops(*model, 1, 0, n - 1) + forward_flops(*model, k, n - 1, 1);
    const double speedup = full_ms / chain1_ms, flop_ratio = full_flops / chain1_flops;
    j["chain1_prefill_ms"] = chain1_ms;
    j["chain1_prefill_gflops"] = chain1_flops / chain1_ms / 1e6;
    j["speedup"] = speedup;
    j["flop_ratio"] = flop_ratio;
    j["speedup_over_flop_ratio"] = speedup / flop_ratio;
  }
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace chainlm::cli
