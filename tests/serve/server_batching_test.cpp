// Continuous batching (serve/batch_scheduler.h) through the HTTP API: requests decoded together
// in batched steps, with their prompts read in pieces between the steps, get exactly the tokens
// each gets when it runs alone, on every model kind (CoLM-Air, plain CoLM whose sub-model grows
// mid-generation, PHD), with different sub-models, schedules, sampling and streaming at once.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <future>
#include <thread>

#include "serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::parse_stream;
using testing::Hold;
using testing::ServerUnderTest;
using testing::TempDir;

long metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  return at == std::string::npos ? -1 : std::stol(text.substr(at + name.size() + 2));
}

// What a response says: its text (streamed or not), the chains of each token, why it ended.
struct Answer {
  std::string text, finish;
  json chains;
  int tokens = 0;
  bool operator==(const Answer& o) const {
    return text == o.text && finish == o.finish && chains == o.chains && tokens == o.tokens;
  }
};

Answer ask(const ServerUnderTest& s, const json& body) {
  auto r = s.client().Post("/v1/completions", body.dump(), "application/json");
  if (!r || r->status != 200) {
    ADD_FAILURE() << "request " << body.dump() << " failed: " << (r ? r->body : "no response");
    return {};
  }
  if (body.value("stream", false)) {
    const auto st = parse_stream(r->body);
    return {st.text, st.last["choices"][0]["finish_reason"], json(st.chains),
            st.last["usage"]["completion_tokens"].get<int>()};
  }
  const json j = json::parse(r->body);
  return {j["choices"][0]["text"], j["choices"][0]["finish_reason"], j["chainlm"]["chains"],
          j["usage"]["completion_tokens"].get<int>()};
}

// Eight requests as different as requests get: prompt lengths from 1 to 53 tokens (several
// prefill pieces of 16), every sub-model, chain schedules up and down, greedy and sampled,
// penalties, a stop sequence, streamed and not.
std::vector<json> varied_requests() {
  const std::string long_prompt = "Chains of models read this longer prompt in pieces.";
  std::vector<json> r = {
      {{"prompt", "a"}, {"temperature", 0}, {"chains", 3}},
      {{"prompt", long_prompt}, {"temperature", 0}, {"chains", 1}},
      {{"prompt", "The chain"}, {"temperature", 0.9}, {"seed", 4}, {"chain_schedule", "1:3,3"}},
      {{"prompt", long_prompt.substr(0, 23)}, {"temperature", 1}, {"seed", 5}, {"chains", 2}, {"stream", true}},
      {{"prompt", "xyz"}, {"temperature", 0.7}, {"top_k", 5}, {"seed", 6}, {"chain_schedule", "3:2,1:2,2"}},
      {{"prompt", ""}, {"temperature", 1}, {"top_p", 0.8}, {"seed", 7}, {"presence_penalty", 1.5}},
      {{"prompt", long_prompt}, {"temperature", 0.8}, {"seed", 8}, {"chains", 3}, {"stream", true},
       {"frequency_penalty", 0.5}},
      {{"prompt", "stop"}, {"temperature", 1}, {"seed", 9}, {"stop", "e"}, {"chains", 2}},
  };
  for (json& j : r) j["max_tokens"] = 16;
  return r;
}

