// Log-probabilities of generated tokens: the arithmetic on logits whose softmax is known, then
// through the server in both APIs, whole and streamed.
#include "serve/logprobs.h"

#include <cmath>

#include "serve/serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::ServerUnderTest;
using testing::TempDir;

TEST(Logprobs, LogSoftmaxAndTopAlternatives) {
  // softmax(log 1, log 2, log 3, log 4) = 0.1, 0.2, 0.3, 0.4, whatever the shift.
  const std::vector<float> logits = {std::log(1.0f) + 5, std::log(2.0f) + 5, std::log(3.0f) + 5, std::log(4.0f) + 5};
  const TokenLogprob t = token_logprob(logits.data(), 4, 4, 2, 2,
                                       [](int id) { return std::string(1, char('a' + id)); });
  EXPECT_EQ(t.text, "c");
  EXPECT_NEAR(t.logprob, std::log(0.3), 1e-6);
  ASSERT_EQ(t.top.size(), 2u);
  EXPECT_EQ(t.top[0].first, "d");
  EXPECT_NEAR(t.top[0].second, std::log(0.4), 1e-6);
  EXPECT_EQ(t.top[1].first, "c");
  Utf8CharCount seven;
  seven.add("seven c");
  const json legacy = completion_logprobs_json({t, t}, seven);
  EXPECT_EQ(legacy["tokens"], json::array({"c", "c"}));
  EXPECT_EQ(legacy["text_offset"], json::array({7, 8}));
  EXPECT_NEAR(legacy["top_logprobs"][1]["d"].get<double>(), std::log(0.4), 1e-6);
  const json chat = chat_logprobs_json({t});
  EXPECT_EQ(chat["content"][0]["bytes"], json::array({'c'}));
  EXPECT_EQ(chat["content"][0]["top_logprobs"][0]["token"], "d");
}

// A vocab_size padded past the tokenizer's: the log-softmax is over every logit (as eval ppl
// and Hugging Face have it; the padding's share was dropped), the alternatives only the
// tokenizer's ids.
TEST(Logprobs, PaddingRowsCountInTheSoftmaxButAreNoAlternative) {
  // softmax over (log 1, log 2, log 3, log 4): the padding id 3 holds 0.4 of the mass.
  const std::vector<float> logits = {std::log(1.0f), std::log(2.0f), std::log(3.0f),
                                     std::log(4.0f)};
  const TokenLogprob t = token_logprob(logits.data(), 4, 3, 1, 3,
                                       [](int id) { return std::string(1, char('a' + id)); });
  EXPECT_NEAR(t.logprob, std::log(0.2), 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, "c");
  EXPECT_NEAR(t.top[0].second, std::log(0.3), 1e-6);
  EXPECT_EQ(t.top[2].first, "a");
}

std::string token_logprob_legacy_probe() {
  const std::vector<float> logits = {0.0f, 1.0f};
  const TokenLogprob t =
      token_logprob(logits.data(), 2, 2, 1, 0, [](int) { return std::string("\xff"); });
  return completion_logprobs_json({t})["tokens"][0];
}

class ServeLogprobs : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::write_tiny_model(dir.file("air"), true, 128);
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    server = std::make_unique<ServerUnderTest>(dir.file("air"), o);
  }
  json post(const std::string& path, const json& body) const {
    auto r = server->client().Post(path, body.dump(), "application/json");
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    return r && r->status == 200 && r->body.rfind("data:", 0) != 0 ? json::parse(r->body) : json(r ? r->body : "");
  }
  TempDir dir;
  std::unique_ptr<ServerUnderTest> server;
};

