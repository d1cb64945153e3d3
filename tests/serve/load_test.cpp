// Load: 200 completions at concurrency 8 against the loopback server (streamed and not, every
// sub-model); none may fail or come back malformed. Prints p50/p99 latency and tokens/s.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>

#include "serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

TEST(ServeLoad, TwoHundredRequestsAtConcurrencyEight) {
  testing::TempDir dir;
  testing::write_tiny_model(dir.file("model"), true, 128, /*dim=*/128, /*n_layers=*/4);
  ServeOptions o;
  o.threads = 2;
  o.max_sessions = 2;
  o.max_queue = 16;  // 8 clients: at most 6 wait
  testing::ServerUnderTest s(dir.file("model"), o);

  constexpr int kRequests = 200, kConcurrency = 8, kMaxTokens = 32;
  std::atomic<int> next{0}, failures{0};
  std::atomic<long> tokens{0};
  std::mutex m;
  std::vector<double> latencies;
  std::vector<std::string> problems;
  auto fail = [&](const std::string& what) {
    ++failures;
    std::lock_guard<std::mutex> lock(m);
    if (problems.size() < 5) problems.push_back(what);
  };

  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kConcurrency; ++c) {
    clients.emplace_back([&] {
      auto client = s.client();
      for (int i; (i = next++) < kRequests;) {
        const bool stream = i % 2 == 1;
        const int chains = 1 + i % 3;
        const json body = {{"prompt", "request " + std::to_string(i)},
                           {"max_tokens", kMaxTokens},
                           {"chains", chains},
                           {"seed", i},
                           {"temperature", 0.8},
                           {"stream", stream}};
        const auto t0 = Clock::now();
        auto r = client.Post("/v1/completions", body.dump(), "application/json");
        const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
        if (!r) {
          fail("request " + std::to_string(i) + ": " + httplib::to_string(r.error()));
          continue;
        }
        if (r->status != 200) {
          fail("request " + std::to_string(i) + ": status " + std::to_string(r->status) + " " +
               r->body);
          continue;
        }
        try {
          json last;
          int n = 0;
          if (stream) {
            const auto st = testing::parse_stream(r->body);
            if (!st.done) throw std::runtime_error("no [DONE]");
            last = st.last;
            n = (int)st.chains.size();
            for (int k : st.chains)
              if (k != chains) throw std::runtime_error("an event with the wrong chains");
          } else {
            last = json::parse(r->body);
            n = last["usage"]["completion_tokens"].get<int>();
            if (!last["choices"][0]["text"].is_string()) throw std::runtime_error("no text");
          }
          const std::string finish = last["choices"][0]["finish_reason"];
          if (finish != "length" && finish != "stop") throw std::runtime_error("bad finish_reason");
          // Fewer tokens only when the model produced EOS ("stop").
          if (last.at("usage").at("completion_tokens").get<int>() != n || n > kMaxTokens ||
              (n < kMaxTokens && finish != "stop"))
            throw std::runtime_error("bad completion_tokens");
          tokens += n;
          std::lock_guard<std::mutex> lock(m);
          latencies.push_back(ms);
        } catch (const std::exception& e) {
          fail("request " + std::to_string(i) + ": malformed (" + e.what() +
               "): " + r->body.substr(0, 300));
        }
      }
    });
  }
  for (auto& t : clients) t.join();
  const double secs = std::chrono::duration<double>(Clock::now() - start).count();

  EXPECT_EQ(failures, 0) << (problems.empty() ? "" : problems[0]);
  ASSERT_EQ(latencies.size(), (size_t)kRequests);
  std::sort(latencies.begin(), latencies.end());
  const double p50 = latencies[kRequests / 2], p99 = latencies[kRequests * 99 / 100];
  std::printf(
      "[load] %d requests, concurrency %d, %.2f s: p50 %.2f ms, p99 %.2f ms, %.0f requests/s, "
      "%ld tokens, %.0f tokens/s\n",
      kRequests, kConcurrency, secs, p50, p99, kRequests / secs, tokens.load(), tokens / secs);
  const json h = s.health();
  EXPECT_EQ(h["sessions_in_flight"], 0);
  EXPECT_EQ(h["queue_depth"], 0);
}

}  // namespace
}  // namespace chainlm
