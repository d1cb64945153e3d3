#pragma once
// An added token as tokenizers writes it into tokenizer.json: every flag present (tokenizers
// refuses a token without one), here a special, not normalized one as chat models add.
#include <nlohmann/json.hpp>
#include <string>

namespace chainlm::testing {

inline nlohmann::json special_added_token(int id, const std::string& content) {
  return {{"id", id},        {"content", content},  {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", false}, {"special", true}};
}

}  // namespace chainlm::testing
