// chainlm bench serve: an in-process load generator against `chainlm serve`'s HTTP API over
// loopback. At each concurrency, that many clients send streamed, greedy completions of
// --tokens tokens each (EOS ignored, so every request decodes the same number of tokens) and
// the line reports aggregate tokens/s, request latency and time to first token, with the
// speedup over concurrency 1: what continuous batching buys (docs/serving.md, "Batching").
#include <httplib.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/bench_util.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "kernels/quant.h"
#include "serve/server.h"

namespace chainlm::cli {

namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, (size_t)(p * (v.size() - 1) + 0.5))];
}

// One request's figures.
struct Timing {
  double latency_ms = 0, first_token_ms = 0;
  int tokens = 0;
};

// A streamed request: its latency, the time to its first event and the tokens the last event counts.
Timing stream_one(httplib::Client& client, const json& body) {
  Timing t;
  const Clock::time_point start = Clock::now();
  std::string data;
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  req.content_receiver = [&](const char* p, size_t n, uint64_t, uint64_t) {
    if (data.empty()) t.first_token_ms = ms_since(start);
    data.append(p, n);
    return true;
  };
  auto r = client.send(req);
  t.latency_ms = ms_since(start);
  CHAINLM_CHECK(r && r->status == 200, "bench serve: a request failed (",
                r ? std::to_string(r->status) + " " + data : httplib::to_string(r.error()), ")");
  // The event before "[DONE]" carries usage.
  const size_t done = data.rfind("data: [DONE]");
  const size_t last = data.rfind("data: ", done == std::string::npos ? std::string::npos : done - 1);
  CHAINLM_CHECK(done != std::string::npos && last != std::string::npos, "bench serve: a stream did not end with [DONE]");
  t.tokens = json::parse(data.substr(last + 6, done - last - 6)).at("usage").at("completion_tokens").get<int>();
  return t;
}

// The scheduler's counters from /metrics: decode steps, rows, seconds in steps and in prompt
// pieces, and the threads its steps run on now.
std::array<double, 5> scheduler_counters(int port) {
  httplib::Client client("127.0.0.1", port);
  auto r = client.Get("/metrics");
  CHAINLM_CHECK(r && r->status == 200, "bench serve: /metrics did not answer");
  std::array<double, 5> out{};
  const char* names[] = {"chainlm_decode_steps_total", "chainlm_decode_rows_total",
                         "chainlm_decode_seconds_total", "chainlm_prefill_seconds_total",
                         "chainlm_decode_threads"};
  for (int i = 0; i < 5; ++i) {
    const std::string key = std::string("\n") + names[i] + " ";
    const size_t at = r->body.find(key);
    CHAINLM_CHECK(at != std::string::npos, "bench serve: /metrics has no ", names[i]);
    out[i] = std::stod(r->body.substr(at + key.size()));
  }
  return out;
}

// `clients` concurrent clients on loopback send requests 0..requests-1 (request_of(i) gives the
// body) until none is left; the timings of all of them, or the first failure thrown.
std::vector<Timing> run_clients(int port, int clients, int requests,
                                const std::function<json(int)>& request_of) {
  std::atomic<int> next{0};
  std::mutex m;
  std::vector<Timing> timings;
  std::string failure;
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t)
    threads.emplace_back([&] {
      httplib::Client client("127.0.0.1", port);
      client.set_read_timeout(600, 0);
      for (int i; (i = next++) < requests;) {
        try {
          const Timing r = stream_one(client, request_of(i));
          std::lock_guard<std::mutex> lock(m);
          timings.push_back(r);
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(m);
          failure = e.what();
        }
      }
    });
  for (auto& t : threads) t.join();
  CHAINLM_CHECK(failure.empty(), failure);
  return timings;
}
}  // namespace

