// The HTTP API over real loopback connections: completions (plain and streamed) identical to
// `chainlm generate`, models, health, metrics, every error status, the queue's 503, and a client
// that goes away mid-stream freeing its session.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>

#include "cli/run_cli.h"
#include "core/error.h"
#include "core/version.h"
#include "serve/playground.h"
#include "serve_test_util.h"

extern char** environ;

namespace chainlm {
namespace {

using nlohmann::json;
using testing::Gate;
using testing::parse_stream;
using testing::quote;
using testing::run_chainlm;
using testing::ServerUnderTest;
using testing::TempDir;

class ServeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    air = dir.file("air");
    colm = dir.file("colm");
    phd = dir.file("phd");
    testing::write_tiny_model(air, true);
    testing::write_tiny_model(colm, false);
    PhdConfig p;  // PHD-CSWA-2-4-8: each token twice, hidden tokens see 4 others in chunks of 8
    p.repeat = 2;
    p.window = 4;
    p.chunk = 8;
    testing::write_tiny_model(phd, true, 64, 32, 2, p);
  }
  static ServeOptions one_thread() {
    ServeOptions o;
    o.threads = 1;
    o.max_sessions = 1;
    return o;
  }
  // One session whose generations `gate` holds at its token, and room for max_queue requests
  // waiting behind it.
  static ServeOptions held_by(Gate& gate, int max_queue) {
    ServeOptions o = one_thread();
    o.max_queue = max_queue;
    o.on_token = [&gate](int i) { gate.at_token(i); };
    return o;
  }
  static httplib::Result post(const ServerUnderTest& s, const json& body) {
    return s.client().Post("/v1/completions", body.dump(), "application/json");
  }
  // A generation held at its first token by `gate` (closed) and a request queued behind it (a
  // server of one session and max_queue 1): their responses to come, once the second waits.
  static std::pair<std::future<httplib::Result>, std::future<httplib::Result>> hold_and_queue(
      ServerUnderTest& s, Gate& gate) {
    auto held = std::async(std::launch::async, [&s] {
      return post(s, {{"prompt", "a"}, {"max_tokens", 3}, {"seed", 1}});
    });
    EXPECT_TRUE(gate.wait_blocked(1));
    auto queued = std::async(std::launch::async, [&s] {
      return post(s, {{"prompt", "b"}, {"max_tokens", 3}});
    });
    EXPECT_TRUE(s.wait_for("queue_depth", 1));
    return {std::move(held), std::move(queued)};
  }
  TempDir dir;
  std::string air, colm, phd;
};

long metric(const std::string& text, const std::string& name) {
  const size_t at = text.find("\n" + name + " ");
  if (at == std::string::npos) return -1;
  return std::stol(text.substr(at + name.size() + 2));
}

TEST_F(ServeTest, CompletionHasTheOpenAiShapeAndChainlmExtras) {
  ServerUnderTest s(air, one_thread());
  auto r = post(s, {{"prompt", "a small"}, {"max_tokens", 6}, {"seed", 1}, {"chains", 2}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->get_header_value("Content-Type"), "application/json");
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["id"].get<std::string>().rfind("cmpl-", 0), 0u);
  EXPECT_TRUE(j["created"].is_number_integer());
  EXPECT_EQ(j["model"], "chainlm");
  ASSERT_EQ(j["choices"].size(), 1u);
  EXPECT_EQ(j["choices"][0]["index"], 0);
  EXPECT_TRUE(j["choices"][0]["text"].is_string());
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], 8);  // BOS + 7 bytes
  EXPECT_EQ(j["usage"]["completion_tokens"], 6);
  EXPECT_EQ(j["usage"]["total_tokens"], 14);
  EXPECT_EQ(j["chainlm"]["chains"], json({2, 2, 2, 2, 2, 2}));
  EXPECT_EQ(j["chainlm"]["seed"], 1);
  EXPECT_GT(j["chainlm"]["tokens_per_s"].get<double>(), 0);
  for (const char* k : {"prefill_ms", "decode_ms_per_token", "queue_ms"})
    EXPECT_TRUE(j["chainlm"].contains(k)) << k;
}

