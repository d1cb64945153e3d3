// The routes beside completions: one model's entry, and text to token ids and back with the
// model's tokenizer (the byte tokenizer here: a token per byte, ids = byte values, BOS 256).
#include "serve/serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::ServerUnderTest;
using testing::TempDir;

class ServeRoutes : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_tiny_model(dir.file("air"), true);
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    o.model_name = "tiny-air";
    server = std::make_unique<ServerUnderTest>(dir.file("air"), o);
  }
  httplib::Result post(const std::string& path, const std::string& body) const {
    return server->client().Post(path, body, "application/json");
  }
  TempDir dir;
  std::unique_ptr<ServerUnderTest> server;
};

TEST_F(ServeRoutes, OneModelByItsId) {
  auto r = server->client().Get("/v1/models/tiny-air");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  const json m = json::parse(r->body);
  EXPECT_EQ(m["id"], "tiny-air");
  EXPECT_EQ(m["object"], "model");
  EXPECT_EQ(m["chains"], 3);
  auto other = server->client().Get("/v1/models/gpt-4");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  const json e = json::parse(other->body)["error"];
  EXPECT_EQ(e["param"], "model");
  EXPECT_EQ(e["message"], "model 'gpt-4' not found; this server serves 'tiny-air'");
}

TEST_F(ServeRoutes, TokenizeAndDetokenizeRoundTrip) {
  const std::string text = "caf\xc3\xa9 \xf0\x9f\x90\x88!";  // "café 🐈!": 11 bytes
  auto r = post("/tokenize", json{{"content", text}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::vector<int> ids = json::parse(r->body)["tokens"];
  ASSERT_EQ(ids.size(), text.size());
  for (size_t i = 0; i < text.size(); ++i) EXPECT_EQ(ids[i], (unsigned char)text[i]) << i;
  auto with_bos = post("/tokenize", json{{"content", "ab"}, {"add_special", true}}.dump());
  ASSERT_TRUE(with_bos);
  EXPECT_EQ(json::parse(with_bos->body)["tokens"], json::array({256, 'a', 'b'}));
  auto back = post("/detokenize", json{{"tokens", ids}}.dump());
  ASSERT_TRUE(back);
  ASSERT_EQ(back->status, 200) << back->body;
  EXPECT_EQ(json::parse(back->body)["content"], text);
  // Ids written as whole numbers with a fraction, as the docs promise of every integer field.
  auto floats = post("/detokenize", R"({"tokens": [104.0, 105]})");
  ASSERT_TRUE(floats);
  ASSERT_EQ(floats->status, 200) << floats->body;
  EXPECT_EQ(json::parse(floats->body)["content"], "hi");
}

TEST_F(ServeRoutes, TokenRoutesRefuseBadBodies) {
  struct Case {
    std::string path, body, param, message;
  };
  const std::vector<Case> cases = {
      {"/tokenize", "{}", "content", "content is required"},
      {"/tokenize", R"({"content": 5})", "content", "content must be a string"},
      {"/tokenize", R"({"content": "x", "add_special": "yes"})", "add_special",
       "add_special must be true or false"},
      {"/tokenize", R"({"text": "x"})", "text", "unknown field 'text'"},
      {"/tokenize", R"({"content": )", "", "the request body is not valid JSON"},
      {"/detokenize", R"({"tokens": [1, 258]})", "tokens",
       "tokens[1] must be a token id in 0..257 (got 258)"},
      {"/detokenize", R"({"tokens": [-1]})", "tokens",
       "tokens[0] must be a token id in 0..257 (got -1)"},
      {"/detokenize", R"({"tokens": ["a"]})", "tokens",
       "tokens[0] must be a token id in 0..257 (got \"a\")"},
      {"/detokenize", R"({"tokens": [1.5]})", "tokens",
       "tokens[0] must be a token id in 0..257 (got 1.5)"},
      {"/detokenize", R"({"tokens": 3})", "tokens", "tokens must be a list of token ids"},
      {"/detokenize", "[]", "", "the request body must be a JSON object"},
  };
  for (const Case& c : cases) {
    auto r = post(c.path, c.body);
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, 400) << c.path << " " << c.body;
    const json e = json::parse(r->body)["error"];
    EXPECT_EQ(e["message"].get<std::string>().rfind(c.message, 0), 0u) << c.body << " -> " << r->body;
    EXPECT_EQ(e["param"], c.param.empty() ? json(nullptr) : json(c.param)) << c.body;
  }
}

// A prompt of token ids runs as the text they spell (the byte tokenizer: ids = bytes), and
// echo puts the prompt before the answer, whole or as the stream's first event.
// The same with a SentencePiece tokenizer (stories260K's), whose decode() puts U+FFFD for a
// partial character: the prompt's text is made as the completion's pieces are, so "caf" + 0xC3
// then 0xA9 reads "café" whole and streamed.
TEST(ServeEcho, ATokenPromptEndingInsideACharacterWithSentencePiece) {
  const std::string tok512 = CHAINLM_SOURCE_DIR "/../shared/data/stories260K/tok512.model";
  if (!std::filesystem::exists(tok512)) GTEST_SKIP() << tok512 << " is not present";
  TempDir dir;
  testing::write_tiny_model(dir.file("sp"), true, 64, 32, 2, {}, 512);
  std::filesystem::remove(dir.file("sp/chainlm_tokenizer.json"));
  save_tokenizer_to_dir(tok512, dir.file("sp"));
  ServeOptions o;
  o.threads = 1;
  o.max_sessions = 1;
  ServerUnderTest server(dir.file("sp"), o);
  const std::vector<int> caf_c3 = server.tokenizer->encode("caf");
  json body = {
      {"prompt", caf_c3}, {"max_tokens", 1}, {"echo", true}, {"logit_bias", {{"172", 100}}}};
  body["prompt"].push_back(198);  // <0xC3>; 172 is <0xA9>
  auto whole = server.client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(whole);
  EXPECT_EQ(json::parse(whole->body)["choices"][0]["text"], "caf\xC3\xA9") << whole->body;
  body["stream"] = true;
  auto streamed = server.client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(streamed);
  std::string joined;
  const auto events = testing::sse_data(streamed->body);
  for (size_t i = 0; i + 1 < events.size(); ++i)
    joined += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(joined, "caf\xC3\xA9") << streamed->body;
}

// stream_options.include_usage on /v1/completions as OpenAI's: the usage in a last chunk of its
// own (no choices), null on every other; without it, in the last choice's last event. (EOS is
// ignored: a random seed sampled it first about once in a hundred runs, and no token was counted.)
TEST_F(ServeRoutes, CompletionStreamsIncludeUsageOnRequest) {
  auto r = post(
      "/v1/completions",
      R"({"prompt": "hi", "max_tokens": 3, "ignore_eos": true, "stream": true, "stream_options": {"include_usage": true}})");
  ASSERT_TRUE(r);
  auto events = testing::sse_data(r->body);
  ASSERT_GE(events.size(), 3u) << r->body;
  const json usage = json::parse(events[events.size() - 2]);
  EXPECT_TRUE(usage["choices"].empty()) << usage.dump();
  EXPECT_EQ(usage["usage"]["completion_tokens"], 3) << usage.dump();
  for (size_t i = 0; i + 2 < events.size(); ++i)
    EXPECT_TRUE(json::parse(events[i])["usage"].is_null()) << events[i];
  r = post("/v1/completions",
           R"({"prompt": "hi", "max_tokens": 3, "ignore_eos": true, "stream": true})");
  ASSERT_TRUE(r);
  events = testing::sse_data(r->body);
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"]["completion_tokens"], 3) << r->body;
}

TEST_F(ServeRoutes, TokenPromptsAndEcho) {
  auto text = post("/v1/completions", R"({"prompt": "hi", "max_tokens": 5, "seed": 9})");
  auto ids = post("/v1/completions", R"({"prompt": [104, 105], "max_tokens": 5, "seed": 9})");
  ASSERT_TRUE(text && ids);
  ASSERT_EQ(ids->status, 200) << ids->body;
  const json a = json::parse(text->body), b = json::parse(ids->body);
  EXPECT_EQ(b["choices"][0]["text"], a["choices"][0]["text"]);
  EXPECT_EQ(b["usage"]["prompt_tokens"], 3);
  // Ids that open with BOS (what /tokenize gives with add_special) keep it, not a second one.
  const json with_bos = {
      {"prompt", {server->tokenizer->bos_id(), 104, 105}}, {"max_tokens", 5}, {"seed", 9}};
  auto bos = post("/v1/completions", with_bos.dump());
  ASSERT_TRUE(bos);
  EXPECT_EQ(json::parse(bos->body)["usage"]["prompt_tokens"], 3) << bos->body;
  EXPECT_EQ(json::parse(bos->body)["choices"][0]["text"], a["choices"][0]["text"]);
  auto echo = post("/v1/completions", R"({"prompt": [104, 105], "max_tokens": 5, "seed": 9, "echo": true})");
  ASSERT_TRUE(echo);
  EXPECT_EQ(json::parse(echo->body)["choices"][0]["text"], "hi" + a["choices"][0]["text"].get<std::string>());
  auto streamed = post("/v1/completions", R"({"prompt": "hi", "max_tokens": 5, "seed": 9, "echo": true, "stream": true})");
  ASSERT_TRUE(streamed);
  std::string joined;
  const auto events = testing::sse_data(streamed->body);
  for (size_t i = 0; i + 1 < events.size(); ++i) joined += json::parse(events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(json::parse(events.at(0))["choices"][0]["text"], "hi");  // the prompt is the first event
  EXPECT_EQ(joined, "hi" + a["choices"][0]["text"].get<std::string>());
  // A token prompt that ends inside a character the completion finishes (0xC3 then 0xA9, forced
  // by logit_bias, is "é"): the stream does not split it, as the whole text does not.
  const std::string split_char =
      R"({"prompt": [104, 195], "max_tokens": 1, "echo": true, "logit_bias": {"169": 100}})";
  auto whole = post("/v1/completions", split_char);
  ASSERT_TRUE(whole);
  EXPECT_EQ(json::parse(whole->body)["choices"][0]["text"], "h\xC3\xA9");
  auto split =
      post("/v1/completions", split_char.substr(0, split_char.size() - 1) + R"(, "stream": true})");
  ASSERT_TRUE(split);
  const auto split_events = testing::sse_data(split->body);
  ASSERT_GE(split_events.size(), 3u) << split->body;
  EXPECT_EQ(json::parse(split_events[0])["choices"][0]["text"], "h");
  joined.clear();
  for (size_t i = 0; i + 1 < split_events.size(); ++i)
    joined += json::parse(split_events[i])["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(joined, "h\xC3\xA9");
  for (const auto& [body, message] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": [104, 300]})", "prompt[1] must be a token id in 0..257 (got 300)"},
           {R"({"prompt": ["a", 3]})", "prompt must be a string, a list of token ids, or a list of prompts"},
           {R"({"prompt": [104, "b"]})", "prompt[1] must be a token id"},
           {R"({"prompt": "x", "echo": 1})", "echo must be true or false"}}) {
    auto r = post("/v1/completions", body);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << body;
    EXPECT_EQ(json::parse(r->body)["error"]["message"].get<std::string>().rfind(message, 0), 0u) << r->body;
  }
}

// Several prompts, each n times: choice i is prompt i / n with seed + i, exactly what that
// prompt with that seed gives alone; usage counts each prompt once; a stream sends the same
// choices, told apart by their index.
TEST_F(ServeRoutes, PromptListsAndSeveralChoices) {
  const std::string fields = R"("max_tokens": 6, "temperature": 1, "seed": 3)";
  auto r = post("/v1/completions", R"({"prompt": ["ab", [104, 105]], "n": 2, )" + fields + "}");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json all = json::parse(r->body);
  ASSERT_EQ(all["choices"].size(), 4u);
  const std::vector<std::string> prompts = {R"("ab")", R"("ab")", "[104, 105]", "[104, 105]"};
  long completion_tokens = 0;
  for (int i = 0; i < 4; ++i) {
    SCOPED_TRACE(i);
    auto alone = post("/v1/completions", R"({"prompt": )" + prompts[i] + R"(, "max_tokens": 6, "temperature": 1, "seed": )" +
                                             std::to_string(3 + i) + "}");
    ASSERT_TRUE(alone);
    const json a = json::parse(alone->body);
    EXPECT_EQ(all["choices"][i]["index"], i);
    EXPECT_EQ(all["choices"][i]["text"], a["choices"][0]["text"]);
    EXPECT_EQ(all["choices"][i]["finish_reason"], a["choices"][0]["finish_reason"]);
    EXPECT_EQ(all["choices"][i]["chainlm"]["seed"], 3 + i);
    completion_tokens += a["usage"]["completion_tokens"].get<long>();
  }
  EXPECT_EQ(all["usage"]["prompt_tokens"], 6);  // BOS + 2, twice
  EXPECT_EQ(all["usage"]["completion_tokens"], completion_tokens);

  auto streamed = post("/v1/completions", R"({"prompt": ["ab", [104, 105]], "n": 2, "stream": true, )" + fields + "}");
  ASSERT_TRUE(streamed);
  std::vector<std::string> texts(4);
  std::vector<int> finished(4, 0);
  const auto events = testing::sse_data(streamed->body);
  ASSERT_EQ(events.back(), "[DONE]");
  for (size_t e = 0; e + 1 < events.size(); ++e) {
    const json j = json::parse(events[e]);
    const json& c = j["choices"][0];
    texts.at(c["index"].get<int>()) += c["text"].get<std::string>();
    if (!c["finish_reason"].is_null()) ++finished.at(c["index"].get<int>());
  }
  for (int i = 0; i < 4; ++i) EXPECT_EQ(texts[i], all["choices"][i]["text"]) << i;
  EXPECT_EQ(finished, (std::vector<int>{1, 1, 1, 1}));
  EXPECT_EQ(json::parse(events[events.size() - 2])["usage"], all["usage"]);

  auto chat = post("/v1/chat/completions", R"({"messages": [{"role": "user", "content": "hi"}], "n": 3, )" + fields + "}");
  ASSERT_TRUE(chat);
  ASSERT_EQ(chat->status, 200) << chat->body;
  const json c = json::parse(chat->body);
  ASSERT_EQ(c["choices"].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(c["choices"][i]["index"], i);
}

// A stream of n choices sends them one after the other while the scheduler runs them together:
// a client gone during choice 0 left choice 1 out of /metrics, its generation and its tokens.
TEST(ServeMetrics, AStreamOfSeveralChoicesCountsEveryChoiceWhenItsClientLeaves) {
  TempDir dir;
  testing::write_tiny_model(dir.file("air"), true);
  testing::Gate gate(1);  // every choice's token 0 is out by then
  ServeOptions o;
  o.threads = 1;
  o.stream_interval_ms = 0;  // the gone client is found at the next token's write
  o.on_token = [&](int i) { gate.at_token(i); };
  ServerUnderTest s(dir.file("air"), o);
  std::thread client([&] {
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = json{{"prompt", "a"},  {"max_tokens", 40}, {"n", 2},
                    {"stream", true}, {"seed", 1},        {"ignore_eos", true}}
                   .dump();
    int chunks = 0;
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 1; };
    auto c = s.client();
    EXPECT_FALSE(c.send(req));  // hung up on the first data
  });
  client.join();
  ASSERT_TRUE(gate.wait_blocked(1));
  gate.open();
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0));
  auto m = s.client().Get("/metrics");
  ASSERT_TRUE(m);
  auto value = [&](const std::string& name) {
    const size_t at = m->body.find("\n" + name + " ");
    return at == std::string::npos ? -1L : std::stol(m->body.substr(at + name.size() + 2));
  };
  EXPECT_EQ(value("chainlm_generations_total"), 2) << m->body;
  EXPECT_EQ(value("chainlm_generations_cancelled_total"), 2) << m->body;
  EXPECT_EQ(value("chainlm_prompt_tokens_total"), 4) << m->body;  // BOS + "a", each choice
  long generated = 0;
  for (int k = 1; k <= 3; ++k) {
    const std::string key = "chainlm_generated_tokens_total{chains=\"" + std::to_string(k) + "\"} ";
    const size_t at = m->body.find(key);
    if (at != std::string::npos) generated += std::stol(m->body.substr(at + key.size()));
  }
  // Each choice had its token 0 (the step before the gate makes both); how many more depends on
  // when the gone client is found.
  EXPECT_GE(generated, 2) << m->body;
}

