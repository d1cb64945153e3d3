#include "serve/tokenize_request.h"

#include "core/error.h"
#include "core/json_excerpt.h"
#include "serve/completion_request.h"

namespace chainlm {

namespace {

[[noreturn]] void refuse(const std::string& param, const std::string& message) { throw RequestError(param, message); }

void only_fields(const nlohmann::json& body, std::initializer_list<const char*> known) {
  if (!body.is_object()) refuse("", "the request body must be a JSON object");
  for (const auto& [name, value] : body.items()) {
    bool ok = false;
    for (const char* k : known) ok = ok || name == k;
    if (!ok) refuse(name, cat("unknown field '", name, "'"));
  }
}

}  // namespace

TokenizeRequest parse_tokenize_request(const nlohmann::json& body) {
  only_fields(body, {"content", "add_special"});
  TokenizeRequest r;
  if (!body.contains("content")) refuse("content", "content is required");
  if (!body["content"].is_string()) refuse("content", "content must be a string");
  r.content = body["content"].get<std::string>();
  if (body.contains("add_special") && !body["add_special"].is_null()) {
    if (!body["add_special"].is_boolean()) refuse("add_special", "add_special must be true or false");
    r.add_special = body["add_special"].get<bool>();
  }
  return r;
}

std::vector<int> parse_detokenize_request(const nlohmann::json& body, int vocab_size) {
  only_fields(body, {"tokens"});
  if (!body.contains("tokens")) refuse("tokens", "tokens is required");
  const nlohmann::json& t = body["tokens"];
  if (!t.is_array()) refuse("tokens", "tokens must be a list of token ids");
  std::vector<int> ids;
  ids.reserve(t.size());
  for (size_t i = 0; i < t.size(); ++i) {
    const auto id = whole_number(t[i]);
    if (!id || *id < 0 || *id >= vocab_size)
      refuse("tokens", cat("tokens[", i, "] must be a token id in 0..", vocab_size - 1, " (got ",
                           json_excerpt(t[i]), ")"));
    ids.push_back((int)*id);
  }
  return ids;
}

}  // namespace chainlm
