#include "serve/chat_template.h"

#include <ctime>

#include "core/error.h"
#include "io/tokenizer.h"

namespace chainlm {

namespace {

// Python's str.strip() / Jinja's trim on the ASCII whitespace chat text carries.
std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  const size_t b = s.find_first_not_of(ws);
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(ws) - b + 1);
}

struct Builder {
  std::vector<ChatSegment> out;
  void text(const std::string& t) {
    if (t.empty()) return;
    if (!out.empty() && out.back().kind == ChatSegment::kText)
      out.back().text += t;
    else
      out.push_back({ChatSegment::kText, t});
  }
  void bos() { out.push_back({ChatSegment::kBos, ""}); }
  void eos() { out.push_back({ChatSegment::kEos, ""}); }
};

void check_roles(const std::vector<ChatMessage>& messages) {
  CHAINLM_CHECK(!messages.empty(), "messages must hold at least one message");
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string& r = messages[i].role;
    CHAINLM_CHECK(r == "system" || r == "user" || r == "assistant", "messages[", i,
                  "].role must be system, user or assistant (got '", r, "')");
  }
}

}  // namespace

ChatTemplate parse_chat_template(const std::string& name) {
  for (ChatTemplate t : {ChatTemplate::kPlain, ChatTemplate::kChatML, ChatTemplate::kLlama2,
                         ChatTemplate::kLlama3, ChatTemplate::kLlama31, ChatTemplate::kZephyr})
    if (name == chat_template_name(t)) return t;
  fail("chat template '", name, "' is not one of plain, chatml, llama2, llama3, llama3.1, zephyr");
}

const char* chat_template_name(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatML: return "chatml";
    case ChatTemplate::kLlama2: return "llama2";
    case ChatTemplate::kLlama3: return "llama3";
    case ChatTemplate::kLlama31:
      return "llama3.1";
    case ChatTemplate::kZephyr: return "zephyr";
    case ChatTemplate::kPlain: break;
  }
  return "plain";
}

std::optional<ChatTemplate> detect_chat_template(const std::string& jinja) {
  if (jinja.find("<|im_start|>") != std::string::npos) return ChatTemplate::kChatML;
  if (jinja.find("<|start_header_id|>") != std::string::npos)
    return jinja.find("Cutting Knowledge Date") != std::string::npos ? ChatTemplate::kLlama31
                                                                     : ChatTemplate::kLlama3;
  // Other families share these markers and write other text: Phi-3 ends its <|user|> turns with
  // <|end|> (zephyr with EOS), Mistral opens with one BOS and has no system turn (Llama-2 has a
  // BOS a turn and its <<SYS>> block). Taken for these, they rendered wrong prompts silently.
  const auto has = [&](const char* marker) { return jinja.find(marker) != std::string::npos; };
  if (has("<|user|>") && !has("<|end|>")) return ChatTemplate::kZephyr;
  if (has("[INST]") && has("<<SYS>>")) return ChatTemplate::kLlama2;
  return std::nullopt;
}

ChatStyle detect_chat_style(const std::string& jinja, ChatTemplate t) {
  ChatStyle style;
  if (t == ChatTemplate::kLlama31) style.today = jinja.find("strftime_now") != std::string::npos;
  if (t != ChatTemplate::kChatML) return style;
  // A system turn written as one literal, '<|im_start|>system\nTEXT<|im_end|>\n', is the default
  // one (a template writing the conversation's own builds it from message['content']).
  const std::string open = "<|im_start|>system";
  for (size_t at = jinja.find(open); at != std::string::npos; at = jinja.find(open, at + 1)) {
    size_t text = at + open.size();
    if (jinja.compare(text, 1, "\n") == 0)
      text += 1;
    else if (jinja.compare(text, 2, "\\n") == 0)  // the Jinja string's own escape
      text += 2;
    else
      continue;
    const size_t end = jinja.find("<|im_end|>", text);
    if (end == std::string::npos) break;
    std::string s = jinja.substr(text, end - text);
    if (s.empty() || s.find_first_of("'\"{}+") != std::string::npos) continue;
    for (size_t i = 0; i < s.size(); ++i) {  // the Jinja string's \n escapes, as newlines
      const bool escape = s[i] == '\\' && i + 1 < s.size() && s[i + 1] == 'n';
      style.default_system += escape ? '\n' : s[i];
      i += escape ? 1 : 0;
    }
    break;
  }
  return style;
}

std::vector<int> chat_prompt_ids(const Tokenizer& tok, const std::vector<ChatSegment>& segments) {
  // BOS and EOS are the tokenizer's ids; generation puts the first BOS itself.
  std::vector<int> ids = {tok.bos_id()};
  for (size_t i = 0; i < segments.size(); ++i) {
    const ChatSegment& g = segments[i];
    if (g.kind == ChatSegment::kText) {
      for (int t : i == 0 ? tok.encode(g.text) : tok.encode_continuation(g.text)) ids.push_back(t);
    } else if (g.kind == ChatSegment::kEos) {
      ids.push_back(tok.eos_id());
    } else if (i > 0) {
      ids.push_back(tok.bos_id());
    }
  }
  if (ids.size() > 1 && ids[1] == tok.bos_id() && !segments.empty() &&
      segments[0].kind == ChatSegment::kText)
    ids.erase(ids.begin());
  return ids;
}

