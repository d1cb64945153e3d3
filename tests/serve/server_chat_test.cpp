// POST /v1/chat/completions: a conversation through the server's chat template, answered in
// OpenAI's chat format (whole or as chunks), with the template's BOS/EOS as token ids. The byte
// tokenizer makes prompt lengths countable by hand: one token per byte, plus BOS/EOS ids.
#include <fstream>

#include "io/hf_added_token.h"
#include "serve/serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::ServerUnderTest;
using testing::TempDir;

class ServeChat : public ::testing::Test {
 protected:
  void SetUp() override {
    model = dir.file("air");
    testing::write_tiny_model(model, true, 256);  // room for a ChatML conversation in bytes
  }
  static ServeOptions options(ChatTemplate t) {
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    o.chat_template = t;
    return o;
  }
  static json post(const ServerUnderTest& s, const std::string& path, const json& body, int status = 200) {
    auto r = s.client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(r) << path;
    if (!r) return json();
    EXPECT_EQ(r->status, status) << body.dump() << " -> " << r->body;
    return r->body.rfind("data: ", 0) == 0 ? json(r->body) : json::parse(r->body);
  }
  TempDir dir;
  std::string model;
};

TEST_F(ServeChat, AnswerIsTheCompletionOfTheRenderedConversation) {
  ServerUnderTest s(model, options(ChatTemplate::kPlain));
  const json chat = post(s, "/v1/chat/completions",
                         {{"messages", {{{"role", "user"}, {"content", "Hi"}}}},
                          {"max_tokens", 12}, {"temperature", 0}, {"seed", 3}});
  EXPECT_EQ(chat["object"], "chat.completion");
  EXPECT_EQ(chat["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
  const json& choice = chat["choices"][0];
  EXPECT_EQ(choice["message"]["role"], "assistant");
  // "User: Hi\nAssistant:" is 19 bytes, plus BOS.
  EXPECT_EQ(chat["usage"]["prompt_tokens"], 20);
  // The same text through /v1/completions, cut where the plain template's next user turn
  // would begin.
  const json plain = post(s, "/v1/completions",
                          {{"prompt", "User: Hi\nAssistant:"}, {"max_tokens", 12}, {"temperature", 0}, {"seed", 3}});
  std::string expected = plain["choices"][0]["text"];
  const size_t cut = expected.find("\nUser:");
  if (cut != std::string::npos) expected = expected.substr(0, cut);
  EXPECT_EQ(choice["message"]["content"], expected);
  EXPECT_EQ(choice["finish_reason"], cut != std::string::npos ? "stop" : plain["choices"][0]["finish_reason"]);
}

TEST_F(ServeChat, TemplateBosAndEosAreTokenIds) {
  ServerUnderTest s(model, options(ChatTemplate::kLlama2));
  const json chat = post(s, "/v1/chat/completions",
                         {{"messages",
                           {{{"role", "user"}, {"content", "a"}},
                            {{"role", "assistant"}, {"content", "b"}},
                            {{"role", "user"}, {"content", "c"}}}},
                          {"max_tokens", 1}});
  // [BOS] "[INST] a [/INST]" " b " [EOS] [BOS] "[INST] c [/INST]": 1 + 16 + 3 + 1 + 1 + 16.
  EXPECT_EQ(chat["usage"]["prompt_tokens"], 38);
  const json refused = post(s, "/v1/chat/completions",
                            {{"messages", {{{"role", "assistant"}, {"content", "first"}}}}}, 400);
  EXPECT_EQ(refused["error"]["param"], "messages");
  EXPECT_NE(refused["error"]["message"].get<std::string>().find("alternating user/assistant"), std::string::npos);
}

// A full context ends a chat reply where it ends a completion: with the token its last position
// gives (the chat reply stopped one token short). "User: <229 x>\nAssistant:" is 246 bytes,
// 247 tokens with BOS, of the model's 256 positions: 10 tokens (257 in all), EOS and the
// template's stop kept out of it.
TEST_F(ServeChat, AFullContextEndsAReplyWhereItEndsACompletion) {
  ServerUnderTest s(model, options(ChatTemplate::kPlain));
  const std::string content(229, 'x');
  const json bias = {
      {"2", -100}, {std::to_string('\n' + 3), -100}};  // EOS, and "\n" (byte ids are 3 + the byte)
  const json chat = post(s, "/v1/chat/completions",
                         {{"messages", {{{"role", "user"}, {"content", content}}}},
                          {"max_tokens", 100},
                          {"temperature", 0},
                          {"logit_bias", bias}});
  const json plain = post(s, "/v1/completions",
                          {{"prompt", "User: " + content + "\nAssistant:"},
                           {"max_tokens", 100},
                           {"temperature", 0},
                           {"logit_bias", bias}});
  EXPECT_EQ(chat["usage"]["prompt_tokens"], 247);
  EXPECT_EQ(plain["usage"]["prompt_tokens"], 247);
  EXPECT_EQ(plain["usage"]["completion_tokens"], 10) << plain.dump();
  EXPECT_EQ(chat["usage"]["completion_tokens"], 10) << chat.dump();
  EXPECT_EQ(chat["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(chat["choices"][0]["message"]["content"], plain["choices"][0]["text"]);
}

TEST_F(ServeChat, StreamSendsRoleThenDeltasThenFinishThenUsage) {
  ServerUnderTest s(model, options(ChatTemplate::kChatML));
  const json body = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Go"}}}},
                     {"max_tokens", 6},
                     {"seed", 11}};
  const json whole = post(s, "/v1/chat/completions", body);
  json streaming = body;
  streaming["stream"] = true;
  streaming["stream_options"] = {{"include_usage", true}};
  auto r = s.client().Post("/v1/chat/completions", streaming.dump(), "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const auto events = testing::sse_data(r->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text;
  int finishes = 0;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["id"].get<std::string>().rfind("chatcmpl-", 0), 0u);
    if (i + 2 == events.size()) {  // the usage chunk
      EXPECT_TRUE(e["choices"].empty());
      EXPECT_EQ(e["usage"], whole["usage"]);
      continue;
    }
    EXPECT_TRUE(e.contains("usage") && e["usage"].is_null()) << events[i];
    const json& delta = e["choices"][0]["delta"];
    EXPECT_EQ(delta.contains("role"), i == 0) << events[i];
    if (delta.contains("content")) text += delta["content"].get<std::string>();
    if (!e["choices"][0]["finish_reason"].is_null()) {
      ++finishes;
      EXPECT_EQ(e["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);
    }
  }
  EXPECT_EQ(finishes, 1);
  EXPECT_EQ(text, whole["choices"][0]["message"]["content"]);
}

TEST_F(ServeChat, BadChatRequestsNameTheField) {
  ServerUnderTest s(model, options(ChatTemplate::kPlain));
  struct Case {
    json body;
    std::string param, message;
  };
  const json hi = {{{"role", "user"}, {"content", "hi"}}};
  const std::vector<Case> cases = {
      {json::object(), "messages", "messages is required"},
      {{{"messages", json::array()}}, "messages", "messages must be a non-empty list"},
      {{{"messages", {{{"role", "tool"}, {"content", "x"}}}}},
       "messages[0].role",
       "messages[0].role must be system (or developer), user or assistant"},
      {{{"messages", {{{"role", "user"}}}}},
       "messages[0].content",
       "messages[0].content is required"},
      {{{"messages", {{{"role", "user"}, {"content", {{{"type", "image_url"}}}}}}}},
       "messages[0].content",
       "messages[0].content[0] must be {\"type\": \"text\""},
      {{{"messages", hi}, {"prompt", "x"}}, "prompt", "prompt is a /v1/completions field"},
      {{{"messages", hi}, {"echo", true}}, "echo", "echo is a /v1/completions field"},
      {{{"messages", hi}, {"stream_options", {{"include_usage", true}}}},
       "stream_options",
       "stream_options is only for stream: true"},
      {{{"messages", hi}, {"max_tokens", 2}, {"max_completion_tokens", 2}},
       "max_completion_tokens",
       "pass max_tokens"},
      // Named as sent: the message and param said max_tokens, a field the client never wrote.
      {{{"messages", hi}, {"max_completion_tokens", 300}},
       "max_completion_tokens",
       "max_completion_tokens must be in 0..256 (the model's max_seq_len; got 300)"},
      {{{"messages", hi}, {"max_completion_tokens", 2.5}},
       "max_completion_tokens",
       "max_completion_tokens must be an integer (got 2.5)"},
      {{{"messages", hi}, {"max_tokens", 300}}, "max_tokens", "max_tokens must be in 0..256"},
      {{{"messages", hi}, {"logprobs", true}, {"top_logprobs", 2.5}},
       "top_logprobs",
       "top_logprobs must be in 0..20"},
      {{{"messages", hi}, {"temperature", -1}}, "temperature", "temperature must be >= 0"},
      // "User: " + 300 bytes + "\nAssistant:", and BOS.
      {{{"messages", {{{"role", "user"}, {"content", std::string(300, 'x')}}}}},
       "messages",
       "the conversation is 318 tokens in the plain template (BOS included), longer than the "
       "model's max_seq_len 256"},
  };
  for (const Case& c : cases) {
    const json e = post(s, "/v1/chat/completions", c.body, 400)["error"];
    EXPECT_EQ(e["param"], c.param) << c.body.dump();
    EXPECT_EQ(e["message"].get<std::string>().rfind(c.message, 0), 0u) << c.body.dump() << " -> " << e.dump();
  }
  // Text parts are joined; max_completion_tokens is max_tokens' other name.
  const json parts = post(s, "/v1/chat/completions",
                          {{"messages", {{{"role", "user"}, {"content", {{{"type", "text"}, {"text", "H"}}, {{"type", "text"}, {"text", "i"}}}}}}},
                           {"max_completion_tokens", 2}});
  EXPECT_EQ(parts["usage"]["prompt_tokens"], 20);
  EXPECT_LE(parts["usage"]["completion_tokens"].get<int>(), 2);
  // "developer" (OpenAI's newer name for the system message) is the system prompt.
  auto greedy = [&](const std::string& role) {
    return post(s, "/v1/chat/completions",
                {{"messages", {{{"role", role}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
                 {"max_tokens", 4}, {"temperature", 0}});
  };
  const json as_system = greedy("system"), as_developer = greedy("developer");
  EXPECT_EQ(as_developer["usage"], as_system["usage"]);
  EXPECT_EQ(as_developer["choices"][0]["message"], as_system["choices"][0]["message"]);
}

// OpenAI fields for what chainlm does not do are accepted with the values that ask for nothing
// (clients send them so) and give the same answer as without them; other values get a 400
// naming the field.
TEST_F(ServeChat, NeutralOpenAIFieldsAreAcceptedAndOthersRefused) {
  ServerUnderTest s(model, options(ChatTemplate::kPlain));
  const json base = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}, {"temperature", 0}};
  const json plain = post(s, "/v1/chat/completions", base);
  const std::vector<std::pair<std::string, json>> neutral = {
      {"response_format", {{"type", "text"}}}, {"tools", json::array()},         {"tool_choice", "none"},
      {"tool_choice", "auto"},                  {"parallel_tool_calls", false},   {"store", false},
      {"metadata", json::object()},             {"service_tier", "auto"},         {"modalities", {"text"}},
      {"response_format", nullptr}};
  for (const auto& [name, value] : neutral) {
    json body = base;
    body[name] = value;
    const json r = post(s, "/v1/chat/completions", body);
    EXPECT_EQ(r["choices"][0]["message"], plain["choices"][0]["message"]) << body.dump();
  }
  // An assistant message as OpenAI returns it, sent back in the next turn, carries these empty
  // (a 400 "messages[1].tool_calls is not supported" broke multi-turn clients).
  const json turn = {{"role", "assistant"}, {"content", "Hello"}};
  json two = base;
  two["messages"] = {base["messages"][0], turn, {{"role", "user"}, {"content", "Again"}}};
  const json plain_turn = post(s, "/v1/chat/completions", two);
  for (const auto& [name, value] :
       std::vector<std::pair<std::string, json>>{{"tool_calls", nullptr},
                                                 {"tool_calls", json::array()},
                                                 {"refusal", nullptr},
                                                 {"function_call", nullptr},
                                                 {"annotations", json::array()},
                                                 {"audio", nullptr}}) {
    json body = two;
    body["messages"][1][name] = value;
    const json r = post(s, "/v1/chat/completions", body);
    EXPECT_EQ(r["choices"][0]["message"], plain_turn["choices"][0]["message"]) << body.dump();
  }
  json called = two;
  called["messages"][1]["tool_calls"] = {{{"id", "c1"}, {"type", "function"}}};
  const json ce = post(s, "/v1/chat/completions", called, 400)["error"];
  EXPECT_EQ(ce["param"], "messages[1].tool_calls") << ce.dump();
  const std::vector<std::pair<std::string, json>> refused = {
      {"response_format", {{"type", "json_object"}}},
      {"tools", {{{"type", "function"}, {"function", {{"name", "f"}}}}}},
      {"tool_choice", "required"},
      {"store", true},
      {"service_tier", "flex"},
      {"modalities", {"text", "audio"}},
      {"reasoning_effort", "low"}};
  for (const auto& [name, value] : refused) {
    json body = base;
    body[name] = value;
    const json e = post(s, "/v1/chat/completions", body, 400)["error"];
    EXPECT_EQ(e["param"], name) << body.dump();
    EXPECT_NE(e["message"].get<std::string>().find(name), std::string::npos) << e.dump();
  }
}

// `chainlm serve` takes the template family from a Hugging Face directory's tokenizer_config.json
// unless --chat-template says otherwise.
TEST_F(ServeChat, ServeCommandRecognizesTheTemplateOfTheModelDirectory) {
  {
    std::ofstream out(model + "/tokenizer_config.json");
    out << json{{"chat_template",
                 "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
                 "'<|im_end|>' + '\\n'}}{% endfor %}"}}
               .dump();
  }
  // What `chainlm serve` prints, up to its chat template line (the line after the URL line).
  auto served = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> args = {"--model", model, "--port", "0", "--threads", "1"};
    args.insert(args.end(), extra.begin(), extra.end());
    testing::Spawned s = testing::spawn_serve(dir, args, {});
    EXPECT_GT(s.port, 0) << testing::read_bytes(dir.file("serve.err"));
    std::string out;
    for (int i = 0; s.port > 0 && i < 500 && out.find("chat template") == std::string::npos; ++i) {
      out = testing::read_bytes(dir.file("serve.out"));
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (s.pid > 0) testing::stop(s);  // (kill(0, ...) would signal this whole process group)
    return out;
  };
  for (const auto& [extra, expected] :
       std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{}, "chat template chatml"}, {{"--chat-template", "zephyr"}, "chat template zephyr"}}) {
    const std::string out = served(extra);
    EXPECT_NE(out.find(expected), std::string::npos) << out;
  }
  // Recent transformers write the template to chat_template.jinja beside tokenizer_config.json:
  // it fell back to plain without a word.
  {
    std::ofstream out(model + "/tokenizer_config.json");
    out << json{{"bos_token", "<s>"}}.dump();
  }
  {
    std::ofstream out(model + "/chat_template.jinja");
    out << "{% for m in messages %}<|im_start|>{{m.role}}\n{{m.content}}<|im_end|>\n{% endfor %}";
  }
  const std::string out = served({});
  EXPECT_NE(out.find("chat template chatml"), std::string::npos) << out;
  // Llama-3.1/3.2/3.3: their own family, with the date their template writes (a Llama-3.1
  // template rendered as Llama-3.0 lost the whole system turn).
  {
    std::ofstream f(model + "/chat_template.jinja");
    f << "{{- bos_token }}{%- if not date_string is defined %}{%- set date_string = \"26 Jul "
         "2024\" %}{%- endif %}"
         "{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: "
         "December 2023\\n\" }}";
  }
  const std::string llama31 = served({});
  EXPECT_NE(llama31.find("chat template llama3.1 (26 Jul 2024)"), std::string::npos) << llama31;
  // Named on the command line, the family keeps the model template's additions when it is the
  // model's own family (here the date), not when it is another.
  {
    std::ofstream f(model + "/chat_template.jinja");
    f << "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
         "'<|im_start|>system\n"
         "You are SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
         "message['content'] + "
         "'<|im_end|>' + '\n'}}{% endfor %}";
  }
  const std::string named = served({"--chat-template", "chatml"});
  EXPECT_NE(named.find("chat template chatml (with its default system message)"), std::string::npos)
      << named;
  const std::string other = served({"--chat-template", "zephyr"});
  EXPECT_NE(other.find("chat template zephyr,"), std::string::npos) << other;
  // A chat_template that is neither a string nor a list is a broken file: refused by name, not
  // served as plain without a word.
  {
    std::ofstream f(model + "/tokenizer_config.json");
    f << json{{"chat_template", 42}}.dump();
  }
  const testing::Spawned bad =
      testing::spawn_serve(dir, {"--model", model, "--port", "0", "--threads", "1"}, {});
  EXPECT_EQ(bad.port, 0);
  int status = 0;
  if (bad.pid > 0) ::waitpid(bad.pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0);
  const std::string err = testing::read_bytes(dir.file("serve.err"));
  EXPECT_NE(err.find("\"chat_template\" is a number"), std::string::npos) << err;
}

// SmolLM2-Instruct: ChatML whose template writes a default system turn, with <|im_start|> as
// the tokenizer's BOS. The prompt is the template's text tokenized once, as Hugging Face's
// apply_chat_template gives it: with the default system turn, and one <|im_start|> in front,
// not the BOS put before a text that opens with it (it was doubled).
TEST(ServeChatHf, SmolLmStyleTemplateAndBos) {
  TempDir dir;
  const std::string vectors = std::string(CHAINLM_SOURCE_DIR) + "/tests/vectors/hf_tokenizers/";
  json tj = json::parse(testing::read_bytes(vectors + "llama3.tokenizer.json"));
  tj["added_tokens"].push_back(testing::special_added_token(787, "<|im_start|>"));
  tj["added_tokens"].push_back(testing::special_added_token(788, "<|im_end|>"));
  const std::string model = dir.file("smol");
  testing::write_tiny_model(model, true, 256, 32, 2, {}, 789);
  std::filesystem::remove(model + "/chainlm_tokenizer.json");
  testing::write_bytes(model + "/tokenizer.json", tj.dump());
  const std::string jinja =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
      "'<|im_start|>system\n"
      "You are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + "
      "message['role'] + "
      "'\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
  testing::write_bytes(
      model + "/tokenizer_config.json",
      json{{"bos_token", "<|im_start|>"}, {"eos_token", "<|im_end|>"}, {"chat_template", jinja}}
          .dump());
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  o.chat_template = *detect_chat_template(jinja);
  o.chat_style = detect_chat_style(jinja, o.chat_template);
  ASSERT_EQ(o.chat_template, ChatTemplate::kChatML);
  ServerUnderTest s(model, o);
  auto r = s.client().Post(
      "/v1/chat/completions",
      json{{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 1}}.dump(),
      "application/json");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const auto tok = load_tokenizer(model);
  ASSERT_EQ(tok->bos_id(), 787);
  const std::vector<int> expected = tok->encode(
      "<|im_start|>system\nYou are a helpful AI assistant named "
      "SmolLM<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\n");
  ASSERT_EQ(expected.at(0), 787);
  EXPECT_EQ(json::parse(r->body)["usage"]["prompt_tokens"], expected.size()) << r->body;
}

}  // namespace
}  // namespace chainlm
