#include "infer/generator.h"

#include <algorithm>

#include "core/error.h"
#include "core/number_format.h"
#include "core/threads.h"
#include "core/timer.h"
#include "infer/decode_threads.h"
#include "infer/session.h"

namespace chainlm {

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::eos: return "eos";
    case StopReason::max_tokens: return "max_tokens";
    case StopReason::max_seq_len: return "max_seq_len";
    case StopReason::callback: return "callback";
  }
  return "unknown";
}

GenerateResult generate(const Model& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text) {
  if (!on_text) return generate_tokens(model, tok, prompt, opt, nullptr);
  return generate_tokens(model, tok, prompt, opt, [&](const TokenEvent& e) {
    on_text(e.text);
    return true;
  });
}

namespace {
// Prefill FLOPs below which one thread reads the prompt: ~0.5-1 ms on one core of the machines
// seen (50-100 GFLOP/s at these sizes).
constexpr double kOneThreadPrefillFlops = 5e7;
}  // namespace

GenerateResult generate_tokens(const Model& model, const Tokenizer& tok, const std::string& prompt,
                               const GenerateOptions& opt,
                               const std::function<bool(const TokenEvent&)>& on_token) {
  std::vector<int> ids = {tok.bos_id()};
  for (int t : tok.encode(prompt)) ids.push_back(t);
  return generate_tokens(model, tok, ids, prompt, opt, on_token);
}

ChainSchedule check_generation(const Model& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                               const GenerateOptions& opt) {
  const ModelConfig& c = model.config();
  const int n = c.n_chains();
  CHAINLM_CHECK(opt.chains >= 0 && opt.chains <= n, "--chains ", opt.chains, " is outside 1..", n,
                " (the model has ", count_of(n, "chain"), ")");
  CHAINLM_CHECK(opt.max_tokens >= 0, "max tokens must be >= 0");
  validate_sampling(opt.sampling);
  CHAINLM_CHECK(tok.vocab_size() <= c.vocab_size, "the tokenizer has ", tok.vocab_size(),
                " tokens but the model's vocab_size is ", c.vocab_size);
  CHAINLM_CHECK(!prompt_tokens.empty() && prompt_tokens[0] == tok.bos_id(), "the prompt tokens must start with BOS");
  for (int t : prompt_tokens)
    CHAINLM_CHECK(t >= 0 && t < c.vocab_size, "prompt token ", t, " is outside the vocabulary 0..", c.vocab_size - 1);
  CHAINLM_CHECK((int)prompt_tokens.size() <= c.max_seq_len, "the prompt is ", prompt_tokens.size(),
                " tokens (BOS included), longer than the model's max_seq_len ", c.max_seq_len);
  return opt.schedule.empty() ? ChainSchedule(opt.chains ? opt.chains : n) : opt.schedule;
}

GenerateResult generate_tokens(const Model& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                               const std::string& prompt, const GenerateOptions& opt,
                               const std::function<bool(const TokenEvent&)>& on_token) {
  const ModelConfig& c = model.config();
  const ChainSchedule schedule = check_generation(model, tok, prompt_tokens, opt);
  GenerateResult res;
  res.prompt_tokens = prompt_tokens;
  res.text = prompt;
  res.threads = res.decode_threads = num_threads();  // said even when nothing is decoded
  if (opt.max_tokens == 0) return res;

  // The positions this generation can reach: the prompt and its tokens (the last never fed back),
  // not the whole context (a model of a 128K context allocated its cache for a few tokens).
  const long reach = (long)prompt_tokens.size() + opt.max_tokens;
  InferenceSession session(model, 512, opt.kv_cache, (int)std::min<long>(reach, c.max_seq_len));
  Sampler sampler(opt.sampling);
  Timer total;
  // The caller's thread count comes back however this ends (the prefill and the decoding steps
  // may run on fewer).
  struct RestoreThreads {
    int n;
    ~RestoreThreads() { set_num_threads_of_this_thread(n); }
  } restore{res.threads};
  // A prompt a core reads in well under a millisecond runs on one thread: its parallel regions
  // cost more than they share even on a quiet machine, and beside a busy process each waits for
  // the other core's time slice (a 64-dim model's 7-token prompt: 45-107 ms on two threads, 0.9
  // on one). A pass gives the same bits on any count (infer/session.cpp), so the tokens are those
  // of any count.
  const long rows = (long)prompt_tokens.size() * c.phd.repeat;
  const double flops = 2.0 * (double)model.matmul_params(schedule.chains_for(0)) * (double)rows;
  if (opt.adaptive_threads && flops < kOneThreadPrefillFlops) set_num_threads_of_this_thread(1);
  res.prefill_threads = num_threads();
  const float* logits =
      session.prefill(res.prompt_tokens, schedule.chains_for(0), opt.chain1_prefill);
  set_num_threads_of_this_thread(res.threads);
  res.prefill_ms = total.seconds() * 1e3;
  Timer decode_timer;
  int decoded = 0;
  // Decoding steps on the threads the tuner picks, timed from one step's start to the next's:
  // sampling and the caller's callback count alike for every count.
  DecodeThreadTuner tuner(res.threads, opt.adaptive_threads);
  double last_start = -1;
  while (true) {
    const int i = (int)res.tokens.size();
    // Ids past the tokenizer's (a vocab_size padded beyond it) have no text: never sampled.
    const int next = sampler.sample(logits, tok.vocab_size());
    if (opt.stop_at_eos && (tok.is_eos(next) || next == tok.bos_id())) {
      res.stop_reason = StopReason::eos;
      break;
    }
    const int prev = session.tokens().back();
    const std::string piece = tok.decode_token(prev, next);
    res.text += piece;
    res.tokens.push_back(next);
    res.chains.push_back(schedule.chains_for(i));
    if (on_token && !on_token(TokenEvent{i, next, res.chains.back(), piece, prev, logits})) {
      res.stop_reason = StopReason::callback;
      break;
    }
    if ((int)res.tokens.size() >= opt.max_tokens) break;
    if (session.length() >= c.max_seq_len) {
      res.stop_reason = StopReason::max_seq_len;
      break;
    }
    const double start = decode_timer.seconds();
    if (last_start >= 0)  // (the turn of the last step, whose sub-model was chains_for(i))
      tuner.record(DecodeThreadTuner::decode_shape(1, schedule.chains_for(i)), start - last_start);
    last_start = start;
    set_num_threads_of_this_thread(tuner.threads());
    logits = session.decode(next, schedule.chains_for(i + 1));
    ++decoded;
  }
  res.decode_threads = tuner.chosen();
  const double secs = total.seconds();
  if (decoded > 0) res.decode_ms_per_token = decode_timer.seconds() * 1e3 / decoded;
  res.tokens_per_s = secs > 0 ? res.tokens.size() / secs : 0;
  return res;
}

}  // namespace chainlm
