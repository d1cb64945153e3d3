// Chat templates against Hugging Face's own rendering: tests/vectors/chat_templates/vectors.json
// holds each family's Jinja template and conversations rendered by @huggingface/jinja
// (make_vectors.mjs regenerates it); the native renderer must give the same text.
#include "serve/chat_template.h"

#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/hf_tokenizer.h"

namespace chainlm {
namespace {

using nlohmann::json;

json vectors() {
  std::ifstream in(std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/chat_templates/vectors.json");
  std::stringstream s;
  s << in.rdbuf();
  return json::parse(s.str());
}

TEST(ChatTemplate, RendersAsHuggingFacesJinja) {
  const json v = vectors();
  ASSERT_EQ(v["cases"].size(), 80u);
  int refused = 0;
  for (const json& c : v["cases"]) {
    const std::string family = c["family"];
    const json& f = v["families"][family];
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    // A model's own variant of a family (SmolLM2's ChatML, Llama-3.2's dated Llama-3.1) names it.
    const ChatTemplate t = parse_chat_template(f.value("family", family));
    ChatStyle style;
    if (family != "plain") {
      style = detect_chat_style(f["template"], t);
      EXPECT_EQ(style.default_system, f.value("default_system", "")) << family;
      EXPECT_EQ(style.today, f.contains("date")) << family;  // strftime_now: today's date
      if (style.today) {
        style.today = false;  // the day the vectors were made on, not today
        style.date = f["date"];
      }
    }
    const std::string where = family + " " + c["messages"].dump() + " gen=" + c["add_generation_prompt"].dump();
    if (c["rendered"].is_null()) {  // the Jinja template raises: so must the renderer
      EXPECT_THROW(render_chat(t, messages, c["add_generation_prompt"], style), Error) << where;
      ++refused;
      continue;
    }
    const auto segments = render_chat(t, messages, c["add_generation_prompt"], style);
    EXPECT_EQ(chat_text(segments, f["bos_token"], f["eos_token"]), c["rendered"].get<std::string>()) << where;
    if (family != "plain") {
      // Real models' templates are recognized by what they write.
      EXPECT_EQ(detect_chat_template(f["template"]), t) << family;
    }
  }
  EXPECT_EQ(refused, 2);
}

// A prompt's ids are those Hugging Face's tokenizer gives the whole rendered text (what
// apply_chat_template(tokenize=True) does): with a Metaspace pre-tokenizer of prepend_scheme
// "first", text after <s> gets no "▁" (a turn tokenized alone got one after every BOS), while
// the legacy Prepend normalizer puts one there. The ids are tokenizers 0.22's for that text
// (tests/vectors/hf_tokenizers).
TEST(ChatTemplate, PromptIdsAreThoseOfTheWholeRenderedText) {
  const std::string dir = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/hf_tokenizers/";
  const json v = json::parse(read_file(dir + "vectors.json"));
  const std::vector<std::vector<ChatMessage>> conversations = {
      {{"user", "Hi there"}}, {{"user", "Hi"}, {"assistant", "Hello!"}, {"user", "How are you?"}}};
  for (const std::string name : {"sp_metaspace", "sp_legacy"}) {
    HfTokenizerFiles files;
    files.where = dir + name + ".tokenizer.json";
    files.tokenizer_json = read_file(files.where);
    files.tokenizer_config = read_file(dir + name + ".tokenizer_config.json");
    const auto tok = hf_tokenizer_from_files(files);
    for (const auto& messages : conversations) {
      const auto segments = render_chat(ChatTemplate::kLlama2, messages, true);
      const std::string text = chat_text(segments, "<s>", "</s>");
      std::vector<int> expected;
      for (const json& c : v["cases"])
        if (c["tokenizer"] == name && c.contains("text") && c["text"] == text)
          expected = c["ids"].get<std::vector<int>>();
      ASSERT_FALSE(expected.empty()) << name << ": no vector for " << text;
      EXPECT_EQ(chat_prompt_ids(*tok, segments), expected) << name << ": " << text;
    }
  }
}

// A template whose markers the tokenizer holds as special tokens passes; on a tokenizer without
// them (--chat-template chatml over a base model's) each marker reads as several pieces, which
// serve warns of at start.
TEST(ChatTemplate, ATokenizerWithoutTheTemplatesSpecialTokensIsNamed) {
  const std::string dir = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/hf_tokenizers/";
  auto load = [&](const std::string& name) {
    HfTokenizerFiles files;
    files.where = dir + name + ".tokenizer.json";
    files.tokenizer_json = read_file(files.where);
    files.tokenizer_config = read_file(dir + name + ".tokenizer_config.json");
    return hf_tokenizer_from_files(files);
  };
  const auto gpt2 = load("gpt2"), llama3 = load("llama3"), sp = load("sp_metaspace");
  EXPECT_EQ(chat_tokenizer_mismatch(ChatTemplate::kChatML, *gpt2), "");
  EXPECT_EQ(chat_tokenizer_mismatch(ChatTemplate::kLlama3, *llama3), "");
  EXPECT_EQ(chat_tokenizer_mismatch(ChatTemplate::kLlama31, *llama3), "");
  const std::string chatml = chat_tokenizer_mismatch(ChatTemplate::kChatML, *llama3);
  EXPECT_NE(
      chatml.find("the tokenizer has no token for <|im_start|>, <|im_end|> (chat template chatml)"),
      std::string::npos)
      << chatml;
  EXPECT_NE(chat_tokenizer_mismatch(ChatTemplate::kLlama3, *gpt2)
                .find("<|start_header_id|>, <|end_header_id|>, "
                      "<|eot_id|>"),
            std::string::npos);
  for (ChatTemplate t : {ChatTemplate::kPlain, ChatTemplate::kLlama2, ChatTemplate::kZephyr})
    EXPECT_EQ(chat_tokenizer_mismatch(t, *sp), "") << chat_template_name(t);
}

TEST(ChatTemplate, NamesRolesAndStops) {
  EXPECT_EQ(parse_chat_template("llama3"), ChatTemplate::kLlama3);
  try {
    parse_chat_template("vicuna");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(
        std::string(e.what()).find("not one of plain, chatml, llama2, llama3, llama3.1, zephyr"),
        std::string::npos);
  }
  EXPECT_EQ(detect_chat_template("{{ messages }}"), std::nullopt);
  // Templates that share a family's markers but write other text are no family's (they were
  // taken for zephyr and llama2): Phi-3-mini's and Mistral-7B-Instruct-v0.1's, as shipped.
  EXPECT_EQ(
      detect_chat_template(
          "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
          "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
          "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' "
          "%}{{'<|assistant|>\n' "
          "+ message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt "
          "%}{{ "
          "'<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"),
      std::nullopt);
  EXPECT_EQ(
      detect_chat_template(
          "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != "
          "(loop.index0 % 2 "
          "== 0) %}{{ raise_exception('Conversation roles must alternate "
          "user/assistant/user/assistant/...') "
          "}}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' "
          "[/INST]' }}{% "
          "elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ "
          "raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor "
          "%}"),
      std::nullopt);
  try {
    render_chat(ChatTemplate::kChatML, {{"user", "hi"}, {"tool", "x"}}, true);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("messages[1].role must be system, user or assistant (got 'tool')"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(render_chat(ChatTemplate::kPlain, {}, true), Error);
  // BOS and EOS stay apart from the text, to become token ids.
  const auto s = render_chat(ChatTemplate::kLlama2, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}, true);
  ASSERT_EQ(s.size(), 5u);
  EXPECT_EQ(s[0].kind, ChatSegment::kBos);
  EXPECT_EQ(s[2].kind, ChatSegment::kEos);
  EXPECT_EQ(s[3].kind, ChatSegment::kBos);
  EXPECT_EQ(chat_stop_strings(ChatTemplate::kChatML), std::vector<std::string>{"<|im_end|>"});
  EXPECT_EQ(chat_stop_strings(ChatTemplate::kPlain), std::vector<std::string>{"\nUser:"});
  EXPECT_EQ(chat_stop_strings(ChatTemplate::kLlama31), std::vector<std::string>{"<|eot_id|>"});
}

// A default system turn written inside a Jinja string with \n escapes (Qwen-style), not only
// with real newlines (SmolLM2's, in the vectors); a system turn built from the conversation's
// own message is no default.
TEST(ChatTemplate, DefaultSystemTurnsAndTheDate) {
  const std::string qwen =
      R"({%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\n' + messages[0]['content'] + )"
      R"('<|im_end|>\n' }}{%- else %}{{- '<|im_start|>system\nYou are Qwen.\nBe brief.<|im_end|>\n' }}{%- endif %})";
  EXPECT_EQ(detect_chat_style(qwen, ChatTemplate::kChatML).default_system,
            "You are Qwen.\nBe brief.");
  const auto s = render_chat(ChatTemplate::kChatML, {{"user", "hi"}}, true,
                             detect_chat_style(qwen, ChatTemplate::kChatML));
  EXPECT_EQ(chat_text(s, "", ""),
            "<|im_start|>system\nYou are Qwen.\nBe "
            "brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  const std::string own = R"({{'<|im_start|>system\n' + message['content'] + '<|im_end|>'}})";
  EXPECT_EQ(detect_chat_style(own, ChatTemplate::kChatML).default_system, "");
  const std::string date = chat_date_today();  // "05 Dec 2026", as strftime("%d %b %Y")
  ASSERT_EQ(date.size(), 11u) << date;
  EXPECT_TRUE(std::isdigit((unsigned char)date[0]) && std::isdigit((unsigned char)date[1]) &&
              date[2] == ' ' && date[6] == ' ')
      << date;
}

}  // namespace
}  // namespace chainlm
