// Parsing and validating POST /v1/completions bodies: defaults, every field, and errors that
// name the field.
#include "serve/completion_request.h"

#include <gtest/gtest.h>

#include "infer/sampler.h"

namespace chainlm {
namespace {

using nlohmann::json;

ModelConfig config() {
  ModelConfig c;
  c.dim = 32;
  c.n_layers = 1;
  c.n_heads = 4;
  c.n_kv_heads = 1;
  c.ffn_dim = 64;
  c.vocab_size = 258;
  c.chains = {1, 1, 2};
  c.kv_share = true;
  c.max_seq_len = 64;
  return c;
}

TEST(CompletionRequest, DefaultsFollowOpenAi) {
  const auto r = parse_completion_request(json{{"prompt", "hi"}}, config());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "hi");
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.gen.max_tokens, 16);
  EXPECT_EQ(r.gen.sampling.temperature, 1.0f);
  EXPECT_EQ(r.gen.sampling.top_p, 1.0f);
  EXPECT_EQ(r.gen.sampling.top_k, 0);
  EXPECT_EQ(r.gen.chains, 0);  // all
  EXPECT_TRUE(r.gen.schedule.empty());
  EXPECT_FALSE(r.stream);
  EXPECT_FALSE(r.seed_given);
  EXPECT_TRUE(r.stop.empty());
  EXPECT_TRUE(r.gen.stop_at_eos);
}

// A whole number written with a fraction (5.0) is that integer, as llama.cpp's server reads it
// (it was refused as "must be an integer (got 5.0)"); 2.5 stays refused (ErrorsNameTheField).
TEST(CompletionRequest, WholeNumbersWrittenAsFloatsAreIntegers) {
  const auto r = parse_completion_request(
      json::parse(R"({"prompt": "x", "max_tokens": 5.0, "n": 2.0, "top_k": 7.0})"), config());
  EXPECT_EQ(r.gen.max_tokens, 5);
  EXPECT_EQ(r.n, 2);
  EXPECT_EQ(r.gen.sampling.top_k, 7);
  // Token ids and seeds too, as the docs promise of every integer field (token ids written so
  // were refused as "not an integer").
  const auto ids = parse_completion_request(
      json::parse(R"({"prompt": [[5.0, 7], [9.0]], "seed": 42.0, "best_of": 1.0})"), config());
  ASSERT_EQ(ids.prompts.size(), 2u);
  EXPECT_EQ(ids.prompts[0].tokens, (std::vector<int>{5, 7}));
  EXPECT_EQ(ids.prompts[1].tokens, (std::vector<int>{9}));
  EXPECT_EQ(ids.gen.sampling.seed, 42u);
  EXPECT_TRUE(ids.seed_given);
  const auto one = parse_completion_request(json::parse(R"({"prompt": [5.0, 7.0]})"), config());
  ASSERT_EQ(one.prompts.size(), 1u);
  EXPECT_EQ(one.prompts[0].tokens, (std::vector<int>{5, 7}));
  EXPECT_EQ(whole_number(json::parse("2.5")), std::nullopt);
  EXPECT_EQ(whole_number(json::parse("18446744073709551615")), std::nullopt);
  EXPECT_EQ(whole_number(json::parse("-3.0")), -3);
}

TEST(CompletionRequest, ReadsEveryField) {
  const auto r = parse_completion_request(
      json::parse(R"({"prompt": "x", "max_tokens": 5, "temperature": 0, "top_p": 0.5, "top_k": 7,
                      "seed": 18446744073709551615, "stop": ["a", "bc"], "stream": true,
                      "chains": 2, "model": "whatever", "n": 1, "echo": false, "logprobs": null,
                      "user": "u", "presence_penalty": 0.5, "frequency_penalty": -1.0,
                      "logit_bias": {"65": -100, "7": 2.5}, "ignore_eos": true})"),
      config());
  EXPECT_FALSE(r.gen.stop_at_eos);
  EXPECT_EQ(r.gen.sampling.presence_penalty, 0.5f);
  EXPECT_EQ(r.gen.sampling.frequency_penalty, -1.0f);
  EXPECT_EQ(r.gen.sampling.logit_bias, (std::vector<std::pair<int, float>>{{65, -100.0f}, {7, 2.5f}}));
  EXPECT_EQ(r.gen.max_tokens, 5);
  EXPECT_EQ(r.gen.sampling.temperature, 0.0f);
  EXPECT_EQ(r.gen.sampling.top_p, 0.5f);
  EXPECT_EQ(r.gen.sampling.top_k, 7);
  // A mass below a float's smallest read 0, which the sampler refused as a 500: it keeps the
  // likeliest token alone, as the smallest float does.
  const auto tiny =
      parse_completion_request(json::parse(R"({"prompt": "x", "top_p": 1e-300})"), config());
  EXPECT_GT(tiny.gen.sampling.top_p, 0.0f);
  EXPECT_NO_THROW(validate_sampling(tiny.gen.sampling));
  EXPECT_EQ(r.gen.sampling.seed, 18446744073709551615ull);
  EXPECT_TRUE(r.seed_given);
  EXPECT_EQ(r.stop, (std::vector<std::string>{"a", "bc"}));
  EXPECT_TRUE(r.stream);
  EXPECT_EQ(r.gen.chains, 2);

  const auto s = parse_completion_request(
      json{{"prompt", ""}, {"stop", "\n"}, {"chain_schedule", "1:2,3"}}, config());
  EXPECT_EQ(s.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(s.chain_schedule, "1:2,3");
  EXPECT_EQ(s.gen.schedule.chains_for(0), 1);
  EXPECT_EQ(s.gen.schedule.chains_for(2), 3);
}