// A vocab_size padded past the tokenizer's (512 ids, 258 with text): a random model samples the
// padding about half the time, which ended the request with an error at the first such id;
// the log-probabilities' alternatives listed them too.
TEST(ServePaddedVocabulary, IdsWithoutTextAreNeitherSampledNorListed) {
  TempDir dir;
  testing::write_tiny_model(dir.file("padded"), true, 64, 32, 2, {}, 512);
  ServeOptions o;
  o.threads = 1;
  ServerUnderTest server(dir.file("padded"), o);
  for (int seed = 1; seed <= 3; ++seed) {
    const json body = {
        {"prompt", "ab"}, {"max_tokens", 12}, {"temperature", 1}, {"seed", seed}, {"logprobs", 5}};
    auto r = server.client().Post("/v1/completions", body.dump(), "application/json");
    ASSERT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    const json j = json::parse(r->body);
    const json& lp = j["choices"][0]["logprobs"];
    ASSERT_EQ(lp["tokens"].size(), 12u) << r->body;
    for (const auto& top : lp["top_logprobs"]) EXPECT_EQ(top.size(), 5u) << r->body;
  }
  // A prompt of ids that names a padding row is a bad request naming the tokenizer's range
  // (it was a 500 from deep in the generation).
  auto pad = server.client().Post(
      "/v1/completions", json{{"prompt", {65, 300}}, {"max_tokens", 2}}.dump(), "application/json");
  ASSERT_TRUE(pad);
  EXPECT_EQ(pad->status, 400) << pad->body;
  EXPECT_EQ(json::parse(pad->body)["error"]["param"], "prompt");
  EXPECT_NE(pad->body.find("prompt[1] must be a token id in 0..257 (got 300; the model's rows "
                           "past 257 are padding"),
            std::string::npos)
      << pad->body;
  // A bias on a padding row, which no sampled token can have, was accepted without effect.
  auto bias = server.client().Post(
      "/v1/completions",
      json{{"prompt", "ab"}, {"max_tokens", 2}, {"logit_bias", {{"300", 5}}}}.dump(),
      "application/json");
  ASSERT_TRUE(bias);
  EXPECT_EQ(bias->status, 400) << bias->body;
  EXPECT_NE(bias->body.find("logit_bias key '300' must be a token id in 0..257"), std::string::npos)
      << bias->body;
}

TEST_F(ServeLogprobs, GreedyTokensAreTheirOwnBestAlternative) {
  const json r = post("/v1/completions", {{"prompt", "ab"}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 3}});
  const json& lp = r["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), r["usage"]["completion_tokens"].get<size_t>());
  std::string joined;
  bool all_text = true;  // tokens that are not valid UTF-8 read "bytes:\xNN" (as OpenAI's)
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    joined += lp["tokens"][i].get<std::string>();
    all_text = all_text && lp["tokens"][i].get<std::string>().rfind("bytes:", 0) != 0;
    const double own = lp["token_logprobs"][i];
    EXPECT_LE(own, 0.0);
    // Greedy: the token is the likeliest, so its log-probability is the top one.
    double best = -1e9, mass = 0;
    for (const auto& [text, l] : lp["top_logprobs"][i].items()) {
      best = std::max(best, l.get<double>());
      mass += std::exp(l.get<double>());
    }
    EXPECT_NEAR(own, best, 1e-9) << i;
    EXPECT_LE(mass, 1.0 + 1e-9);
  }
  if (all_text) {
    EXPECT_EQ(joined, r["choices"][0]["text"]);
  }
  EXPECT_EQ(token_logprob_legacy_probe(), "bytes:\\xff");
}

