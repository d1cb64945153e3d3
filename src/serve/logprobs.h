#pragma once
// Log-probabilities of generated tokens for the completions APIs' `logprobs`: each token's
// log-probability under the model (log-softmax of its raw logits: before temperature,
// penalties and biases, the distribution the model itself gives) and the most likely
// alternatives, in OpenAI's legacy completions and chat formats.
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "io/text_encoding.h"

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

// {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; offsets count characters (code
// points, as Python's str indexes OpenAI's text: harnesses compare them with len(context)) into
// the choice's text, after the text `before` has counted (the bytes before these tokens). A
// token ending inside a character counts that character, so the next token's offset is the one
// after it; an invalid byte is the U+FFFD it becomes in the text.
nlohmann::json completion_logprobs_json(const std::vector<TokenLogprob>& tokens,
                                        Utf8CharCount before = {});
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}
nlohmann::json chat_logprobs_json(const std::vector<TokenLogprob>& tokens);

}  // namespace chainlm