// A prompt is text, token ids, or a list of either; each is answered n times.
TEST(CompletionRequest, PromptListsAndChoices) {
  const auto r = parse_completion_request(json::parse(R"({"prompt": ["ab", [5, 6], ""], "n": 2, "best_of": 2})"),
                                          config());
  ASSERT_EQ(r.prompts.size(), 3u);
  EXPECT_EQ(r.prompts[0].text, "ab");
  EXPECT_FALSE(r.prompts[0].is_tokens());
  EXPECT_EQ(r.prompts[1].tokens, (std::vector<int>{5, 6}));
  EXPECT_EQ(r.prompts[2].text, "");
  EXPECT_EQ(r.n, 2);
  const auto ids = parse_completion_request(json::parse(R"({"prompt": [7, 8, 9]})"), config());
  ASSERT_EQ(ids.prompts.size(), 1u);
  EXPECT_EQ(ids.prompts[0].tokens, (std::vector<int>{7, 8, 9}));
}

TEST(CompletionRequest, NullMeansDefault) {
  const auto r = parse_completion_request(
      json::parse(R"({"prompt": "x", "max_tokens": null, "stop": null, "seed": null})"), config());
  EXPECT_EQ(r.gen.max_tokens, 16);
  EXPECT_FALSE(r.seed_given);
}