// A stop sequence ends the text: the log-probabilities end with it (they listed the token that
// held the stop sequence, past the text's end; llama.cpp trims them too), whole and streamed.
TEST_F(ServeLogprobs, AStopSequenceEndsTheLogprobsWhereItEndsTheText) {
  const json free_run = post("/v1/completions", {{"prompt", "ab"},
                                                 {"max_tokens", 100},
                                                 {"ignore_eos", true},
                                                 {"temperature", 0},
                                                 {"logprobs", 0}});
  const json& tokens = free_run["choices"][0]["logprobs"]["tokens"];
  // The byte tokenizer: one byte per token. The first printable ASCII token not seen before it
  // becomes the stop sequence, so the text ends right before it.
  size_t cut = 0;
  std::string seen;
  for (size_t i = 0; i < tokens.size() && cut == 0; ++i) {
    const std::string t = tokens[i].get<std::string>();
    if (i > 0 && t.size() == 1 && t[0] > ' ' && t[0] < 127 && seen.find(t) == std::string::npos)
      cut = i;
    seen += t;
  }
  ASSERT_GT(cut, 0u) << free_run.dump();
  const std::string stop = tokens[cut].get<std::string>();
  json body = {{"prompt", "ab"},   {"max_tokens", 100}, {"ignore_eos", true},
               {"temperature", 0}, {"logprobs", 0},     {"stop", {stop}}};
  const json whole = post("/v1/completions", body);
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(whole["choices"][0]["logprobs"]["tokens"].size(), cut) << whole.dump();
  body["stream"] = true;
  auto streamed = server->client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(streamed);
  size_t listed = 0;
  for (const std::string& e : testing::sse_data(streamed->body)) {
    if (e == "[DONE]") continue;
    const json j = json::parse(e);
    if (!j["choices"].empty() && j["choices"][0]["logprobs"].is_object())
      listed += j["choices"][0]["logprobs"]["tokens"].size();
  }
  EXPECT_EQ(listed, cut) << streamed->body;
  // A stop sequence of three tokens: the first two are held back with the text while they may
  // start it, and their log-probabilities with them (streamed, they went out, with offsets past
  // the text's end). The streamed lists equal the whole ones.
  auto printable = [&](size_t i) {
    const std::string t = tokens[i].get<std::string>();
    return t.size() == 1 && t[0] > ' ' && t[0] < 127;
  };
  size_t cut3 = 0;
  seen.clear();
  for (size_t i = 0; i + 2 < tokens.size() && cut3 == 0; ++i) {
    if (i > 0 && printable(i) && printable(i + 1) && printable(i + 2) &&
        seen.find(tokens[i].get<std::string>()) == std::string::npos)
      cut3 = i;
    seen += tokens[i].get<std::string>();
  }
  ASSERT_GT(cut3, 0u) << free_run.dump();
  body["stop"] = {tokens[cut3].get<std::string>() + tokens[cut3 + 1].get<std::string>() +
                  tokens[cut3 + 2].get<std::string>()};
  body["stream"] = false;
  const json whole3 = post("/v1/completions", body);
  const json& lp3 = whole3["choices"][0]["logprobs"];
  EXPECT_EQ(whole3["choices"][0]["finish_reason"], "stop");
  EXPECT_LE(lp3["tokens"].size(), cut3) << whole3.dump();  // (a token without text may end it)
  body["stream"] = true;
  streamed = server->client().Post("/v1/completions", body.dump(), "application/json");
  ASSERT_TRUE(streamed);
  json tokens3 = json::array(), offsets3 = json::array();
  for (const std::string& e : testing::sse_data(streamed->body)) {
    if (e == "[DONE]") continue;
    const json j = json::parse(e);
    if (j["choices"].empty() || !j["choices"][0]["logprobs"].is_object()) continue;
    for (const json& t : j["choices"][0]["logprobs"]["tokens"]) tokens3.push_back(t);
    for (const json& o : j["choices"][0]["logprobs"]["text_offset"]) offsets3.push_back(o);
  }
  EXPECT_EQ(tokens3, lp3["tokens"]) << streamed->body;
  EXPECT_EQ(offsets3, lp3["text_offset"]) << streamed->body;
}