void bench_serve(const ServeBenchArgs& given) {
  ServeBenchArgs a = given;
  const std::vector<int>& levels = a.concurrency;
  CHAINLM_CHECK(!levels.empty(), "bench serve: --concurrency needs at least one level");
  CHAINLM_CHECK(a.tokens >= 1 && a.prompt_tokens >= 1, "bench serve: --tokens and --prompt-tokens must be positive");
  // Fewer requests than clients: the level runs no more at once than there are requests.
  if (a.requests > 0)
    for (int level : levels)
      if (level > a.requests)
        std::fprintf(
            stderr,
            "bench serve: warning: --requests %d is below --concurrency %d: that level runs %d at "
            "a time\n",
            a.requests, level, a.requests);
  const Precision precision = parse_precision(a.precision);
  CHAINLM_CHECK(a.quant.empty() || precision == Precision::Fp32,
                "bench serve: --quant and --precision bf16 exclude each other");
  apply_threads_option(a.threads);  // warns of more threads than cores, as serve does
  // Loaded on a thread of its own so that no idle OpenMP pool outlives it (run_on_own_thread).
  LoadedModel loaded;
  run_on_own_thread([&] {
    loaded = load_model_and_tokenizer(a.model, a.tokenizer, true, precision, a.quant.empty());
    if (!a.quant.empty()) {
      CHAINLM_CHECK(!loaded.model->quantized(), "bench serve: --model is already quantized (",
                    loaded.model->weight_format(), "); --quant applies to fp32 models");
      loaded.model->quantize_weights(parse_quant_type(a.quant));
    }
  });
  const Model& model = *loaded.model;
  const ModelConfig& c = model.config();
  // BOS + prompt + tokens <= max_seq_len + 1: the last token is sampled at the last position and
  // needs no place of its own (docs/inference.md).
  if (fit_default_lengths(a.prompt_tokens, a.prompt_tokens_given, a.tokens, a.tokens_given,
                          c.max_seq_len))
    std::fprintf(stderr,
                 "bench serve: prompts of %d tokens, then %d generated (the default did not fit "
                 "the model's %d positions)\n",
                 a.prompt_tokens, a.tokens, c.max_seq_len);
  CHAINLM_CHECK(a.prompt_tokens + 1 + a.tokens <= c.max_seq_len + 1, "bench serve: BOS + ",
                a.prompt_tokens_given ? "--prompt-tokens " : "a prompt of ", a.prompt_tokens,
                a.tokens_given ? " + --tokens " : " + ", a.tokens, " = ",
                a.prompt_tokens + 1 + a.tokens, " exceeds the model's max_seq_len ", c.max_seq_len,
                " + 1 (the last token is sampled at the last position)");
  const int n = c.n_chains();
  CHAINLM_CHECK(a.chains == "all" || a.chains == "mix" || (std::atoi(a.chains.c_str()) >= 1 && std::atoi(a.chains.c_str()) <= n),
                "bench serve: --chains takes all, mix or a chain count in 1..", n, " (got '", a.chains, "')");
  const int top = *std::max_element(levels.begin(), levels.end());
  ServeOptions o;
  o.port = 0;
  o.threads = a.threads;
  o.fixed_threads = a.fixed_threads;
  o.max_sessions = a.max_sessions > 0 ? a.max_sessions : top;
  o.max_queue = std::max(0, top - o.max_sessions);  // every client waits for at most one request
  o.kv_cache = resolve_kv_cache_type(parse_kv_cache_type(a.kv_cache), model);
  o.command = "bench serve";
  o.memory_limit_option = false;
  o.stream_interval_ms = a.stream_interval_ms;
  InferenceServer server(model, *loaded.tokenizer, o);
  const int port = server.start();

  // Request i: its own prompt of token ids (ids 3.. skip the usual special tokens), greedy.
  auto request = [&](int i) {
    Rng rng(1000 + i);
    std::vector<int> prompt(a.prompt_tokens);
    for (int& t : prompt) t = 3 + (int)rng.below(std::min(c.vocab_size, loaded.tokenizer->vocab_size()) - 3);
    json body = {{"prompt", prompt}, {"max_tokens", a.tokens}, {"temperature", 0}, {"ignore_eos", true},
                 {"stream", true}};
    if (a.chains == "mix")
      body["chains"] = 1 + (i % n + n) % n;
    else if (a.chains != "all")
      body["chains"] = std::atoi(a.chains.c_str());
    return body;
  };
  // Warm-up, untimed: as many requests at once as the highest level sends, so that every
  // session (a KV cache for the whole context, made when first needed and then reused) exists
  // before any level is timed; otherwise the highest level alone would pay for making its
  // sessions (8% of a concurrency-8 run here), which a running server pays once.
  run_clients(port, top, top, [&](int i) { return request(-1 - i); });
  // With several rounds the levels take turns, so that a slow spell of a shared machine falls on
  // every level alike; each round's speedups are against that round's first level.
  std::vector<std::vector<double>> level_tokens_per_s(levels.size()), level_speedup(levels.size());
  for (int round = 1; round <= a.rounds; ++round) {
    double base_tokens_per_s = 0;
    for (size_t li = 0; li < levels.size(); ++li) {
      const int level = levels[li];
      const int requests = a.requests > 0 ? a.requests : std::max(4, 2 * level);
      const std::array<double, 5> before = scheduler_counters(port);
      const Clock::time_point start = Clock::now();
      const std::vector<Timing> timings = run_clients(port, level, requests, request);
      const double seconds = ms_since(start) / 1e3;
      const std::array<double, 5> after = scheduler_counters(port);
      const double steps = after[0] - before[0];
      std::vector<double> latency, first;
      long tokens = 0;
      for (const Timing& t : timings) {
        latency.push_back(t.latency_ms);
        first.push_back(t.first_token_ms);
        tokens += t.tokens;
      }
      const double tokens_per_s = tokens / seconds;
      if (base_tokens_per_s == 0) base_tokens_per_s = tokens_per_s;
      level_tokens_per_s[li].push_back(tokens_per_s);
      level_speedup[li].push_back(tokens_per_s / base_tokens_per_s);
      json line = {{"bench", "serve"},
                   {"round", round},
                   {"model", a.model},
                   {"chains", a.chains},
                   {"concurrency", level},
                   {"requests", requests},
                   {"prompt_tokens", a.prompt_tokens},
                   {"tokens_per_request", a.tokens},
                   {"completion_tokens", tokens},
                   {"threads", server.threads()},
                   {"decode_threads", (int)after[4]},  // at the level's end
                   {"max_sessions", server.max_sessions()},
                   {"precision", model.weight_format()},
                   {"kv_cache", kv_cache_type_name(o.kv_cache)},
                   {"stream_interval_ms", o.stream_interval_ms},
                   {"tokens_per_s", tokens_per_s},
                   {"speedup_vs_first_level", tokens_per_s / base_tokens_per_s},
                   {"latency_ms_p50", percentile(latency, 0.5)},
                   {"latency_ms_p99", percentile(latency, 0.99)},
                   {"first_token_ms_p50", percentile(first, 0.5)},
                   {"first_token_ms_p99", percentile(first, 0.99)},
                   // What the scheduler did meanwhile: rows per decoding step (the batch), time per
                   // step, and the share of the wall time spent decoding and reading prompts.
                   {"rows_per_step", steps > 0 ? (after[1] - before[1]) / steps : 0},
                   {"ms_per_step", steps > 0 ? 1e3 * (after[2] - before[2]) / steps : 0},
                   {"decode_share", (after[2] - before[2]) / seconds},
                   {"prefill_share", (after[3] - before[3]) / seconds}};
      std::printf("%s\n", line.dump().c_str());
      std::fflush(stdout);
    }
  }
  if (a.rounds > 1)
    for (size_t li = 0; li < levels.size(); ++li) {
      const std::vector<double>& t = level_tokens_per_s[li];
      const std::vector<double>& x = level_speedup[li];
      json line = {{"bench", "serve"},
                   {"summary", true},
                   {"model", a.model},
                   {"chains", a.chains},
                   {"concurrency", levels[li]},
                   {"rounds", a.rounds},
                   {"tokens_per_s_median", median(t)},
                   {"tokens_per_s_min", *std::min_element(t.begin(), t.end())},
                   {"tokens_per_s_max", *std::max_element(t.begin(), t.end())},
                   {"speedup_vs_first_level_median", median(x)},
                   {"speedup_vs_first_level_min", *std::min_element(x.begin(), x.end())},
                   {"speedup_vs_first_level_max", *std::max_element(x.begin(), x.end())}};
      std::printf("%s\n", line.dump().c_str());
    }
  std::fflush(stdout);
  server.stop();
}

}  // namespace chainlm::cli
