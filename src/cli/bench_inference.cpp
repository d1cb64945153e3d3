// chainlm bench decode / prefill: batch-1 inference speed against the machine's ceilings
// measured in the same run (memory bandwidth for decoding, FLOPs for prefill).
#include <algorithm>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "cli/bench_util.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "core/wait_policy.h"
#include "infer/session.h"
#include "model/memory_estimate.h"

namespace chainlm::cli {

namespace {

// The --model (or --config, with random weights) in fp32.
std::unique_ptr<Model> bench_model_fp32(const InferenceBenchArgs& a) {
  CHAINLM_CHECK(a.model.empty() != a.config.empty(), "bench: pass exactly one of --model or --config");
  // Its fp32 weights, with up to a copy in another form (bf16, quantized, the --vs-fp32 pair),
  // and two sessions (the timed one and its baseline) holding the whole context's cache: a config
  // of 2e9 vocabulary rows, or of max_seq_len 16M, died in the allocator (std::bad_alloc).
  auto estimate = [](const ModelConfig& config) {
    MemoryEstimate e;
    e.parts = {{"fp32 weights", Model::parameter_floats(config) * sizeof(float)},
               {"a second copy of the weights (fp32 panels, --precision/--quant, --vs-fp32)",
                Model::parameter_floats(config) * sizeof(float)},
               {cat("2 sessions at ", config.max_seq_len, " tokens"),
                2 * InferenceSession::memory_bytes(config, 512, KvCacheType::F32)},
               {"runtime", kRuntimeOverheadBytes}};
    return e;
  };
  const std::string what = cat("bench with ", a.config.empty() ? a.model : a.config);
  if (!a.config.empty()) {
    const ModelConfig config = load_config(a.config);
    check_memory_fits(what, estimate(config), 1, 0, "use a smaller config", 0, false);
    auto m = std::make_unique<Model>(config);
    m->init_random(1);
    return m;
  }
  std::unique_ptr<Model> m =
      std::move(load_model_and_tokenizer(a.model, "", false, Precision::Fp32, false).model);
  check_memory_fits(what, estimate(m->config()), 1, 0, "use a smaller model", m->weight_bytes(),
                    false);
  return m;
}

// The benchmarked model in --precision, and with --vs-fp32 the same weights in fp32 (null
// otherwise).
std::pair<std::unique_ptr<Model>, std::unique_ptr<Model>> bench_models(const InferenceBenchArgs& a) {
  const Precision p = parse_precision(a.precision);
  const bool quant = !a.quant.empty();
  CHAINLM_CHECK(!quant || p == Precision::Fp32, "bench: --quant and --precision bf16 exclude each other");
  CHAINLM_CHECK(!a.vs_fp32 || p == Precision::Bf16 || quant,
                "bench: --vs-fp32 compares --precision bf16 or --quant with fp32");
  CHAINLM_CHECK(!(a.vs_fp32 && a.baseline), "bench: pass --vs-fp32 or --baseline, not both");
  std::unique_ptr<Model> fp32 = bench_model_fp32(a);
  if (p == Precision::Fp32 && !quant) {
    fp32->use_fp32_panels();  // as generate and serve hold an fp32 model
    return {std::move(fp32), nullptr};
  }
  CHAINLM_CHECK(!fp32->quantized(), "bench: --model is already quantized (", fp32->weight_format(),
                "); --quant and --precision apply to fp32 models");
  auto narrow = std::make_unique<Model>(fp32->config());
  narrow->copy_weights_from(*fp32);
  if (quant)
    narrow->quantize_weights(parse_quant_type(a.quant));
  else
    narrow->use_bf16_weights(/*keep_fp32=*/false);
  if (a.vs_fp32)
    fp32->use_fp32_panels();
  else
    fp32.reset();
  return {std::move(narrow), std::move(fp32)};
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
// PHD: plus `hidden` hidden rows, each attending about all originals and its window. Past the
// last layer's K/V products only the row that gives the logits runs (session.cpp).
double forward_flops(const Model& m, int k, long offset, long n, long hidden = 0) {
  const ModelConfig& c = m.config();
  const ChainLayout& L = m.layout();
  const double head = (double)c.vocab_size * L.dim.prefix(k);
  double past_kv = 0;  // parameters of one layer's wq, wo, w1, w2, w3 with k chains
  for (const ChainLinear* cl : {&L.wq, &L.wo, &L.w1, &L.w2, &L.w3})
    for (int i = 0; i < k; ++i) past_kv += (double)cl->out.width(i) * cl->in.end(i);
  const double matmul =
      2.0 * (n + hidden) * ((double)m.matmul_params(k) - head) - 2.0 * (n + hidden - 1) * past_kv;
  // q·k and p·v over the causal prefix of every row; in the last layer the last row's only.
  const double keys = (double)n * offset + (double)n * (n + 1) / 2 +
                      (double)hidden * (offset + n + c.phd.window);
  const double last_keys = offset + n + (hidden > 0 ? c.phd.window : 0);
  const double attention =
      4.0 * L.head_dim * L.active_heads(k) * ((c.n_layers - 1) * keys + last_keys);
  return matmul + attention + 2.0 * head;
}

// The model without its "phd" section, with the same weights (PHD adds no parameters).
std::unique_ptr<Model> baseline_model(const Model& m) {
  require_phd_for_baseline(m.config(), "bench", "this model");
  ModelConfig c = m.config();
  c.phd = PhdConfig{};
  auto base = std::make_unique<Model>(c);
  base->copy_weights_from(m);
  return base;
}

// Median milliseconds of each function over `reps` interleaved rounds after a warm-up round.
std::vector<double> interleaved_ms(const std::vector<std::function<void()>>& fs, int reps) {
  std::vector<std::vector<double>> ms(fs.size());
  for (int rep = 0; rep <= reps; ++rep)
    for (size_t i = 0; i < fs.size(); ++i) {
      Timer t;
      fs[i]();
      if (rep > 0) ms[i].push_back(t.seconds() * 1e3);
    }
  std::vector<double> out;
  for (auto& v : ms) out.push_back(median(v));
  return out;
}

std::string model_name(const InferenceBenchArgs& a) { return a.model.empty() ? a.config : a.model; }

// The default lengths cut to fit the model's context (fit_default_lengths); what is cut is said on
// stderr. Lengths given are checked as given, by the caller.
InferenceBenchArgs fit_lengths(InferenceBenchArgs a, int max_seq_len, bool decode) {
  const char* what = decode ? "bench decode" : "bench prefill";
  bool cut = false;
  if (!decode) {
    cut = !a.prompt_tokens_given && a.prompt_tokens > max_seq_len;
    if (cut) a.prompt_tokens = max_seq_len;
  } else {
    cut = fit_default_lengths(a.prompt_tokens, a.prompt_tokens_given, a.tokens, a.tokens_given,
                              max_seq_len);
  }
  if (!cut) return a;
  const std::string lengths =
      decode ? cat("a prompt of ", a.prompt_tokens, " tokens, then ", a.tokens, " decoded")
             : cat("a prompt of ", a.prompt_tokens, " tokens");
  std::fprintf(stderr, "%s: %s (the default did not fit the model's %d positions)\n", what,
               lengths.c_str(), max_seq_len);
  return a;
}

}  // namespace

void bench_decode(const InferenceBenchArgs& given) {
  apply_threads_option(given.threads);
  auto [model, fp32] = bench_models(given);
  const ModelConfig& c = model->config();
  const InferenceBenchArgs a = fit_lengths(given, c.max_seq_len, true);
  const int k = active_chains(a, *model);
  // (Each length given is at least 1: the options' checks.)
  CHAINLM_CHECK(!a.prompt_tokens_given || a.prompt_tokens < c.max_seq_len,
                "bench decode: --prompt-tokens ", a.prompt_tokens,
                " leaves no position to decode in: the model has ", c.max_seq_len,
                " (max_seq_len)");
  CHAINLM_CHECK(!a.tokens_given || a.tokens < c.max_seq_len, "bench decode: --tokens ", a.tokens,
                " leaves no position for a prompt: the model has ", c.max_seq_len,
                " (max_seq_len)");
  CHAINLM_CHECK(a.prompt_tokens + a.tokens <= c.max_seq_len,
                "bench decode: ", a.prompt_tokens_given ? "--prompt-tokens " : "a prompt of ",
                a.prompt_tokens, a.tokens_given ? " + --tokens " : " + ", a.tokens, " = ",
                a.prompt_tokens + a.tokens, " exceeds the model's max_seq_len ", c.max_seq_len);
  auto prompt = random_prompt(a.prompt_tokens, c.vocab_size);
  auto feed = random_prompt(a.tokens + 1, c.vocab_size);
  const KvCacheType kv_cache = parse_kv_cache_type(a.kv_cache);
  InferenceSession session(*model, 512, kv_cache);
  // --baseline: the same weights without PHD (--vs-fp32: in fp32), decoding the same tokens
  // right after each step.
  std::unique_ptr<Model> base = a.baseline ? baseline_model(*model) : std::move(fp32);
  // The baseline's cache in the elements the timed model's has ("auto" resolves to f32 for a
  // PHD model and f16 for its quantized baseline: the ratio compared two caches).
  std::unique_ptr<InferenceSession> base_session =
      base ? std::make_unique<InferenceSession>(*base, 512,
                                                a.baseline ? session.cache().type : kv_cache)
           : nullptr;
  // Warm-up pass (page faults, thread start-up), then the timed one.
  for (InferenceSession* s : {&session, base_session.get()}) {
    if (!s) continue;
    s->prefill(prompt, k);
    s->decode(feed[0], k);
    s->reset();
    s->prefill(prompt, k);
  }
  // With a second model the two take turns, kTurn tokens each, and each turn's first token is
  // left out of the ratio: it refills the caches the other model's weights evicted (a q4_0 30M
  // model's 17 MB after the fp32 one's 120 MB), which a model decoding alone never pays. The
  // ratio is the median over turns of (median of this model's timed tokens) / (the other's),
  // each pair under the same load.
  constexpr int kTurn = 8;
  // Bytes a decode step must read: the sub-model's matrices and the K/V of the prefix
  // (at the median position of the run).
  const ChainLayout& L = model->layout();
  const double weight_bytes = model->bytes_per_weight() * (double)model->matmul_params(k);
  const double mid = a.prompt_tokens + a.tokens / 2.0;
  // PHD: the originals' K/V plus the ring of the last W hidden tokens (fp32).
  const double kv_bytes =
      2.0 * c.n_layers * L.active_kv_width(k) *
      ((double)kv_cache_element_bytes(session.cache().type) * mid + 4.0 * c.phd.window);
  // One token a turn leaves nothing to compare (speedup_vs_fp32 came out null, nothing said).
  CHAINLM_CHECK(!base_session || a.tokens >= 2,
                "bench decode: ", a.vs_fp32 ? "--vs-fp32" : "--baseline",
                " needs --tokens 2 or more (it is ", a.tokens,
                "): each turn's first token refills the caches the other model evicted and is "
                "left out of the ratio");
  const double bandwidth_before = measure_read_bandwidth_gbs((size_t)(weight_bytes + kv_bytes));
  std::vector<double> ms, base_ms, ratios;
  for (int i0 = 0; i0 < a.tokens; i0 += kTurn) {
    const int i1 = std::min(a.tokens, i0 + kTurn);
    std::vector<double> turn, base_turn;
    for (int i = i0; i < i1; ++i) {
      Timer t;
      session.decode(feed[i], k);
      ms.push_back(t.seconds() * 1e3);
      if (i > i0) turn.push_back(ms.back());
    }
    if (!base_session) continue;
    for (int i = i0; i < i1; ++i) {
      Timer tb;
      base_session->decode(feed[i], k);
      base_ms.push_back(tb.seconds() * 1e3);
      if (i > i0) base_turn.push_back(base_ms.back());
    }
    if (!turn.empty()) ratios.push_back(median(turn) / median(base_turn));
  }
  const double ms_per_token = median(ms);
  // The better of the probes before and after the timed steps: one taken while another process
  // held the memory bus read low, and the fraction came out above 1.
  const double bandwidth =
      std::max(bandwidth_before, measure_read_bandwidth_gbs((size_t)(weight_bytes + kv_bytes)));
  const double bound_ms = (weight_bytes + kv_bytes) / bandwidth / 1e6;
  nlohmann::json j = {{"bench", "decode"},
                      {"model", model_name(a)},
                      {"chains", k},
                      {"n_chains", c.n_chains()},
                      {"kv_share", c.kv_share},
                      {"threads", num_threads()},
                      {"omp_wait_policy", omp_wait_policy()},
                      {"precision", model->weight_format()},
                      {"weight_bytes", model->weight_bytes()},
                      {"prompt_tokens", a.prompt_tokens},
                      {"tokens", a.tokens},
                      {"ms_per_token", ms_per_token},
                      {"tokens_per_s", 1e3 / ms_per_token},
                      {"kv_cache", kv_cache_type_name(session.cache().type)},
                      {"kv_cache_bytes", session.cache().bytes_used(L.kv)},
                      {"kv_cache_bytes_allocated", session.cache().bytes_allocated()},
                      {"bytes_read_per_token", weight_bytes + kv_bytes},
                      {"bandwidth_gbs", bandwidth},
                      {"bound_ms_per_token", bound_ms},
                      {"fraction_of_bound", bound_ms / ms_per_token}};
  if (bound_ms > ms_per_token)  // decoding streamed faster than both probes read
    j["note"] = cat("the bandwidth probes read slower than decoding streamed: ",
                    num_threads() > cores_available()
                        ? "more threads than cores made them wait for each other"
                        : "the machine was busy during them");
  if (c.phd.enabled()) j["phd"] = c.phd.name();
  if (base_session && a.vs_fp32) {
    j["fp32_ms_per_token"] = median(base_ms);
    j["fp32_weight_bytes"] = base->weight_bytes();
    j["fp32_kv_cache"] = kv_cache_type_name(base_session->cache().type);
    j["speedup_vs_fp32"] = 1.0 / median(ratios);  // of per-token ratios, each pair under the same load
  } else if (base_session) {
    j["baseline_ms_per_token"] = median(base_ms);
    j["baseline_kv_cache"] = kv_cache_type_name(base_session->cache().type);
    j["baseline_kv_cache_bytes"] = base_session->cache().bytes_used(L.kv);
    j["ratio"] = median(ratios);  // of per-token ratios, each pair under the same load
  }
  std::printf("%s\n", j.dump().c_str());
}

namespace {

// The precision whose GEMM peak a prefill's MFU is measured against: the weights' (bf16 weights:
// the bf16 GEMM's). Quantized weights have no GEMM peak of their own here: fp32's is reported,
// and no MFU.
Precision peak_precision(const Model& model) {
  return model.quantized() ? Precision::Fp32 : model.precision();
}

// PHD prefill: bounded (the default: hidden copies of the last positions only, SPEC B3), the
// unbounded K-copies prefill when there is a window, and with --baseline the same weights
// without PHD; interleaved rounds, medians.
void bench_phd_prefill(const InferenceBenchArgs& a, const Model& model, int k,
                       const std::vector<int>& prompt, InferenceSession& session) {
  const ModelConfig& c = model.config();
  const int n = (int)prompt.size(), K = c.phd.repeat;
  const int P = session.phd_hidden_positions(n);
  InferenceSession unbounded(model, n);
  unbounded.set_bounded_prefill(false);
  std::unique_ptr<Model> base = a.baseline ? baseline_model(model) : nullptr;
  std::unique_ptr<InferenceSession> base_session =
      base ? std::make_unique<InferenceSession>(*base, n) : nullptr;
  auto run = [&](InferenceSession& s) {
    return [&s, &prompt, k] {
      s.reset();
      s.prefill(prompt, k, false);
    };
  };
  std::vector<std::function<void()>> fs{run(session)};
  if (c.phd.window > 0) fs.push_back(run(unbounded));
  if (base_session) fs.push_back(run(*base_session));
  // CoLM-Air with K > 1 chains: the prompt's originals through chain 1 only, as for an ordinary
  // model (docs/phd.md); timed in the same rounds.
  InferenceSession chain1(model, n);
  const bool chain1_prefill = c.kv_share && k > 1;
  if (chain1_prefill)
    fs.push_back([&chain1, &prompt, k] {
      chain1.reset();
      chain1.prefill(prompt, k, true);
    });
  const Precision weights = peak_precision(model);
  const GemmPeak peak = measure_gemm_peak(2048, 2, weights);
  const std::vector<double> ms = interleaved_ms(fs, 3);
  const double flops = forward_flops(model, k, 0, n, (long)(K - 1) * P);
  nlohmann::json j = {{"bench", "prefill"},
                      {"model", model_name(a)},
                      {"phd", c.phd.name()},
                      {"chains", k},
                      {"n_chains", c.n_chains()},
                      {"kv_share", c.kv_share},
                      {"threads", num_threads()},
                      {"omp_wait_policy", omp_wait_policy()},
                      {"prompt_tokens", n},
                      {"hidden_positions", P},
                      {"prefill_ms", ms[0]},
                      {"prefill_gflops", flops / ms[0] / 1e6}};
  add_gemm_fields(j, peak, weights);
  j["precision"] = model.weight_format();
  if (!model.quantized()) j["mfu"] = j["prefill_gflops"].get<double>() / peak.best(weights);
  j["kv_cache"] = kv_cache_type_name(session.cache().type);  // as every other bench line says
  size_t next = 1;
  if (c.phd.window > 0) {
    j["unbounded_prefill_ms"] = ms[next];
    j["unbounded_prefill_gflops"] = forward_flops(model, k, 0, n, (long)(K - 1) * n) / ms[next] / 1e6;
    ++next;
  }
  if (base_session) {
    const double base_ms = ms[next];
    j["baseline_prefill_ms"] = base_ms;
    j["ratio"] = ms[0] / base_ms;
    if (c.phd.window > 0) j["unbounded_ratio"] = ms[1] / base_ms;
    ++next;
  }
  if (chain1_prefill) {
    j["chain1_prefill_ms"] = ms[next];
    j["speedup"] = ms[0] / ms[next];
  }
  std::printf("%s\n", j.dump().c_str());
}

}  // namespace

void bench_prefill(const InferenceBenchArgs& given) {
  apply_threads_option(given.threads);
  auto [model, fp32] = bench_models(given);
  const ModelConfig& c = model->config();
  const InferenceBenchArgs a = fit_lengths(given, c.max_seq_len, false);
  const int k = active_chains(a, *model);
  const int n = a.prompt_tokens;
  CHAINLM_CHECK(n >= 2 && n <= c.max_seq_len, "bench prefill: --prompt-tokens must be in 2..",
                c.max_seq_len);
  auto prompt = random_prompt(n, c.vocab_size);
  const KvCacheType kv_cache = parse_kv_cache_type(a.kv_cache);
  InferenceSession session(*model, n, kv_cache);  // the whole prompt in one pass
  // (--baseline on an ordinary model ran without a word: the refusal decode and train give.)
  if (a.baseline) require_phd_for_baseline(c, "bench prefill", "this model");
  if (c.phd.enabled()) {
    CHAINLM_CHECK(!a.vs_fp32, "bench prefill: --vs-fp32 times ordinary models (this one is PHD)");
    bench_phd_prefill(a, *model, k, prompt, session);
    return;
  }
  const Precision weights = peak_precision(*model);
  const GemmPeak peak = measure_gemm_peak(2048, 2, weights);
  // With --vs-fp32 the two models' prefills alternate, round by round (a busy core slows both).
  std::unique_ptr<InferenceSession> fp32_session =
      fp32 ? std::make_unique<InferenceSession>(*fp32, n, kv_cache) : nullptr;
  std::vector<std::function<void()>> runs = {[&] {
    session.reset();
    session.prefill(prompt, k, false);
  }};
  if (fp32_session)
    runs.push_back([&] {
      fp32_session->reset();
      fp32_session->prefill(prompt, k, false);
    });
  const std::vector<double> ms = interleaved_ms(runs, fp32_session ? 7 : 3);
  const double full_ms = ms[0];
  auto time_prefill = [&](InferenceSession& s, bool chain1) {
    return interleaved_ms({[&] {
                             s.reset();
                             s.prefill(prompt, k, chain1);
                           }},
                          3)[0];
  };
  const double full_flops = forward_flops(*model, k, 0, n);
  nlohmann::json j = {{"bench", "prefill"},
                      {"model", model_name(a)},
                      {"chains", k},
                      {"n_chains", c.n_chains()},
                      {"kv_share", c.kv_share},
                      {"threads", num_threads()},
                      {"omp_wait_policy", omp_wait_policy()},
                      {"prompt_tokens", n},
                      {"full_prefill_ms", full_ms},
                      {"full_prefill_gflops", full_flops / full_ms / 1e6}};
  add_gemm_fields(j, peak, weights);
  j["precision"] = model->weight_format();
  if (!model->quantized()) j["mfu"] = full_flops / full_ms / 1e6 / peak.best(weights);
  j["kv_cache"] = kv_cache_type_name(session.cache().type);
  if (fp32_session) {
    j["fp32_prefill_ms"] = ms[1];
    j["speedup_vs_fp32"] = ms[1] / full_ms;
  }
  if (c.kv_share && k > 1) {
    const double chain1_ms = time_prefill(session, true);
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