// The same seed and chains give the text `chainlm generate` prints, streamed or not, for
// CoLM-Air and plain CoLM, a fixed sub-model and a schedule that grows the chain count.
TEST_F(ServeTest, TextIsIdenticalToChainlmGenerate) {
  struct Case {
    std::string model, flags;
    json fields;
  };
  const std::vector<Case> cases = {
      {air,
       "--chains 1 --temperature 0.9 --seed 11",
       {{"chains", 1}, {"temperature", 0.9}, {"seed", 11}}},
      {air,
       "--chains 3 --temperature 0.9 --top-k 20 --seed 12",
       {{"chains", 3}, {"temperature", 0.9}, {"top_k", 20}, {"seed", 12}}},
      {air,
       "--temperature 0 --chain-schedule 1:4,3",
       {{"temperature", 0}, {"chain_schedule", "1:4,3"}}},
      {colm,
       "--chain-schedule 1:3,2:3,3 --temperature 1 --top-p 0.9 --seed 13",
       {{"chain_schedule", "1:3,2:3,3"}, {"temperature", 1}, {"top_p", 0.9}, {"seed", 13}}},
      {phd,
       "--chains 2 --temperature 0.7 --seed 14",
       {{"chains", 2}, {"temperature", 0.7}, {"seed", 14}}},
  };
  const std::string prompt = "The chains ";
  for (const Case& c : cases) {
    SCOPED_TRACE(c.flags);
    auto g = run_chainlm(dir, "generate --threads 1 --json --max-tokens 24 --prompt " +
                                  quote(prompt) + " --model " + quote(c.model) + " " + c.flags);
    ASSERT_EQ(g.exit_code, 0) << g.err;
    const json want = json::parse(g.out);
    const std::string want_text = want["text"].get<std::string>().substr(prompt.size());

    ServerUnderTest s(c.model, one_thread());
    json body = c.fields;
    body["prompt"] = prompt;
    body["max_tokens"] = 24;
    auto r = post(s, body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json got = json::parse(r->body);
    EXPECT_EQ(got["choices"][0]["text"].get<std::string>(), want_text);
    EXPECT_EQ(got["chainlm"]["chains"], want["chains"]);
    EXPECT_EQ(got["usage"]["completion_tokens"], want["tokens"].size());
    EXPECT_EQ(got["usage"]["prompt_tokens"], want["prompt_tokens"].size());

    body["stream"] = true;
    auto rs = post(s, body);
    ASSERT_TRUE(rs);
    ASSERT_EQ(rs->status, 200);
    EXPECT_EQ(rs->get_header_value("Content-Type"), "text/event-stream");
    const auto st = parse_stream(rs->body);
    EXPECT_TRUE(st.done) << rs->body;
    EXPECT_EQ(st.text, want_text);
    EXPECT_EQ(json(st.chains), want["chains"]);
    EXPECT_EQ(st.last["choices"][0]["finish_reason"], got["choices"][0]["finish_reason"]);
    EXPECT_EQ(st.last["usage"], got["usage"]);
  }
}

TEST_F(ServeTest, StreamSendsOneEventPerTokenThenUsageThenDone) {
  ServerUnderTest s(air, one_thread());
  auto r =
      post(s, {{"prompt", "x"}, {"max_tokens", 5}, {"seed", 2}, {"stream", true}, {"chains", 1}});
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  const auto events = testing::sse_data(r->body);
  ASSERT_EQ(events.size(), 7u) << r->body;  // 5 tokens, the last event, [DONE]
  EXPECT_EQ(events.back(), "[DONE]");
  const auto st = parse_stream(r->body);
  EXPECT_EQ(st.chains, (std::vector<int>{1, 1, 1, 1, 1}));
  EXPECT_EQ(st.last["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(st.last["usage"]["completion_tokens"], 5);
  EXPECT_TRUE(st.last["chainlm"].contains("tokens_per_s"));
}

// With an interval, a stream's thread writes the tokens produced meanwhile together: fewer
// writes (each wakes a thread that takes a core from decoding), the same events, and its end
// at once rather than after the interval.
TEST_F(ServeTest, StreamIntervalWritesTokensTogetherOneEventEach) {
  const json request = {
      {"prompt", "x"}, {"max_tokens", 12}, {"seed", 3}, {"temperature", 1}, {"stream", true}};
  auto streamed = [&](int interval_ms, int* writes) {
    ServeOptions o = one_thread();
    o.stream_interval_ms = interval_ms;
    // Tokens 15 ms apart: without an interval each one is written, and read by the client, before
    // the next comes. (2 ms apart, a client thread held off its core by the other tests of a
    // parallel ctest run sometimes read two writes as one: 10 reads for 12 tokens.)
    o.on_token = [](int) { std::this_thread::sleep_for(std::chrono::milliseconds(15)); };
    ServerUnderTest s(air, o);
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body = request.dump();
    std::string body;
    *writes = 0;
    req.content_receiver = [&](const char* p, size_t n, uint64_t, uint64_t) {
      ++*writes;  // one chunk of the chunked response per write of the server
      body.append(p, n);
      return true;
    };
    auto r = s.client().send(req);
    EXPECT_TRUE(r && r->status == 200);
    return body;
  };
  int each = 0, held = 0;
  const std::string per_token = streamed(0, &each);
  const auto start = std::chrono::steady_clock::now();
  const std::string together = streamed(60000, &held);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30))
      << "the stream waited for its interval after the generation ended";
  // The first token at once, the other eleven when the generation ends, then its last event
  // with [DONE]; without the interval a write per token.
  EXPECT_LE(held, 3);
  EXPECT_GE(each, 12);
  const auto a = parse_stream(per_token), b = parse_stream(together);
  EXPECT_EQ(testing::sse_data(together).size(), 14u)
      << together;  // 12 tokens, the last event, [DONE]
  EXPECT_EQ(b.text, a.text);
  EXPECT_EQ(b.chains, a.chains);
  EXPECT_TRUE(b.done);
  EXPECT_EQ(b.last["usage"], a.last["usage"]);
}

TEST_F(ServeTest, StopSequenceEndsTheTextBeforeIt) {
  ServerUnderTest s(air, one_thread());
  // A seed whose sampled text is long enough to take a stop sequence from its middle.
  json request = {{"prompt", "q"}, {"max_tokens", 40}, {"temperature", 1}};
  std::string text;
  for (int seed = 0; seed < 50 && text.size() < 16; ++seed) {
    request["seed"] = seed;
    auto full = post(s, request);
    ASSERT_TRUE(full);
    text = json::parse(full->body)["choices"][0]["text"];
  }
  ASSERT_GE(text.size(), 16u);
  // A stop sequence taken from the middle of the greedy text (valid UTF-8 by construction).
  std::string stop;
  for (size_t i = 3; i < text.size() && stop.empty(); ++i) {
    const unsigned char b = text[i];
    if (b < 0x80 && b != 0) stop = text.substr(i, 1);
  }
  ASSERT_FALSE(stop.empty()) << "the greedy text has no ASCII byte after position 3";
  const std::string want = text.substr(0, text.find(stop));
  for (bool stream : {false, true}) {
    json body = request;
    body["stop"] = {"\x01\x02", stop};
    body["stream"] = stream;
    auto r = post(s, body);
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    const json last = stream ? parse_stream(r->body).last : json::parse(r->body);
    const std::string got =
        stream ? parse_stream(r->body).text : last["choices"][0]["text"].get<std::string>();
    EXPECT_EQ(got, want) << "stream " << stream;
    EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  }
}

TEST_F(ServeTest, ModelsHealthMetricsAndPlayground) {
  ServeOptions o = one_thread();
  o.model_name = "tiny";
  ServerUnderTest s(air, o);
  auto m = s.client().Get("/v1/models");
  ASSERT_TRUE(m);
  ASSERT_EQ(m->status, 200);
  const json models = json::parse(m->body);
  EXPECT_EQ(models["object"], "list");
  const json& d = models["data"][0];
  EXPECT_EQ(d["id"], "tiny");
  EXPECT_EQ(d["chains"], 3);
  EXPECT_EQ(d["chain_widths"], json({1, 1, 2}));
  EXPECT_EQ(d["architecture"], "CoLM-Air");
  ASSERT_EQ(d["sub_models"].size(), 3u);
  for (int k = 1; k <= 3; ++k) {
    EXPECT_EQ(d["sub_models"][k - 1]["chains"], k);
    EXPECT_EQ(d["sub_models"][k - 1]["parameters"], s.model->num_params(k));
  }
  EXPECT_TRUE(d["phd"].is_null());

  ServerUnderTest with_phd(phd, one_thread());
  const json pd = json::parse(with_phd.client().Get("/v1/models")->body)["data"][0];
  EXPECT_EQ(pd["architecture"], "CoLM-Air + PHD-CSWA-2-4-8");
  EXPECT_EQ(pd["phd"], json({{"repeat", 2},
                             {"window", 4},
                             {"chunk", 8},
                             {"position_ids", "extended"},
                             {"name", "PHD-CSWA-2-4-8"}}));

  const json h = s.health();
  EXPECT_EQ(h["status"], "ok");
  EXPECT_EQ(h["sessions_in_flight"], 0);
  EXPECT_EQ(h["queue_depth"], 0);
  EXPECT_EQ(h["max_sessions"], 1);

  // Seeded, so that neither stops early at EOS.
  auto r2 = post(s, {{"prompt", "a"}, {"max_tokens", 3}, {"chains", 2}, {"seed", 1}});
  auto r1 = post(s, {{"prompt", "a"}, {"max_tokens", 2}, {"chains", 1}, {"seed", 1}});
  ASSERT_EQ(json::parse(r2->body)["usage"]["completion_tokens"], 3) << r2->body;
  ASSERT_EQ(json::parse(r1->body)["usage"]["completion_tokens"], 2) << r1->body;
  ASSERT_EQ(post(s, {{"prompt", "a"}, {"chains", 7}})->status, 400);
  // An OPTIONS request is answered before routing: counted all the same.
  auto options = s.client().Options("/v1/completions");
  ASSERT_TRUE(options);
  EXPECT_EQ(options->status, 204);
  auto p = s.client().Get("/metrics");
  ASSERT_TRUE(p);
  ASSERT_EQ(p->status, 200);
  EXPECT_EQ(p->get_header_value("Content-Type").rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& t = p->body;
  EXPECT_NE(t.find("chainlm_http_requests_total{route=\"/v1/completions\",code=\"200\"} 2\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("chainlm_http_requests_total{route=\"/v1/completions\",code=\"400\"} 1\n"),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("chainlm_generated_tokens_total{chains=\"2\"} 3\n"), std::string::npos) << t;
  EXPECT_NE(t.find("chainlm_generated_tokens_total{chains=\"1\"} 2\n"), std::string::npos) << t;
  EXPECT_EQ(metric(t, "chainlm_generations_total"), 2);
  EXPECT_EQ(metric(t, "chainlm_prompt_tokens_total"), 4);
  EXPECT_EQ(metric(t, "chainlm_request_duration_seconds_count"), 2);
  EXPECT_NE(t.find("chainlm_http_requests_total{route=\"/v1/completions\",code=\"204\"} 1\n"),
            std::string::npos)
      << t;
  // Each admitted request's wait for a session, and what is serving.
  EXPECT_EQ(metric(t, "chainlm_queue_wait_seconds_count"), 2);
  EXPECT_NE(t.find(cat("\nchainlm_build_info{version=\"", kChainlmVersion,
                       "\",model=\"tiny\",weights=\"fp32\"} 1\n")),
            std::string::npos)
      << t;
  EXPECT_NE(t.find("chainlm_request_duration_seconds_bucket{le=\"+Inf\"} 2\n"), std::string::npos)
      << t;
  EXPECT_EQ(metric(t, "chainlm_sessions_in_flight"), 0);
  EXPECT_EQ(metric(t, "chainlm_queue_depth"), 0);
  EXPECT_EQ(metric(t, "chainlm_max_sessions"), 1);
  EXPECT_EQ(metric(t, "chainlm_decode_threads"), 1) << "the one thread it has";
  // Memory: the peak is at least what the process holds now, which holds at least the weights.
  const double weights_bytes = 4.0 * s.model->params().size();
  EXPECT_GE(metric(t, "chainlm_resident_memory_bytes"), weights_bytes);
  EXPECT_GE(metric(t, "chainlm_peak_resident_memory_bytes"), metric(t, "chainlm_resident_memory_bytes"));
  EXPECT_EQ(metric(t, "chainlm_estimated_memory_bytes"), (double)s.server->estimated_memory().total());
  const json hm = s.health()["memory"];
  EXPECT_GE(hm["peak_rss_bytes"].get<double>(), hm["rss_bytes"].get<double>());
  EXPECT_EQ(hm["estimated_bytes"], s.server->estimated_memory().total());

  auto page = s.client().Get("/");
  ASSERT_TRUE(page);
  ASSERT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_EQ(page->body, std::string(playground_html()));
  EXPECT_NE(page->body.find("id=\"chains\""), std::string::npos);
  EXPECT_EQ(page->body.find("http://"), std::string::npos);  // no external resources
  EXPECT_EQ(page->body.find("https://"), std::string::npos);
}

// Every refusal: status, an OpenAI-style error body, and the field it names.
TEST_F(ServeTest, ErrorsHaveStatusMessageAndField) {
  ServeOptions o = one_thread();
  o.max_body_bytes = 4096;
  ServerUnderTest s(air, o);
  struct Case {
    std::string body;
    int status;
    std::string param, message;
  };
  const std::vector<Case> cases = {
      {"{\"prompt\": ", 400, "", "the request body is not valid JSON"},
      {"[]", 400, "", "the request body must be a JSON object"},
      {R"({"max_tokens": 3})", 400, "prompt", "prompt is required"},
      {R"({"prompt": "x", "chains": 4})", 400, "chains", "chains must be in 1..3"},
      {R"({"prompt": "x", "temperature": -1})", 400, "temperature", "temperature must be >= 0"},
      {R"({"prompt": "x", "top_p": 2})", 400, "top_p", "top_p must be in (0, 1]"},
      {R"({"prompt": "x", "top_k": -1})", 400, "top_k", "top_k must be >= 0"},
      {R"({"prompt": "x", "max_tokens": 1000})", 400, "max_tokens", "max_tokens must be in 0..64"},
      {R"({"prompt": "x", "seed": "one"})", 400, "seed", "seed must be an integer"},
      {R"({"prompt": "x", "stop": 1})", 400, "stop", "stop must be a string or a list of strings"},
      {R"({"prompt": "x", "stream": 1})", 400, "stream", "stream must be true or false"},
      {R"({"prompt": "x", "chain_schedule": "0"})", 400, "chain_schedule",
       "chain_schedule: segment '0'"},
      {R"({"prompt": "x", "chains": 1, "chain_schedule": "1"})", 400, "chain_schedule",
       "pass chains or"},
      {R"({"prompt": "x", "temprature": 1})", 400, "temprature", "unknown field 'temprature'"},
      {json{{"prompt", std::string(70, 'p')}}.dump(), 400, "prompt", "prompt is 71 tokens"},
      {json{{"prompt", std::string(5000, 'p')}}.dump(), 413, "", "the request body is larger"},
  };
  for (const Case& c : cases) {
    auto r = s.client().Post("/v1/completions", c.body, "application/json");
    ASSERT_TRUE(r) << c.body;
    EXPECT_EQ(r->status, c.status) << c.body << " -> " << r->body;
    const json e = json::parse(r->body)["error"];
    EXPECT_EQ(e["message"].get<std::string>().rfind(c.message, 0), 0u)
        << c.body << " -> " << r->body;
    EXPECT_EQ(e["param"], c.param.empty() ? json(nullptr) : json(c.param)) << c.body;
    EXPECT_FALSE(e["type"].get<std::string>().empty());
  }
  for (const auto& [method, path] : std::vector<std::pair<std::string, std::string>>{
           {"GET", "/v1/nothing"}, {"GET", "/v1/completions"}, {"POST", "/health"}}) {
    auto c = s.client();
    auto r = method == "GET" ? c.Get(path) : c.Post(path, "{}", "application/json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << method << " " << path;
    EXPECT_EQ(json::parse(r->body)["error"]["message"], "no route " + method + " " + path);
  }
  // The server still works after all that.
  auto ok =
      s.client().Post("/v1/completions", R"({"prompt": "x", "max_tokens": 2})", "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

// max_sessions 1 and max_queue 0: with one generation held in flight, the next request gets
// 503 with Retry-After; once it finishes, requests are served again.
TEST_F(ServeTest, FullQueueAnswers503WithRetryAfter) {
  Gate gate(0);
  ServerUnderTest s(air, held_by(gate, 0));
  auto held = std::async(std::launch::async, [&] {
    return post(s, {{"prompt", "a"}, {"max_tokens", 4}, {"seed", 1}});
  });
  ASSERT_TRUE(gate.wait_blocked(1));
  EXPECT_EQ(s.health()["sessions_in_flight"], 1);

  for (bool stream : {false, true}) {
    auto r = post(s, {{"prompt", "b"}, {"max_tokens", 2}, {"stream", stream}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503) << r->body;
    EXPECT_EQ(r->get_header_value("Retry-After"), "1");
    EXPECT_EQ(json::parse(r->body)["error"]["type"], "server_busy");
  }
  auto metrics = s.client().Get("/metrics");
  EXPECT_EQ(metric(metrics->body, "chainlm_sessions_in_flight"), 1);
  EXPECT_NE(metrics->body.find("route=\"/v1/completions\",code=\"503\"} 2"), std::string::npos);

  gate.open();
  auto first = held.get();
  ASSERT_TRUE(first);
  EXPECT_EQ(first->status, 200);
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0));
  auto again = post(s, {{"prompt", "b"}, {"max_tokens", 2}});
  ASSERT_TRUE(again);
  EXPECT_EQ(again->status, 200);
}

// max_queue 1: one request waits its turn (and is then served); the one after it is refused.
TEST_F(ServeTest, QueuedRequestWaitsItsTurn) {
  Gate gate(0);
  ServerUnderTest s(air, held_by(gate, 1));
  auto [first, second] = hold_and_queue(s, gate);
  auto third = post(s, {{"prompt", "c"}, {"max_tokens", 3}});
  ASSERT_TRUE(third);
  EXPECT_EQ(third->status, 503);
  gate.open();
  auto r1 = first.get(), r2 = second.get();
  ASSERT_TRUE(r1 && r2);
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r2->status, 200);
  const double queued = json::parse(r2->body)["chainlm"]["queue_ms"].get<double>();
  EXPECT_GT(queued, 0);
  // The queue-wait histogram has the second request's wait (the first found a free session).
  const std::string m = s.client().Get("/metrics")->body;
  EXPECT_EQ(metric(m, "chainlm_queue_wait_seconds_count"), 2) << m;
  const size_t at = m.find("\nchainlm_queue_wait_seconds_sum ");
  ASSERT_NE(at, std::string::npos) << m;
  EXPECT_GE(std::stod(m.substr(at + 33)), queued / 1e3 * 0.999) << m;
}

// A request waiting in the queue when the server stops gets the 503 with its JSON body, also
// from a client that asked to close the connection (httplib's client does): its body went out
// through a content provider that httplib does not call while stopping, so such clients got the
// headers and no body (a user trial: Python's urllib raised IncompleteRead).
TEST_F(ServeTest, AQueuedRequestOfAStoppingServerGetsTheWhole503) {
  Gate gate(0);
  ServerUnderTest s(air, held_by(gate, 1));
  auto [first, queued] = hold_and_queue(s, gate);
  auto stopping = std::async(std::launch::async, [&] { s.server->stop(); });
  auto r = queued.get();
  gate.open();  // the held generation ends, and with it the stop
  first.get();
  stopping.get();
  ASSERT_TRUE(r) << "no response (the body promised did not come)";
  EXPECT_EQ(r->status, 503);
  ASSERT_FALSE(r->body.empty());
  EXPECT_EQ(json::parse(r->body)["error"]["type"], "server_stopping") << r->body;
}

// A client that reads one event and hangs up: the server stops generating and frees the session.
TEST_F(ServeTest, ClientDisconnectMidStreamFreesTheSession) {
  Gate gate(1);  // token 0 has gone out by then
  ServeOptions o = one_thread();
  // A gone client is found at the stream's next write; with an interval that comes up to the
  // interval later, by when this tiny model may have generated everything.
  o.stream_interval_ms = 0;
  o.on_token = [&](int i) { gate.at_token(i); };
  ServerUnderTest s(air, o);
  const int max_tokens = 60;
  std::thread client([&] {
    auto c = s.client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/completions";
    req.set_header("Content-Type", "application/json");
    req.body =
        json{{"prompt", "a"}, {"max_tokens", max_tokens}, {"stream", true}, {"seed", 1}}.dump();
    int chunks = 0;
    // Hang up on the first data received.
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 1; };
    auto r = c.send(req);
    EXPECT_FALSE(r);  // the client cancelled
    EXPECT_EQ(chunks, 1);
  });
  client.join();
  ASSERT_TRUE(gate.wait_blocked(1));  // the generation is held at token 1, its client gone
  EXPECT_EQ(s.health()["sessions_in_flight"], 1);
  gate.open();
  ASSERT_TRUE(s.wait_for("sessions_in_flight", 0)) << "the session was not freed";
  auto m = s.client().Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(metric(m->body, "chainlm_generations_cancelled_total"), 1) << m->body;
  long generated = 0;
  for (int k = 1; k <= 3; ++k) {
    const std::string key = "chainlm_generated_tokens_total{chains=\"" + std::to_string(k) + "\"} ";
    const size_t at = m->body.find(key);
    if (at != std::string::npos) generated += std::stol(m->body.substr(at + key.size()));
  }
  EXPECT_LT(generated, max_tokens / 2) << "the generation ran on after its client left";
  // The freed session serves the next request.
  auto r = post(s, {{"prompt", "b"}, {"max_tokens", 2}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

// `chainlm serve` itself: port 0 prints the URL, the API answers, SIGTERM stops it cleanly.
TEST_F(ServeTest, ServeCommandPrintsItsUrlAndStopsOnSigterm) {
  const std::string out = dir.file("serve.out");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, dir.file("serve.err").c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = {CHAINLM_BINARY, "serve", "--model", air,   "--port", "0",
                                   "--threads",    "1",     "--name",  "tiny"};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, CHAINLM_BINARY, &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);

  int port = 0;
  for (int i = 0; i < 1000 && port == 0; ++i) {
    const std::string text = testing::read_bytes(out);
    const size_t at = text.find("http://127.0.0.1:");
    if (at != std::string::npos && text.find('\n', at) != std::string::npos)
      port = std::stoi(text.substr(at + 17));
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_GT(port, 0) << testing::read_bytes(out) << testing::read_bytes(dir.file("serve.err"));
  EXPECT_NE(testing::read_bytes(out).find("model tiny, 3 chains"), std::string::npos);
  httplib::Client c("127.0.0.1", port);
  auto r = c.Post("/v1/completions", R"({"prompt": "hi", "max_tokens": 3, "seed": 1})",
                  "application/json");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(json::parse(r->body)["model"], "tiny");
  kill(pid, SIGTERM);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  // A run directory: the server names the checkpoint `latest` named, which it keeps serving.
  std::filesystem::create_directories(dir.file("run"));
  std::filesystem::create_directory_symlink(air, dir.file("run/step-00000007"));
  testing::write_bytes(dir.file("run/latest"), "step-00000007\n");
  const testing::Spawned of_run =
      testing::spawn_serve(dir, {"--model", dir.file("run"), "--port", "0", "--threads", "1"}, {});
  ASSERT_NE(of_run.port, 0) << testing::read_bytes(dir.file("serve.err"));
  EXPECT_NE(testing::read_bytes(dir.file("serve.out"))
                .find("chainlm serve: weights of " + dir.file("run/step-00000007") + " (what " +
                      dir.file("run") + "/latest named at start"),
            std::string::npos)
      << testing::read_bytes(dir.file("serve.out"));
  testing::stop(of_run);

  // A connection in the middle of a request holds the stop up to the read timeout (10 s): a
  // second signal a second or more later ends it at once (it was ignored), as in train.
  const testing::Spawned held =
      testing::spawn_serve(dir, {"--model", air, "--port", "0", "--threads", "1"}, {});
  ASSERT_NE(held.port, 0) << testing::read_bytes(dir.file("serve.err"));
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)held.port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string half =
      "POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{";
  ASSERT_EQ(::send(fd, half.data(), half.size(), 0), (ssize_t)half.size());
  // A request on a later connection answered means the half one was accepted and taken by a
  // worker before it (connections are accepted, and queued to the workers, in order): without
  // this a slow start (the sanitizers, a loaded machine) left it in the listen backlog, and the
  // stop, having nothing to wait for, ended the server at once.
  httplib::Client later("127.0.0.1", held.port);
  ASSERT_TRUE(later.Get("/health"));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  kill(held.pid, SIGTERM);
  kill(held.pid, SIGTERM);  // at once: the same stop (`timeout` sends it twice)
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  kill(held.pid, SIGTERM);
  ASSERT_EQ(waitpid(held.pid, &status, 0), held.pid);
  ::close(fd);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 128 + SIGTERM) << status;
  EXPECT_NE(testing::read_bytes(dir.file("serve.err")).find("second stop signal: quitting at once"),
            std::string::npos)
      << testing::read_bytes(dir.file("serve.err"));

  auto bad = run_chainlm(dir, "serve --model " + quote(air) + " --max-queue -1");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--max-queue must be >= 0"), std::string::npos) << bad.err;
  // 0 was accepted, and then every POST got a 413.
  auto no_body = run_chainlm(dir, "serve --model " + quote(air) + " --max-body-bytes 0");
  EXPECT_NE(no_body.exit_code, 0);
  EXPECT_NE(no_body.err.find("--max-body-bytes must be positive"), std::string::npos)
      << no_body.err;
}

}  // namespace
}  // namespace chainlm

namespace chainlm {
namespace {

// A server whose sessions cannot fit its memory budget refuses to start, with the estimate;
// without --max-sessions it takes as many as fit, up to a full decoding batch.
TEST_F(ServeTest, RefusesToStartWhenTheSessionsDoNotFitMemory) {
  auto model = load_model(air);
  auto tokenizer = load_tokenizer(find_tokenizer_in_dir(air));
  ServeOptions o = one_thread();
  o.port = 0;
  o.max_sessions = 4;
  o.threads = 4;
  InferenceServer fits(*model, *tokenizer, o);
  const uint64_t need = fits.estimated_memory().total();
  o.memory_limit = need;
  EXPECT_NO_THROW(InferenceServer(*model, *tokenizer, o));
  o.memory_limit = need - 1;
  try {
    InferenceServer refused(*model, *tokenizer, o);
    ADD_FAILURE() << "started beyond its memory budget";
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("serve needs an estimated"), std::string::npos) << msg;
    EXPECT_NE(msg.find("4 sessions at 64 tokens"), std::string::npos) << msg;
    EXPECT_NE(msg.find("--max-sessions"), std::string::npos) << msg;
  }

  // Without --max-sessions the server takes a full decoding batch (8 sessions), or as many as
  // its memory budget holds, at least one.
  o.memory_limit = 0;
  o.max_sessions = 0;
  EXPECT_EQ(InferenceServer(*model, *tokenizer, o).max_sessions(), 8);
  o.max_sessions = 1;
  const uint64_t one = InferenceServer(*model, *tokenizer, o).estimated_memory().total();
  o.max_sessions = 2;
  const uint64_t per_session = InferenceServer(*model, *tokenizer, o).estimated_memory().total() - one;
  o.max_sessions = 0;
  o.memory_limit = one + 2 * per_session;  // room for 3
  EXPECT_EQ(InferenceServer(*model, *tokenizer, o).max_sessions(), 3);
  o.memory_limit = one - 1;  // not even one: the memory check refuses it
  try {
    InferenceServer refused(*model, *tokenizer, o);
    ADD_FAILURE() << "started beyond its memory budget";
  } catch (const Error& e) {  // advising fewer sessions than one would not help
    const std::string msg = e.what();
    EXPECT_EQ(msg.find("--max-sessions"), std::string::npos) << msg;
    EXPECT_NE(msg.find("chainlm quantize"), std::string::npos) << msg;
  }
}

}  // namespace
}  // namespace chainlm
