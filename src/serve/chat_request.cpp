#include "serve/chat_request.h"

#include "core/error.h"
#include "core/json_excerpt.h"

namespace chainlm {

namespace {

using nlohmann::json;

[[noreturn]] void refuse(const std::string& param, const std::string& message) { throw RequestError(param, message); }

std::string content_of(const json& c, const std::string& where) {
  if (c.is_string()) return c.get<std::string>();
  if (!c.is_array()) refuse(where, cat(where, " must be a string or a list of text parts"));
  std::string text;
  for (size_t i = 0; i < c.size(); ++i) {
    const json& part = c[i];
    if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
        !part["text"].is_string())
      refuse(where, cat(where, "[", i, "] must be {\"type\": \"text\", \"text\": string} (chainlm reads text only)"));
    text += part["text"].get<std::string>();
  }
  return text;
}

// OpenAI chat fields for what chainlm does not do (JSON mode, tools, stored completions, other
// service tiers, audio), accepted with the values that ask for nothing of it: clients and
// frameworks send them with those values. Any other value is refused, naming what is missing.
// Removed from `rest` once checked.
void take_neutral_chat_fields(json& rest) {
  auto take = [&](const char* name, auto&& neutral, const char* refusal) {
    auto it = rest.find(name);
    if (it == rest.end()) return;
    if (!it->is_null() && !neutral(*it)) refuse(name, cat(name, " ", json_excerpt(*it), ": ", refusal));
    rest.erase(it);
  };
  const bool no_tools = !rest.contains("tools") || rest["tools"].is_null() ||
                        (rest["tools"].is_array() && rest["tools"].empty());
  take(
      "response_format",
      [](const json& v) { return v.is_object() && v.size() == 1 && v.value("type", json()) == "text"; },
      "only {\"type\": \"text\"} is supported (no JSON mode)");
  take("tools", [](const json& v) { return v.is_array() && v.empty(); },
       "function calling is not supported; send no tools or []");
  take("tool_choice", [&](const json& v) { return v == "none" || (v == "auto" && no_tools); },
       "only \"none\" (or \"auto\" without tools) is supported (no function calling)");
  take("parallel_tool_calls", [](const json& v) { return v.is_boolean(); }, "must be true or false");
  take("store", [](const json& v) { return v == false; }, "chainlm stores no completions (must be false)");
  take("metadata", [](const json& v) { return v.is_object(); }, "must be an object");
  take("service_tier", [](const json& v) { return v == "auto" || v == "default"; },
       "must be \"auto\" or \"default\"");
  take("modalities", [](const json& v) { return v == json::array({"text"}); }, "only [\"text\"] is supported");
}

}  // namespace

ChatRequest parse_chat_request(const json& body, const ModelConfig& config, int token_ids) {
  if (!body.is_object()) refuse("", "the request body must be a JSON object");
  for (const char* f : {"prompt", "echo", "suffix", "best_of"})
    if (body.contains(f)) refuse(f, cat(f, " is a /v1/completions field (a chat request sends messages)"));
  ChatRequest r;
  const json* m = body.contains("messages") ? &body["messages"] : nullptr;
  if (!m) refuse("messages", "messages is required");
  if (!m->is_array() || m->empty()) refuse("messages", "messages must be a non-empty list of messages");
  for (size_t i = 0; i < m->size(); ++i) {
    const json& msg = (*m)[i];
    const std::string where = cat("messages[", i, "]");
    if (!msg.is_object()) refuse(where, cat(where, " must be an object with role and content"));
    for (const auto& [name, value] : msg.items()) {
      if (name == "role" || name == "content" || name == "name") continue;
      // An assistant message as OpenAI returned it, sent back in the next turn, carries these
      // empty: accepted so; with content, they ask for what chainlm does not do.
      const bool empty = value.is_null() || (value.is_array() && value.empty());
      const bool neutral = name == "tool_calls" || name == "function_call" || name == "refusal" ||
                           name == "audio" || name == "annotations";
      if (!neutral || !empty)
        refuse(
            cat(where, ".", name),
            cat(where, ".", name,
                neutral ? " is not supported with a value (chainlm reads text only; null or [] is)"
                        : " is not supported"));
    }
    if (!msg.contains("role") || !msg["role"].is_string()) refuse(where + ".role", where + ".role must be a string");
    std::string role = msg["role"];
    // "developer": OpenAI's newer name for the system message, which its clients send; the
    // templates place it as the system prompt.
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant")
      refuse(where + ".role",
             cat(where, ".role must be system (or developer), user or assistant (got '", role, "')"));
    if (!msg.contains("content")) refuse(where + ".content", where + ".content is required");
    r.messages.push_back({role, content_of(msg["content"], where + ".content")});
  }
  // The rest is a completion request's; stream_options are read here.
  json rest = body;
  rest.erase("messages");
  rest["prompt"] = "";
  bool has_max = rest.contains("max_tokens") && !rest["max_tokens"].is_null();
  const bool max_completion = rest.contains("max_completion_tokens");
  if (max_completion) {
    if (has_max) refuse("max_completion_tokens", "pass max_tokens or max_completion_tokens, not both");
    rest["max_tokens"] = rest["max_completion_tokens"];
    rest.erase("max_completion_tokens");
    has_max = !rest["max_tokens"].is_null();
  }
  // Chat's logprobs: true/false, and top_logprobs alternatives: the completion field's number.
  const bool top_given = rest.contains("top_logprobs") && !rest["top_logprobs"].is_null();
  const json top = top_given ? rest["top_logprobs"] : json(0);
  rest.erase("top_logprobs");
  const auto top_n = whole_number(top);
  if (!top_n || *top_n < 0 || *top_n > kMaxTopLogprobs)
    refuse("top_logprobs", cat("top_logprobs must be in 0..", kMaxTopLogprobs, " (alternatives per token; got ",
                               top.dump(), ")"));
  if (rest.contains("logprobs") && !rest["logprobs"].is_null()) {
    if (!rest["logprobs"].is_boolean()) refuse("logprobs", "logprobs must be true or false");
    if (rest["logprobs"].get<bool>())
      rest["logprobs"] = *top_n;
    else
      rest.erase("logprobs");
  } else {
    rest.erase("logprobs");
  }
  if (top_given && !rest.contains("logprobs")) refuse("top_logprobs", "top_logprobs needs logprobs: true");
  take_neutral_chat_fields(rest);
  try {
    r.completion = parse_completion_request(rest, config, token_ids);
  } catch (const RequestError& e) {
    if (!max_completion || e.param() != "max_tokens") throw;
    // Named as the client sent it (the message starts with the field's name).
    const std::string message = e.what();
    throw RequestError("max_completion_tokens",
                       "max_completion_tokens" + message.substr(std::string("max_tokens").size()));
  }
  if (!has_max) r.completion.gen.max_tokens = config.max_seq_len;  // until the context is full
  return r;
}

}  // namespace chainlm
