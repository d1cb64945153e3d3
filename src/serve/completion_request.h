#pragma once
// The body of POST /v1/completions: the OpenAI completions fields chainlm supports, plus its
// own `chains` and `chain_schedule`, parsed and validated into generate() options.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "infer/generator.h"
#include "model/config.h"

namespace chainlm {

// A request the server refuses with 400; param names the offending field (empty when the
// body as a whole is wrong), and the message starts with it.
class RequestError : public std::runtime_error {
 public:
  RequestError(std::string param, const std::string& message)
      : std::runtime_error(message), param_(std::move(param)) {}
  const std::string& param() const { return param_; }

 private:
  std::string param_;
};

// A JSON number that is a whole number: an integer, or one written as 5.0 (some clients' JSON
// writers send those; llama.cpp's server reads them as integers) within 2^53, where every whole
// double is exact. nullopt for anything else (2.5, "5", 1e300), for every integer field and
// token id alike.
std::optional<long long> whole_number(const nlohmann::json& v);

// One prompt of a request: text, or token ids (BOS not included; the server fills text with
// their decoding, for echo).
struct PromptInput {
  std::string text;
  std::vector<int> tokens;
  bool is_tokens() const { return !tokens.empty(); }
};

struct CompletionRequest {
  std::vector<PromptInput> prompts;  // one, or a list: every prompt gets its own choices
  int n = 1;                         // choices per prompt (sampled with seeds seed, seed+1, ...)
  bool echo = false;                 // each choice's text starts with its prompt
  GenerateOptions gen;            // max_tokens, chains or schedule, sampling
  std::string chain_schedule;     // as given ("" when absent)
  std::vector<std::string> stop;  // stop sequences (at most 4, none empty)
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with the usage
  bool seed_given = false;  // without a seed, the server draws one and reports it
  int logprobs = -1;        // -1: none; else the log-probability of each token and this many alternatives
};

// At most this many alternatives per token in logprobs (OpenAI's chat API allows 20).
constexpr int kMaxTopLogprobs = 20;
// At most this many choices (prompts x n) per request: each is a generation of its own.
constexpr int kMaxChoices = 16;

// Defaults follow OpenAI's completions API: max_tokens 16, temperature 1, top_p 1; top_k 0
// (off); chains: all; n 1. Unknown fields are refused (a typo such as "max_token" would
// otherwise silently run with a default), except OpenAI fields whose value asks for what
// chainlm does anyway (model, user, best_of = n). Token ids (prompts, logit_bias) must name
// one of the first `token_ids` rows, the tokenizer's (0: all of the model's rows): a vocabulary
// padded past the tokenizer's has rows no token has.
CompletionRequest parse_completion_request(const nlohmann::json& body, const ModelConfig& config,
                                           int token_ids = 0);

// The raw body as the server receives it: JSON that does not parse (including numbers too
// large for a double, which nlohmann reports as out_of_range rather than parse_error) is a
// RequestError like any other bad request, then parse_completion_request.
CompletionRequest parse_completion_body(const std::string& body, const ModelConfig& config,
                                        int token_ids = 0);

// That parsing step alone, for every JSON route: the body as JSON, or a RequestError naming
// where it stops being JSON.
nlohmann::json parse_json_body(const std::string& body);

}  // namespace chainlm