// Each bad body is refused with the field it names, and a message starting with that name.
TEST(CompletionRequest, ErrorsNameTheField) {
  const std::vector<std::tuple<std::string, std::string, std::string>> cases = {
      {R"([1, 2])", "", "the request body must be a JSON object"},
      {R"({})", "prompt", "prompt is required"},
      {R"({"prompt": 3})", "prompt", "prompt must be a string"},
      {R"({"prompt": []})", "prompt", "prompt is an empty list"},
      {R"({"prompt": ["a", 3]})", "prompt",
       "prompt must be a string, a list of token ids, or a list of prompts"},
      {R"({"prompt": ["a", []]})", "prompt", "prompt[1] is an empty list of token ids"},
      {R"({"prompt": [[1], [2, 300]]})", "prompt",
       "prompt[1][1] must be a token id in 0..257 (got 300)"},
      {R"({"prompt": [1, "a"]})", "prompt", "prompt[1] must be a token id in 0..257"},
      {R"({"prompt": [1, 100.5]})", "prompt",
       "prompt[1] must be a token id in 0..257 (got 100.5, not an integer)"},
      {R"({"prompt": [1, 300.0]})", "prompt", "prompt[1] must be a token id in 0..257 (got 300.0)"},
      {R"({"prompt": "x", "logit_bias": {"5": 1, "05": 2}})", "logit_bias",
       "logit_bias names token 5 twice"},
      {R"({"prompt": "x", "max_tokens": -1})", "max_tokens", "max_tokens must be in 0..64"},
      {R"({"prompt": "x", "max_tokens": 65})", "max_tokens", "max_tokens must be in 0..64"},
      {R"({"prompt": "x", "max_tokens": 2.5})", "max_tokens",
       "max_tokens must be an integer (got 2.5)"},
      {R"({"prompt": "x", "max_tokens": 1e20})", "max_tokens",
       "max_tokens must be an integer (got 1e+20, too large to be one)"},
      {R"({"prompt": "x", "max_tokens": "4"})", "max_tokens", "max_tokens must be an integer"},
      {R"({"prompt": "x", "temperature": -0.1})", "temperature", "temperature must be >= 0"},
      {R"({"prompt": "x", "temperature": "hot"})", "temperature", "temperature must be a number"},
      // Beyond float range: the conversion to the sampler's float was undefined behaviour.
      {R"({"prompt": "x", "temperature": 1e300})", "temperature",
       "temperature must be >= 0 and within float range (got 1e+300)"},
      {R"({"prompt": "x", "top_p": 0})", "top_p", "top_p must be in (0, 1]"},
      {R"({"prompt": "x", "top_p": 1.5})", "top_p", "top_p must be in (0, 1]"},
      {R"({"prompt": "x", "top_k": -2})", "top_k", "top_k must be >= 0"},
      {R"({"prompt": "x", "seed": -1})", "seed", "seed must be an integer"},
      {R"({"prompt": "x", "seed": 1.5})", "seed", "seed must be an integer"},
      {R"({"prompt": "x", "stop": 4})", "stop", "stop must be a string or a list of strings"},
      {R"({"prompt": "x", "stop": ["a", 4]})", "stop",
       "stop must be a string or a list of strings"},
      {R"({"prompt": "x", "stop": ""})", "stop", "stop sequences must not be empty"},
      {R"({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]})", "stop", "stop takes at most 4"},
      {R"({"prompt": "x", "stream": "yes"})", "stream", "stream must be true or false"},
      {R"({"prompt": "x", "chains": 0})", "chains", "chains must be in 1..3"},
      {R"({"prompt": "x", "chains": 4})", "chains", "chains must be in 1..3"},
      {R"({"prompt": "x", "chains": "all"})", "chains", "chains must be an integer"},
      {R"({"prompt": "x", "chain_schedule": "1:2,9"})", "chain_schedule",
       "chain_schedule: segment '9'"},
      {R"({"prompt": "x", "chain_schedule": "1,2"})", "chain_schedule", "chain_schedule: "},
      {R"({"prompt": "x", "chain_schedule": 2})", "chain_schedule",
       "chain_schedule must be a string"},
      {R"({"prompt": "x", "chains": 1, "chain_schedule": "2"})", "chain_schedule",
       "pass chains or chain_schedule, not both"},
      {R"({"prompt": "x", "max_token": 3})", "max_token", "unknown field 'max_token'"},
      {R"({"prompt": "x", "n": 0})", "n", "n must be in 1..16 (got 0)"},
      {R"({"prompt": "x", "n": 2.5})", "n", "n must be an integer"},
      {R"({"prompt": "x", "n": 2, "best_of": 3})", "best_of", "best_of must equal n (2)"},
      {R"({"prompt": ["a", "b", "c"], "n": 6})", "n",
       "3 prompts x n 6 = 18 choices; a request may ask for at most 16"},
      {R"({"prompt": "x", "echo": "yes"})", "echo", "echo must be true or false"},
      // stream_options was accepted with any keys (chat refused them): include_usage alone.
      {R"({"prompt": "x", "stream": true, "stream_options": {"foo": 1}})", "stream_options.foo",
       "stream_options.foo is not supported"},
      {R"({"prompt": "x", "stream": true, "stream_options": {"include_usage": 1}})",
       "stream_options.include_usage", "stream_options.include_usage must be true or false"},
      {R"({"prompt": "x", "stream_options": {"include_usage": true}})", "stream_options",
       "stream_options is only for stream: true"},
      {R"({"prompt": "x", "ignore_eos": 1})", "ignore_eos", "ignore_eos must be true or false"},
      {R"({"prompt": "x", "logprobs": 21})", "logprobs", "logprobs must be in 0..20"},
      {R"({"prompt": "x", "logprobs": true})", "logprobs", "logprobs must be an integer"},
      {R"({"prompt": "x", "presence_penalty": 2.5})", "presence_penalty",
       "presence_penalty must be in [-2, 2]"},
      {R"({"prompt": "x", "frequency_penalty": "a"})", "frequency_penalty",
       "frequency_penalty must be a number"},
      {R"({"prompt": "x", "logit_bias": {"258": 1}})", "logit_bias",
       "logit_bias key '258' must be a token id in 0..257"},
      {R"({"prompt": "x", "logit_bias": {"1x": 1}})", "logit_bias",
       "logit_bias key '1x' must be a token id"},
      // stoll read past a leading space or sign: " 5" passed where "5 " did not.
      {R"({"prompt": "x", "logit_bias": {" 5": 1}})", "logit_bias",
       "logit_bias key ' 5' must be a token id"},
      {R"({"prompt": "x", "logit_bias": {"+5": 1}})", "logit_bias",
       "logit_bias key '+5' must be a token id"},
      {R"({"prompt": "x", "logit_bias": {"65": 101}})", "logit_bias",
       "logit_bias of token 65 must be a number in [-100, 100]"},
      {R"({"prompt": "x", "logit_bias": [1]})", "logit_bias", "logit_bias must be an object"},
      {R"({"prompt": "x", "model": 5})", "model", "model must be a string"},
  };
  for (const auto& [body, param, message] : cases) {
    try {
      parse_completion_request(json::parse(body), config());
      ADD_FAILURE() << body << " was accepted";
    } catch (const RequestError& e) {
      EXPECT_EQ(e.param(), param) << body;
      EXPECT_EQ(std::string(e.what()).rfind(message, 0), 0u) << body << " -> " << e.what();
    }
  }
}

