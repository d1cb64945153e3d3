// Chat templates against Hugging Face's own rendering: tests/vectors/chat_templates/vectors.json
// holds each family's Jinja template and conversations rendered by @huggingface/jinja
// (make_vectors.mjs regenerates it); the native renderer must give the same text.
#include "serve/chat_template.h"

#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"

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
  ASSERT_EQ(v["cases"].size(), 50u);
  int refused = 0;
  for (const json& c : v["cases"]) {
    const std::string family = c["family"];
    const json& f = v["families"][family];
    std::vector<ChatMessage> messages;
    for (const json& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    const ChatTemplate t = parse_chat_template(family);
    const std::string where = family + " " + c["messages"].dump() + " gen=" + c["add_generation_prompt"].dump();
    if (c["rendered"].is_null()) {  // the Jinja template raises: so must the renderer
      EXPECT_THROW(render_chat(t, messages, c["add_generation_prompt"]), Error) << where;
      ++refused;
      continue;
    }
    const auto segments = render_chat(t, messages, c["add_generation_prompt"]);
    EXPECT_EQ(chat_text(segments, f["bos_token"], f["eos_token"]), c["rendered"].get<std::string>()) << where;
    if (family != "plain") {
      // Real models' templates are recognized by what they write.
      EXPECT_EQ(detect_chat_template(f["template"]), t) << family;
    }
  }
  EXPECT_EQ(refused, 2);
}

TEST(ChatTemplate, NamesRolesAndStops) {
  EXPECT_EQ(parse_chat_template("llama3"), ChatTemplate::kLlama3);
  try {
    parse_chat_template("vicuna");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not one of plain, chatml, llama2, llama3, zephyr"), std::string::npos);
  }
  EXPECT_EQ(detect_chat_template("{{ messages }}"), std::nullopt);
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
}

}  // namespace
}  // namespace chainlm