class ServeBatching : public ::testing::Test {
 protected:
  // The requests alone, one after another, then all at once (held until every one has been
  // admitted, so they share steps from the start): the same answers, and steps that did batch.
  void expect_batched_answers_equal_alone(const std::string& model) {
    Hold hold;
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 8;
    o.prefill_chunk = 16;
    o.on_token = [&](int) { hold.at_token(); };
    ServerUnderTest s(model, o);
    const std::vector<json> requests = varied_requests();
    std::vector<Answer> alone;
    for (const json& r : requests) alone.push_back(ask(s, r));
    auto counters = [&] {
      const std::string m = s.client().Get("/metrics")->body;
      return std::make_pair(metric(m, "chainlm_decode_steps_total"), metric(m, "chainlm_decode_rows_total"));
    };
    const auto before = counters();
    EXPECT_GT(before.first, 0);
    EXPECT_EQ(before.first, before.second) << "alone, every step decodes one row";

    hold.arm();
    std::vector<std::future<Answer>> together;
    together.push_back(std::async(std::launch::async, [&] { return ask(s, requests[0]); }));
    ASSERT_TRUE(hold.wait_held());
    for (size_t i = 1; i < requests.size(); ++i)
      together.push_back(std::async(std::launch::async, [&, i] { return ask(s, requests[i]); }));
    ASSERT_TRUE(s.wait_for("sessions_in_flight", (int)requests.size()));
    // Admitted, then handed to the scheduler: every other request waits to join while the first
    // one holds the scheduler's thread.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    long waiting = 0;
    while ((waiting = metric(s.client().Get("/metrics")->body,
                             "chainlm_generations_waiting_to_join")) < (long)requests.size() - 1 &&
           std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(waiting, (long)requests.size() - 1);
    hold.open();
    for (size_t i = 0; i < requests.size(); ++i)
      EXPECT_EQ(together[i].get(), alone[i]) << "request " << i << ": " << requests[i].dump();
    const auto after = counters();
    const double steps = after.first - before.first, rows = after.second - before.second;
    EXPECT_GE(rows / steps, 2.0) << steps << " steps decoded " << rows << " rows";
  }
  TempDir dir;
};

TEST_F(ServeBatching, ColmAirRequestsGetTheirAloneTokensInBatches) {
  const std::string m = dir.file("air");
  testing::write_tiny_model(m, true);
  expect_batched_answers_equal_alone(m);
}

// Plain CoLM: a schedule that grows the sub-model recomputes that sequence's cache (it leaves
// the batch for that step).
TEST_F(ServeBatching, PlainColmRequestsGetTheirAloneTokensInBatches) {
  const std::string m = dir.file("colm");
  testing::write_tiny_model(m, false);
  expect_batched_answers_equal_alone(m);
}

TEST_F(ServeBatching, PhdRequestsGetTheirAloneTokensInBatches) {
  const std::string m = dir.file("phd");
  PhdConfig p;
  p.repeat = 2;
  p.window = 4;
  p.chunk = 8;
  testing::write_tiny_model(m, true, 64, 32, 2, p);
  expect_batched_answers_equal_alone(m);
}

// A prompt's last token, when it is all that is left of the prompt (a CoLM-Air prompt after
// its chain-1 body, a prompt of BOS alone), is read in the decoding step with the other
// sequences' tokens rather than in a pass of its own; plain CoLM reads its whole prompt in one
// piece, and PHD keeps its own passes. The tokens are those of `chainlm generate` either way
// (ServeTest.TextIsIdenticalToChainlmGenerate) and of requests alone (the tests above).
TEST_F(ServeBatching, APromptsLastTokenIsReadInTheDecodingStep) {
  const std::string air = dir.file("air"), colm = dir.file("colm"), phd = dir.file("phd");
  testing::write_tiny_model(air, true);
  testing::write_tiny_model(colm, false);
  PhdConfig p;
  p.repeat = 2;
  p.window = 4;
  p.chunk = 8;
  testing::write_tiny_model(phd, true, 64, 32, 2, p);
  struct Case {
    std::string model, prompt;
    int chains;
    long pieces, steps;  // what one request of 4 tokens takes
  };
  const std::vector<Case> cases = {
      {air, "The chain", 3, 1, 4},  // the body through chain 1, then a step per token
      {air, "", 2, 0, 4},           // BOS alone: no piece at all
      {air, "The chain", 1, 1, 3},  // chain 1 throughout: one piece, its last row's logits
      {colm, "The chain", 3, 1, 3},
      {phd, "", 2, 1, 3},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.model + " chains " + std::to_string(c.chains) + " prompt '" + c.prompt + "'");
    ServeOptions o;
    o.threads = 1;
    ServerUnderTest s(c.model, o);
    auto counters = [&] {
      const std::string m = s.client().Get("/metrics")->body;
      return std::array<long, 3>{metric(m, "chainlm_prefill_pieces_total"),
                                 metric(m, "chainlm_decode_steps_total"),
                                 metric(m, "chainlm_decode_rows_total")};
    };
    const auto before = counters();
    const Answer a = ask(s, {{"prompt", c.prompt}, {"chains", c.chains}, {"max_tokens", 4},
                             {"temperature", 0}, {"ignore_eos", true}});
    // The scheduler counts a turn after handing its tokens over, so the response may come
    // before the last turn is counted: wait for the expected counts (at most 10 s), then check.
    std::array<long, 3> after{};
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    do {
      after = counters();
      if (after[0] - before[0] == c.pieces && after[1] - before[1] == c.steps &&
          after[2] - before[2] == c.steps)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    } while (std::chrono::steady_clock::now() < until);
    EXPECT_EQ(a.tokens, 4);
    EXPECT_EQ(after[0] - before[0], c.pieces);
    EXPECT_EQ(after[1] - before[1], c.steps);
    EXPECT_EQ(after[2] - before[2], c.steps) << "alone, every step decodes one row";
  }
}

}  // namespace
}  // namespace chainlm