// Found by fuzzing (fuzz/completion_request_fuzzer): a number too large for a double is not a
// nlohmann parse_error but an out_of_range, which the server's catch missed, so such a body got
// a 500 instead of a 400. The raw body is now parsed by parse_completion_body.
// A field given twice is refused naming it (its last value was taken silently), at any depth.
TEST(CompletionRequest, AFieldGivenTwiceIsRefused) {
  for (const auto& [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"prompt": "x", "max_tokens": 1, "max_tokens": 2})", "max_tokens"},
           {R"({"prompt": "x", "logit_bias": {"5": 1, "5": 2}})", "logit_bias.5"}}) {
    try {
      parse_completion_body(body, config());
      ADD_FAILURE() << body << " was accepted";
    } catch (const RequestError& e) {
      EXPECT_EQ(e.param(), param) << body;
      EXPECT_NE(std::string(e.what()).find("gives '" + param + "' twice in one object"),
                std::string::npos)
          << e.what();
    }
  }
  EXPECT_EQ(parse_completion_body(R"({"prompt": "x", "logit_bias": {"5": 1, "6": 2}})", config())
                .gen.max_tokens,
            16);
}

// 1e400 is JSON by its grammar, too large for a double: the field it was given for is named
// (it was "not valid JSON: a number is too large", with no field, where 1e40 named it).
TEST(CompletionRequest, ANumberTooLargeForADoubleNamesItsField) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt": "x", "max_tokens": 1e999})", "max_tokens"},
      {R"({"prompt": "x", "temperature": -4e400})", "temperature"},
      {R"({"prompt": "x", "logit_bias": {"5": 1e400}})", "logit_bias.5"},
  };
  for (const auto& [body, field] : cases) {
    try {
      parse_completion_body(body, config());
      ADD_FAILURE() << body << " was accepted";
    } catch (const RequestError& e) {
      EXPECT_EQ(e.param(), field) << body;
      EXPECT_EQ(std::string(e.what()),
                "'" + field + "' is a number too large for a double (beyond about 1.8e308)");
    }
  }
}

TEST(CompletionRequest, BodyThatIsNotJsonIsARequestError) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"prompt": "x",)", "it ends too early (15 bytes)"},
      {"", "it ends too early (0 bytes)"},
      {"{\"prompt\": \"\xff\"}", "a string is not valid UTF-8 near byte 13"},  // byte 12
      {R"({"prompt": "\ud800 x"})",
       "an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF) near byte"},
      {R"({"prompt": "\udc00"})", "an unpaired UTF-16 surrogate escape"},
      {"{\"prompt\": \"a\nb\"}",
       "a raw control character (a newline or tab must be written \\n or \\t)"},
      {R"({"prompt": x})", "error near byte 12"},
  };
  for (const auto& [body, detail] : cases) {
    try {
      parse_completion_body(body, config());
      ADD_FAILURE() << body << " was accepted";
    } catch (const RequestError& e) {
      const std::string what = e.what();
      EXPECT_EQ(e.param(), "") << body;
      EXPECT_EQ(what.rfind("the request body is not valid JSON: ", 0), 0u) << body << " -> " << what;
      EXPECT_NE(what.find(detail), std::string::npos) << body << " -> " << what;
    }
  }
  // A value nested a million deep is quoted in the message as an excerpt: dump() recursed per
  // level and overflowed the server's stack (found by fuzzing).
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  for (const char* field : {"max_tokens", "temperature", "top_p", "seed"}) {
    try {
      parse_completion_body(R"({"prompt": "x", ")" + std::string(field) + "\": " + deep + "}",
                            config());
      ADD_FAILURE() << field << " accepted a nested array";
    } catch (const RequestError& e) {
      EXPECT_EQ(e.param(), field);
      EXPECT_NE(std::string(e.what()).find("(got [[[[[[[[[...]]]]]]]]])"), std::string::npos)
          << e.what();
    }
  }
  const auto r = parse_completion_body(R"({"prompt": "hi", "max_tokens": 2})", config());
  ASSERT_EQ(r.prompts.size(), 1u);
  EXPECT_EQ(r.prompts[0].text, "hi");
  EXPECT_EQ(r.n, 1);
  EXPECT_EQ(r.gen.max_tokens, 2);
}

}  // namespace
}  // namespace chainlm
