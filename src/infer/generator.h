#pragma once
// Text generation over a KV cache with elastic chains (SPEC A4, A8).
#include <functional>
#include <string>
#include <vector>

#include "infer/chain_schedule.h"
#include "infer/kv_cache.h"
#include "infer/sampler.h"
#include "io/tokenizer.h"
#include "model/model.h"

namespace chainlm {

struct GenerateOptions {
  int max_tokens = 100;
  int chains = 0;          // active chains; 0 = all (ignored when schedule is set)
  ChainSchedule schedule;  // per-token chains, e.g. ChainSchedule::parse("1:16,4", n)
  SamplingOptions sampling;
  bool stop_at_eos = true;
  bool chain1_prefill = true;  // CoLM-Air: prefill the prompt with chain 1 only
  KvCacheType kv_cache = KvCacheType::Auto;  // what the KV cache holds (infer/kv_cache.h)
  // Decode on fewer of the threads while trials measure that faster (infer/decode_threads.h: a
  // busy core); false keeps every thread. The tokens are the same either way.
  bool adaptive_threads = true;
};

// Why generation ended.
enum class StopReason {
  eos,          // the model produced EOS (or BOS)
  max_tokens,   // GenerateOptions::max_tokens tokens were generated
  max_seq_len,  // the sequence filled the model's context
  callback,     // generate_tokens' on_token returned false
};
// "eos", "max_tokens", "max_seq_len" or "callback": what `generate --json` reports.
const char* stop_reason_name(StopReason r);

struct GenerateResult {
  std::vector<int> prompt_tokens;  // BOS included
  std::vector<int> tokens;         // generated
  std::vector<int> chains;         // active chains that produced each generated token
  std::string text;                // prompt followed by the continuation
  double prefill_ms = 0, decode_ms_per_token = 0, tokens_per_s = 0;
  int threads = 0, decode_threads = 0;  // the threads it had, and those decoding ran on at the end
  int prefill_threads = 0;              // those the prompt ran on (one for a small one)
  StopReason stop_reason = StopReason::max_tokens;
};

// One generated token, as generate_tokens reports it.
struct TokenEvent {
  int index;                // 0-based position among the generated tokens
  int id;                   // token id
  int chains;               // active chains that produced it
  const std::string& text;  // its text (Tokenizer::decode_token)
  int prev_id;              // the token before it (the prompt's last for the first)
  const float* logits;      // the model's logits it was sampled from (vocab_size floats, valid
                            // during the callback; before penalties, biases and temperature)
};

// The checks generate_tokens makes of a generation before it starts (chainlm::Error naming what
// is wrong: chains, max tokens, sampling, the tokenizer's size, the prompt's ids and length);
// returns the chain schedule the options ask for.
ChainSchedule check_generation(const Model& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                               const GenerateOptions& opt);

// Encodes prompt with BOS, prefills, then samples up to max_tokens (stopping at EOS/BOS or at
// the model's max_seq_len). on_text, if set, receives each token's text as it is produced.
GenerateResult generate(const Model& model, const Tokenizer& tok, const std::string& prompt,
                        const GenerateOptions& opt,
                        const std::function<void(const std::string&)>& on_text = nullptr);

// generate, reporting every token to on_token as it is produced; on_token returning false stops
// generation after that token (a server stops this way when its client goes away or a stop
// sequence appears). The same options give the same tokens as generate.
GenerateResult generate_tokens(const Model& model, const Tokenizer& tok, const std::string& prompt,
                               const GenerateOptions& opt,
                               const std::function<bool(const TokenEvent&)>& on_token);
// The same from token ids (BOS first; a chat conversation whose BOS/EOS are ids, not text);
// prompt is what GenerateResult::text starts with. The options are checked as above.
GenerateResult generate_tokens(const Model& model, const Tokenizer& tok, const std::vector<int>& prompt_tokens,
                               const std::string& prompt, const GenerateOptions& opt,
                               const std::function<bool(const TokenEvent&)>& on_token);

}  // namespace chainlm