// Prompts longer than the context are refused naming the prompt; one so long that no
// tokenization could fit (64 tokens of the byte tokenizer's 1-byte pieces: the limit is
// 64 x 4 x (1 + 1) = 512 bytes) is refused before it is tokenized.
TEST_F(ServeRoutes, TooLongPromptsAreRefusedNamingThePrompt) {
  const std::string x100(100, 'x'), x513(513, 'x');
  for (const auto& [prompt, message] : std::vector<std::pair<json, std::string>>{
           {x100, "prompt is 101 tokens (BOS included), longer than the model's max_seq_len 64"},
           {json::array({"ok", x100}), "prompt[1] is 101 tokens (BOS included), longer than the model's max_seq_len 64"},
           {x513, "prompt is 513 bytes, over the server's limit of 512 bytes (no text that long fits the model's "
                  "max_seq_len 64)"},
           {std::string(1000000, 'y'), "prompt is 1000000 bytes, over the server's limit of 512 bytes"}}) {
    auto r = post("/v1/completions", json{{"prompt", prompt}, {"max_tokens", 2}}.dump());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    const json e = json::parse(r->body)["error"];
    EXPECT_EQ(e["param"], "prompt");
    EXPECT_EQ(e["message"].get<std::string>().rfind(message, 0), 0u) << e["message"];
  }
  auto chat = post("/v1/chat/completions", json{{"messages", {{{"role", "user"}, {"content", x513}}}}}.dump());
  ASSERT_TRUE(chat);
  EXPECT_EQ(chat->status, 400);
  EXPECT_NE(chat->body.find("over the server's limit of 512 bytes"), std::string::npos) << chat->body;
  // Token ids: a list that opens with BOS (256 for the byte tokenizer) keeps it, so 64 of them
  // fit a max_seq_len of 64 (they were counted as 65); without BOS, 64 ids are 65 tokens.
  std::vector<int> ids(64, 'x');
  auto plain = post("/v1/completions", json{{"prompt", ids}, {"max_tokens", 0}}.dump());
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->status, 400);
  EXPECT_NE(plain->body.find("prompt is 65 tokens (BOS included)"), std::string::npos)
      << plain->body;
  ids[0] = 256;
  auto with_bos = post("/v1/completions", json{{"prompt", ids}, {"max_tokens", 0}}.dump());
  ASSERT_TRUE(with_bos);
  EXPECT_EQ(with_bos->status, 200) << with_bos->body;
  EXPECT_EQ(json::parse(with_bos->body)["usage"]["prompt_tokens"], 64);
}

// logit_bias reaches the sampler: +100 on the byte 'A' makes every token an 'A', and the
// same bias on two tokens with a frequency penalty makes them take turns.
TEST_F(ServeRoutes, LogitBiasAndPenaltiesReachTheGeneration) {
  auto r = post("/v1/completions", R"({"prompt": "x", "max_tokens": 6, "seed": 1, "logit_bias": {"65": 100}})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["choices"][0]["text"], "AAAAAA");
  r = post("/v1/completions", R"({"prompt": "x", "max_tokens": 6, "temperature": 0,
                                  "logit_bias": {"65": 100, "66": 100}, "frequency_penalty": 2})");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const std::string text = json::parse(r->body)["choices"][0]["text"];
  ASSERT_EQ(text.size(), 6u) << text;
  for (size_t i = 1; i < text.size(); ++i) EXPECT_NE(text[i], text[i - 1]) << text;
  for (char ch : text) EXPECT_TRUE(ch == 'A' || ch == 'B') << text;
}

}  // namespace
}  // namespace chainlm