TEST_F(ServeLogprobs, ChatLogprobsWholeAndStreamedAgree) {
  const json body = {{"messages", {{{"role", "user"}, {"content", "hi"}}}},
                     {"max_tokens", 4}, {"seed", 5}, {"logprobs", true}, {"top_logprobs", 2}};
  const json whole = post("/v1/chat/completions", body);
  const json& content = whole["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), whole["usage"]["completion_tokens"].get<size_t>());
  for (const json& t : content) {
    EXPECT_EQ(t["top_logprobs"].size(), 2u);
    std::string bytes;
    for (int b : t["bytes"]) bytes.push_back((char)b);
    EXPECT_EQ(bytes.size(), t["bytes"].size());
  }
  json streaming = body;
  streaming["stream"] = true;
  const std::string events = post("/v1/chat/completions", streaming).get<std::string>();
  json streamed = json::array();
  for (const std::string& e : testing::sse_data(events)) {
    if (e == "[DONE]") break;
    const json chunk = json::parse(e);
    if (chunk["choices"].empty() || chunk["choices"][0]["logprobs"].is_null()) continue;
    for (const json& t : chunk["choices"][0]["logprobs"]["content"]) streamed.push_back(t);
  }
  EXPECT_EQ(streamed, content);
  // Without logprobs: null, and bad values are refused naming the field.
  const json plain = post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "hi"}}}}, {"max_tokens", 1}});
  EXPECT_TRUE(plain["choices"][0]["logprobs"].is_null());
  for (const auto& [field, value, param] : std::vector<std::tuple<std::string, json, std::string>>{
           {"top_logprobs", 3, "top_logprobs"}, {"logprobs", "yes", "logprobs"}}) {
    json bad = {{"messages", {{{"role", "user"}, {"content", "hi"}}}}};
    bad[field] = value;
    auto r = server->client().Post("/v1/chat/completions", bad.dump(), "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(json::parse(r->body)["error"]["param"], param) << r->body;
  }
  json many = body;
  many["top_logprobs"] = 21;
  auto r = server->client().Post("/v1/chat/completions", many.dump(), "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 400);
  EXPECT_EQ(json::parse(r->body)["error"]["message"].get<std::string>().rfind("top_logprobs must be in 0..20", 0), 0u)
      << r->body;
}

}  // namespace
}  // namespace chainlm