std::string chat_date_today() {
  const std::time_t now = std::time(nullptr);
  std::tm local{};
  localtime_r(&now, &local);
  char buf[32];
  std::strftime(buf, sizeof buf, "%d %b %Y", &local);
  return buf;
}

std::vector<ChatSegment> render_chat(ChatTemplate t, const std::vector<ChatMessage>& messages,
                                     bool add_generation_prompt, const ChatStyle& style) {
  check_roles(messages);
  Builder b;
  switch (t) {
    case ChatTemplate::kChatML:
      if (!style.default_system.empty() && messages[0].role != "system")
        b.text(cat("<|im_start|>system\n", style.default_system, "<|im_end|>\n"));
      for (const ChatMessage& m : messages) b.text(cat("<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n"));
      if (add_generation_prompt) b.text("<|im_start|>assistant\n");
      break;
    case ChatTemplate::kLlama2: {
      // An optional system message goes inside the first user turn; the rest must alternate
      // user, assistant, user, ... (the template raises otherwise).
      size_t first = 0;
      std::string system;
      const bool has_system = messages[0].role == "system";
      if (has_system) {
        system = messages[0].content;
        first = 1;
      }
      for (size_t i = first; i < messages.size(); ++i) {
        const ChatMessage& m = messages[i];
        const bool user_turn = (i - first) % 2 == 0;
        CHAINLM_CHECK((m.role == "user") == user_turn && m.role != "system", "messages[", i, "] is '", m.role,
                      "': the llama2 template needs roles alternating user/assistant/user/... after an "
                      "optional system message");
        std::string content = m.content;
        if (i == first && has_system) content = cat("<<SYS>>\n", system, "\n<</SYS>>\n\n", content);
        if (m.role == "user") {
          b.bos();
          b.text(cat("[INST] ", strip(content), " [/INST]"));
        } else {
          b.text(cat(" ", strip(content), " "));
          b.eos();
        }
      }
      break;
    }
    case ChatTemplate::kLlama3:
    case ChatTemplate::kLlama31: {
      b.bos();
      size_t first = 0;
      if (t == ChatTemplate::kLlama31) {
        // The system turn is always there: the knowledge and today's dates, then the
        // conversation's system message (trimmed) if it has one.
        const bool has_system = messages[0].role == "system";
        b.text(
            cat("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December "
                "2023\nToday Date: ",
                style.today ? chat_date_today() : style.date, "\n\n",
                has_system ? strip(messages[0].content) : "", "<|eot_id|>"));
        first = has_system ? 1 : 0;
      }
      for (size_t i = first; i < messages.size(); ++i)
        b.text(cat("<|start_header_id|>", messages[i].role, "<|end_header_id|>\n\n",
                   strip(messages[i].content), "<|eot_id|>"));
      if (add_generation_prompt) b.text("<|start_header_id|>assistant<|end_header_id|>\n\n");
      break;
    }
    case ChatTemplate::kZephyr:
      for (const ChatMessage& m : messages) {
        b.text(cat("<|", m.role, "|>\n", m.content));
        b.eos();
        b.text("\n");
      }
      if (add_generation_prompt) b.text("<|assistant|>\n");
      break;
    case ChatTemplate::kPlain:
      for (const ChatMessage& m : messages) {
        if (m.role == "system")
          b.text(cat(m.content, "\n\n"));
        else
          b.text(cat(m.role == "user" ? "User: " : "Assistant: ", m.content, "\n"));
      }
      if (add_generation_prompt) b.text("Assistant:");
      break;
  }
  return b.out;
}

std::string chat_text(const std::vector<ChatSegment>& segments, const std::string& bos, const std::string& eos) {
  std::string s;
  for (const ChatSegment& g : segments)
    s += g.kind == ChatSegment::kText ? g.text : g.kind == ChatSegment::kBos ? bos : eos;
  return s;
}

std::vector<std::string> chat_stop_strings(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatML: return {"<|im_end|>"};
    case ChatTemplate::kLlama3:
    case ChatTemplate::kLlama31:
      return {"<|eot_id|>"};
    case ChatTemplate::kLlama2:
    case ChatTemplate::kZephyr: return {};  // their turns end with EOS
    case ChatTemplate::kPlain: break;
  }
  return {"\nUser:"};
}

std::vector<std::string> chat_special_tokens(ChatTemplate t) {
  switch (t) {
    case ChatTemplate::kChatML:
      return {"<|im_start|>", "<|im_end|>"};
    case ChatTemplate::kLlama3:
    case ChatTemplate::kLlama31:
      return {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"};
    default:
      return {};  // Llama-2's [INST] and Zephyr's <|user|> are text to their tokenizers
  }
}

std::string chat_tokenizer_mismatch(ChatTemplate t, const Tokenizer& tok) {
  std::string missing;
  for (const std::string& marker : chat_special_tokens(t))
    if (tok.encode_continuation(marker).size() != 1)
      missing += (missing.empty() ? "" : ", ") + marker;
  if (missing.empty()) return "";
  return cat(
      "the tokenizer has no token for ", missing, " (chat template ", chat_template_name(t),
      "): each reads as several ordinary pieces, which a model tuned on that format never saw; "
      "is --chat-template the model's?");
}

}  // namespace chainlm
