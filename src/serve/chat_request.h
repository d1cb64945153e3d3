#pragma once
// The body of POST /v1/chat/completions: OpenAI's chat fields chainlm supports. The sampling,
// length, stop, stream and chain fields are those of /v1/completions (completion_request.h),
// validated by the same code; `messages` replaces `prompt`.
#include <nlohmann/json.hpp>
#include <vector>

#include "model/config.h"
#include "serve/chat_template.h"
#include "serve/completion_request.h"

namespace chainlm {

struct ChatRequest {
  CompletionRequest completion;  // its prompt is unused
  std::vector<ChatMessage> messages;
};

// messages: a non-empty list of {"role": system|user|assistant, "content": string, or a list
// of {"type": "text", "text": string} parts}. max_tokens (or max_completion_tokens) defaults to
// the rest of the context, as OpenAI's chat API does. Refusals are RequestErrors naming the
// field (messages[2].content, ...).
ChatRequest parse_chat_request(const nlohmann::json& body, const ModelConfig& config,
                               int token_ids = 0);

}  // namespace chainlm