namespace chainlm {
namespace {

// echo with logprobs scores the prompt: token i's log-probability given the tokens before it
// (from BOS) is what the model gives it when it is generated after them. 'b' is forced after
// "a" by logit_bias (log-probabilities are of the raw logits, so the bias does not move them),
// then the prompt "ab" is scored with max_tokens 0, as evaluation harnesses do.
TEST_F(ServeLogprobs, EchoScoresThePromptAsGenerationWould) {
  for (int chains : {1, 3}) {
    SCOPED_TRACE(chains);
    const json gen = post("/v1/completions", {{"prompt", {97}}, {"max_tokens", 1}, {"logprobs", 2}, {"chains", chains},
                                              {"logit_bias", {{"98", 100}}}});
    ASSERT_EQ(gen["choices"][0]["logprobs"]["tokens"], json::array({"b"}));
    const double b_after_a = gen["choices"][0]["logprobs"]["token_logprobs"][0];
    const json scored = post("/v1/completions", {{"prompt", {97, 98}}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 2},
                                                 {"chains", chains}});
    const json& lp = scored["choices"][0]["logprobs"];
    EXPECT_EQ(scored["choices"][0]["text"], "ab");
    EXPECT_EQ(lp["tokens"], json::array({"a", "b"}));
    EXPECT_EQ(lp["text_offset"], json::array({0, 1}));
    EXPECT_NEAR(lp["token_logprobs"][1].get<double>(), b_after_a, 1e-4);
    EXPECT_LT(lp["token_logprobs"][0].get<double>(), 0.0);
    EXPECT_EQ(lp["top_logprobs"][0].size(), 2u);
    EXPECT_EQ(scored["usage"]["completion_tokens"], 0);

    // Streamed, with tokens generated after the prompt: the first event scores the prompt, the
    // later ones carry on the offsets after it.
    auto r = server->client().Post("/v1/completions",
                                   json{{"prompt", {97, 98}}, {"max_tokens", 3}, {"echo", true}, {"logprobs", 1},
                                        {"chains", chains}, {"stream", true}, {"seed", 1}}
                                       .dump(),
                                   "application/json");
    ASSERT_TRUE(r && r->status == 200);
    const auto events = testing::sse_data(r->body);
    const json e0 = json::parse(events.at(0))["choices"][0];
    EXPECT_EQ(e0["text"], "ab");
    EXPECT_EQ(e0["logprobs"]["tokens"], json::array({"a", "b"}));
    EXPECT_NEAR(e0["logprobs"]["token_logprobs"][1].get<double>(), b_after_a, 1e-4);
    const json e1 = json::parse(events.at(1))["choices"][0];
    EXPECT_EQ(e1["logprobs"]["text_offset"][0], 2);
  }
}

// text_offset counts characters, as Python's str indexes OpenAI's text (a harness compares it
// with len(context)): "\u00e9a" is 3 bytes and 2 characters. A token that ends inside a
// character counts the character, so the next one's offset is past it.
TEST_F(ServeLogprobs, TextOffsetsCountCharactersNotBytes) {
  const json prompt = {0xC3, 0xA9, 'a'};  // "\u00e9a" a byte a token
  const json whole = post("/v1/completions", {{"prompt", prompt},
                                              {"max_tokens", 2},
                                              {"echo", true},
                                              {"logprobs", 0},
                                              {"logit_bias", {{"98", 100}}},
                                              {"temperature", 0}});
  const json& lp = whole["choices"][0]["logprobs"];
  EXPECT_EQ(whole["choices"][0]["text"], "\u00e9abb");
  EXPECT_EQ(lp["text_offset"], json::array({0, 1, 1, 2, 3}));
  auto r = server->client().Post("/v1/completions",
                                 json{{"prompt", prompt},
                                      {"max_tokens", 2},
                                      {"echo", true},
                                      {"logprobs", 0},
                                      {"logit_bias", {{"98", 100}}},
                                      {"temperature", 0},
                                      {"stream", true}}
                                     .dump(),
                                 "application/json");
  ASSERT_TRUE(r && r->status == 200);
  json offsets = json::array();
  for (const std::string& e : testing::sse_data(r->body)) {
    if (e == "[DONE]") continue;
    const json event = json::parse(e);
    for (const json& o : event["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
  }
  EXPECT_EQ(offsets, lp["text_offset"]) << r->body;

  // A stray continuation byte is a character of the text (its U+FFFD): the offsets after it
  // were one short (a user trial), in the prompt and in what follows it.
  const json stray = {'h', 0x82, 't', 0xC3, 0xA9, '!'};
  const json scored = post("/v1/completions",
                           {{"prompt", stray}, {"max_tokens", 0}, {"echo", true}, {"logprobs", 0}});
  EXPECT_EQ(scored["choices"][0]["text"], "h\uFFFDt\u00e9!");
  EXPECT_EQ(scored["choices"][0]["logprobs"]["text_offset"], json::array({0, 1, 2, 3, 4, 4}));
  const json after = {
      {"prompt", {'h', 0x82}},       {"max_tokens", 2}, {"echo", true}, {"logprobs", 0},
      {"logit_bias", {{"98", 100}}}, {"temperature", 0}};
  const json made = post("/v1/completions", after);
  EXPECT_EQ(made["choices"][0]["text"], "h\uFFFDbb");
  EXPECT_EQ(made["choices"][0]["logprobs"]["text_offset"], json::array({0, 1, 2, 3}));
  json streamed = after;
  streamed["stream"] = true;
  r = server->client().Post("/v1/completions", streamed.dump(), "application/json");
  ASSERT_TRUE(r && r->status == 200);
  offsets = json::array();
  for (const std::string& e : testing::sse_data(r->body)) {
    if (e == "[DONE]") continue;
    const json event = json::parse(e);
    for (const json& o : event["choices"][0]["logprobs"]["text_offset"]) offsets.push_back(o);
  }
  EXPECT_EQ(offsets, json::array({0, 1, 2, 3})) << r->body;
}

}  // namespace
}  // namespace chainlm
