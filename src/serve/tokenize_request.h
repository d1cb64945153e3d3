#pragma once
// The bodies of POST /tokenize and POST /detokenize (llama.cpp's server routes of the same
// names): text to token ids and back with the model's own tokenizer.
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace chainlm {

struct TokenizeRequest {
  std::string content;
  bool add_special = false;  // prepend BOS, as a prompt gets it
};

// {"content": "...", "add_special": false}; unknown fields are refused (RequestError).
TokenizeRequest parse_tokenize_request(const nlohmann::json& body);

// {"tokens": [ids]}: every id an integer in [0, vocab_size) (RequestError naming the first
// that is not).
std::vector<int> parse_detokenize_request(const nlohmann::json& body, int vocab_size);

}  // namespace chainlm
