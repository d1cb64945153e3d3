#pragma once
// Log-probabilities of generated tokens for the completions APIs' `logprobs`: each token's
// log-probability under the model (log-softmax of its raw logits: before temperature,
// penalties and biases, the distribution the model itself gives) and the most likely
// alternatives, in OpenAI's legacy completions and chat formats.
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace chainlm {

struct TokenLogprob {
  std::string text;     // the token's text
  double logprob = 0;
  std::vector<std::pair<std::string, double>> top;  // the n most likely tokens (text, logprob), best first
};

// The log-softmax over the model's vocab_size logits (as eval ppl and Hugging Face compute it,
// padding rows included), with the n_top alternatives among the first `texts` ids (the
// tokenizer's: padding ids have no text and are never sampled). text_of(id) gives a token's
// text. Ties among alternatives go to the lower id.
TokenLogprob token_logprob(const float* logits, int vocab_size, int texts, int id, int n_top,
                           const std::function<std::string(int)>& text_of);

// {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets are byte offsets into the
// generated text, starting at `offset` (the text before these tokens).
nlohmann::json completion_logprobs_json(const std::vector<TokenLogprob>& tokens, size_t offset);
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}
nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens);

}  // namespace chainlm
