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

class Tokenizer;

enum class ChatTemplate { kPlain, kChatML, kLlama2, kLlama3, kLlama31, kZephyr };

struct ChatMessage {
  std::string role;  // "system", "user" or "assistant"
  std::string content;
};

// "plain", "chatml", "llama2", "llama3", "llama3.1", "zephyr" and back (throws naming the
// accepted names). llama3.1 is the Llama-3.1/3.2/3.3 format: llama3 with a system turn that is
// always there and opens with "Cutting Knowledge Date: December 2023\nToday Date: DATE\n\n".
ChatTemplate parse_chat_template(const std::string& name);
const char* chat_template_name(ChatTemplate t);

// The family of a Jinja chat_template (a HF tokenizer_config.json's), by the markers each
// writes; nullopt when none matches.
std::optional<ChatTemplate> detect_chat_template(const std::string& jinja);

// What a model's own template adds to its family's format.
struct ChatStyle {
  // chatml: the system turn the template writes when the conversation has none (SmolLM2's "You
  // are a helpful AI assistant named SmolLM, ...").
  std::string default_system;
  // llama3.1: the "Today Date" of the system turn. Llama-3.1 and 3.3 templates fix it; Llama-3.2's
  // take today's date (strftime_now), which `today` asks for and chat_date_today() gives.
  std::string date = "26 Jul 2024";
  bool today = false;
};

// The style of a Jinja template of family t (what detect_chat_template found).
ChatStyle detect_chat_style(const std::string& jinja, ChatTemplate t);

// Today's date as transformers' strftime_now("%d %b %Y") gives it ("05 Dec 2026").
std::string chat_date_today();

// A rendered conversation: text, with the template's BOS and EOS kept apart so they can become
// the tokenizer's BOS and EOS ids (a SentencePiece model reads "<s>" in text as three pieces).
struct ChatSegment {
  enum Kind { kText, kBos, kEos } kind;
  std::string text;  // kText only
};

// Throws chainlm::Error naming the message when the template cannot take the conversation
// (an unknown role; Llama-2: roles not alternating user/assistant after an optional system).
std::vector<ChatSegment> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt, const ChatStyle& style = {});

// The prompt's token ids: BOS first (generation's own), then each segment's, as Hugging Face's
// apply_chat_template(tokenize=True) gives them for the whole rendered text: text after the
// first segment continues the input (Tokenizer::encode_continuation), and a template whose
// text opens with the BOS token itself (SmolLM2's BOS is <|im_start|>) has it once.
std::vector<int> chat_prompt_ids(const Tokenizer& tok, const std::vector<ChatSegment>& segments);

// The segments as one string with BOS and EOS written as these strings (Hugging Face's text).
std::string chat_text(const std::vector<ChatSegment>& segments, const std::string& bos, const std::string& eos);

// Where a reply ends besides the EOS token: the template's end-of-turn marker as text
// ("<|im_end|>", "<|eot_id|>"), or for "plain" the start of the next user turn.
std::vector<std::string> chat_stop_strings(ChatTemplate t);

// The markers of template t that its models' tokenizers hold as single special tokens
// (ChatML's <|im_start|> and <|im_end|>, Llama-3's header and end-of-turn tokens).
std::vector<std::string> chat_special_tokens(ChatTemplate t);
// Empty when tok reads each of them as one token; else a warning naming those it splits (a
// --chat-template chatml on a base model's tokenizer ran without a word).
std::string chat_tokenizer_mismatch(ChatTemplate t, const Tokenizer& tok);

}  // namespace chainlm
