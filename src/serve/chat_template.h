#pragma once
// Chat templates: a conversation as the text a chat model was trained on, for the server's
// /v1/chat/completions (docs/serving.md, "Chat"). The families llama.cpp's server knows by
// name, rendered natively (as llama.cpp does) and checked against Hugging Face's own Jinja
// rendering of each family's template (tests/vectors/chat_templates), plus "plain" for base
// models that were never tuned on a chat format.
#include <optional>
#include <string>
#include <vector>

namespace chainlm {

enum class ChatTemplate { kPlain, kChatML, kLlama2, kLlama3, kZephyr };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "plain", "chatml", "llama2", "llama3", "zephyr" and back (throws naming the accepted names).
ChatTemplate parse_chat_template(const std::string& name);
const char* chat_template_name(ChatTemplate t);

// The family of a Jinja chat_template (a HF tokenizer_config.json's), by the markers each
// writes; nullopt when none matches.
std::optional<ChatTemplate> detect_chat_template(const std::string& jinja);

// A rendered conversation: text, with the template's BOS and EOS kept apart so they can become
// the tokenizer's BOS and EOS ids (a SentencePiece model reads "<s>" in text as three pieces).
struct ChatSegment {
  enum Kind { kText, kBos, kEos } kind;
  std::string text;  // kText only
};

// Throws chainlm::Error naming the message when the template cannot take the conversation
// (an unknown role; Llama-2: roles not alternating user/assistant after an optional system).
std::vector<ChatSegment> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt);

// The segments as one string with BOS and EOS written as these strings (Hugging Face's text).
std::string chat_text(const std::vector<ChatSegment>& segments, const std::string& bos, const std::string& eos);

// Where a reply ends besides the EOS token: the template's end-of-turn marker as text
// ("<|im_end|>", "<|eot_id|>"), or for "plain" the start of the next user turn.
std::vector<std::string> chat_stop_strings(ChatTemplate t);

}  // namespace chainlm
