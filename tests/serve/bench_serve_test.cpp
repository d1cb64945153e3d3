// `chainlm bench serve`: the load generator's lines (one per concurrency, every request decoding
// all its tokens with EOS ignored, the scheduler's batch figures) and its refusals.
#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <tuple>

#include "cli/run_cli.h"
#include "core/error.h"
#include "serve_test_util.h"

namespace chainlm {
namespace {

using nlohmann::json;
using testing::quote;
using testing::run_chainlm;
using testing::TempDir;

TEST(BenchServe, PrintsALinePerConcurrencyWithEveryTokenDecoded) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);  // random weights: EOS comes early unless ignored
  auto r = run_chainlm(
      dir, "bench serve --model " + quote(model) +
               " --concurrency 1,3 --tokens 20 --prompt-tokens 4 --chains mix --threads 1"
               " --stream-interval-ms 5");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::vector<json> got;
  for (std::string line; std::getline(lines, line);) got.push_back(json::parse(line));
  ASSERT_EQ(got.size(), 2u) << r.out;
  EXPECT_EQ(got[0]["concurrency"], 1);
  EXPECT_EQ(got[1]["concurrency"], 3);
  EXPECT_EQ(got[0]["requests"], 4);  // max(4, 2 x concurrency)
  EXPECT_EQ(got[1]["requests"], 6);
  for (const json& j : got) {
    EXPECT_EQ(j["completion_tokens"], j["requests"].get<int>() * 20) << j.dump();
    EXPECT_GT(j["tokens_per_s"].get<double>(), 0);
    EXPECT_LE(j["first_token_ms_p50"].get<double>(), j["latency_ms_p50"].get<double>());
    EXPECT_GE(j["rows_per_step"].get<double>(), 1.0);
    EXPECT_LE(j["rows_per_step"].get<double>(), j["concurrency"].get<double>());
    EXPECT_EQ(j["decode_threads"], 1) << "--threads 1";
    EXPECT_EQ(j["stream_interval_ms"], 5);
  }
  EXPECT_EQ(got[0]["rows_per_step"], 1.0);  // one client: never two rows in a step
  EXPECT_EQ(got[0]["speedup_vs_first_level"], 1.0);
}

TEST(BenchServe, RoundsTakeTurnsAndEndWithEachLevelsMedians) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  auto r = run_chainlm(
      dir, "bench serve --model " + quote(model) +
               " --concurrency 1,2 --tokens 6 --prompt-tokens 4 --threads 1 --rounds 3");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::istringstream lines(r.out);
  std::vector<json> got;
  for (std::string line; std::getline(lines, line);) got.push_back(json::parse(line));
  ASSERT_EQ(got.size(), 8u) << r.out;  // 3 rounds x 2 levels, then a summary per level
  std::vector<double> tokens_per_s[2], speedup[2];
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(got[i]["round"], 1 + i / 2) << got[i].dump();
    EXPECT_EQ(got[i]["concurrency"], i % 2 ? 2 : 1) << "levels in turn";
    EXPECT_FALSE(got[i].contains("summary"));
    tokens_per_s[i % 2].push_back(got[i]["tokens_per_s"]);
    speedup[i % 2].push_back(got[i]["speedup_vs_first_level"]);
    // Each round's speedups are against that round's first level.
    EXPECT_DOUBLE_EQ(
        got[i]["speedup_vs_first_level"].get<double>(),
        got[i]["tokens_per_s"].get<double>() / got[i - i % 2]["tokens_per_s"].get<double>());
  }
  for (int l = 0; l < 2; ++l) {
    const json& sum = got[6 + l];
    EXPECT_EQ(sum["summary"], true);
    EXPECT_EQ(sum["concurrency"], l ? 2 : 1);
    EXPECT_EQ(sum["rounds"], 3);
    std::sort(tokens_per_s[l].begin(), tokens_per_s[l].end());
    std::sort(speedup[l].begin(), speedup[l].end());
    EXPECT_EQ(sum["tokens_per_s_median"].get<double>(), tokens_per_s[l][1]);
    EXPECT_EQ(sum["tokens_per_s_min"].get<double>(), tokens_per_s[l][0]);
    EXPECT_EQ(sum["tokens_per_s_max"].get<double>(), tokens_per_s[l][2]);
    EXPECT_EQ(sum["speedup_vs_first_level_median"].get<double>(), speedup[l][1]);
    EXPECT_EQ(sum["speedup_vs_first_level_min"].get<double>(), speedup[l][0]);
    EXPECT_EQ(sum["speedup_vs_first_level_max"].get<double>(), speedup[l][2]);
  }
  EXPECT_EQ(got[6]["speedup_vs_first_level_median"], 1.0);
}

TEST(BenchServe, ServesTheWeightsInThePrecisionAsked) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "fp32"}, {"--precision bf16", "bf16"}, {"--quant q8_0", "q8_0"}};
  for (const auto& [flags, format] : cases) {
    auto r =
        run_chainlm(dir, "bench serve --model " + quote(model) +
                             " --concurrency 2 --tokens 6 --prompt-tokens 4 --threads 1 " + flags);
    ASSERT_EQ(r.exit_code, 0) << flags << ": " << r.err;
    const json j = json::parse(r.out.substr(0, r.out.find('\n')));
    EXPECT_EQ(j["precision"], format) << flags;
    EXPECT_EQ(j["kv_cache"], format == "fp32" ? "f32" : "f16")
        << flags;  // auto: f16 beside narrow weights
    EXPECT_EQ(j["completion_tokens"], 4 * 6) << flags;
  }
}

TEST(BenchServe, RefusesBadArgumentsNamingThem) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true, 32);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--concurrency 1,x", "--concurrency: 'x' is not a whole number"},
      {"--concurrency 0", "--concurrency: must be in 1..65536 (got 0)"},
      {"--tokens 8 --chains 7", "--chains takes all, mix or a chain count in 1..3 (got '7')"},
      {"--tokens 40",
       "BOS + a prompt of 16 + --tokens 40 = 57 exceeds the model's max_seq_len 32 + 1"},
      {"--tokens 17 --prompt-tokens 16",
       "BOS + --prompt-tokens 16 + --tokens 17 = 34 exceeds the model's max_seq_len 32 + 1"},
      {"--tokens 0", "--tokens: must be at least 1 (got 0)"},
      {"--prompt-tokens 0", "--prompt-tokens: must be at least 1 (got 0)"},
      {"--tokens 8 --quant q8_0 --precision bf16",
       "--quant and --precision bf16 exclude each other"},
      {"--tokens 8 --quant q5", "--quant: q5 not in {q8_0,q4_0}"},
      {"--tokens 8 --rounds 0", "--rounds: must be in 1..1000 (got 0)"},
      {"--tokens 8 --stream-interval-ms -1", "--stream-interval-ms: must be in 0..10000 (got -1)"},
  };
  for (const auto& [flags, message] : cases) {
    auto r = run_chainlm(dir, "bench serve --model " + quote(model) + " --threads 1 " + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_NE(r.err.find(message), std::string::npos) << flags << ": " << r.err;
  }  // The last token is sampled at the last position: 16 + 1 + 16 = max_seq_len + 1 fits, as in
  // generate (it was refused).
  auto full = run_chainlm(dir, "bench serve --model " + quote(model) +
                                   " --threads 1 --concurrency 1 --requests 1 --tokens 16");
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_EQ(json::parse(full.out.substr(0, full.out.find('\n')))["completion_tokens"], 16)
      << full.out;
}

// The defaults (prompts of 16, then 128 tokens) failed on any model of fewer than 144 positions,
// the quickstart model's 128 among them, where bench decode's fit: they shrink in proportion,
// saying so; a length given stays, and only the other one shrinks.
TEST(BenchServe, DefaultLengthsShrinkToTheModelsContext) {
  TempDir dir;
  const std::string model = dir.file("model");
  testing::write_tiny_model(model, true, 32);
  const std::vector<std::tuple<std::string, int, int>> cases = {
      {"", 4, 28},  // 32 x 128 / 144 = 28 tokens, 4 for the prompt
      {"--tokens 17", 15, 17},
      {"--prompt-tokens 20", 20, 12}};
  for (const auto& [flags, prompt, tokens] : cases) {
    auto r = run_chainlm(dir, "bench serve --model " + quote(model) +
                                  " --threads 1 --concurrency 1 --requests 1 " + flags);
    ASSERT_EQ(r.exit_code, 0) << flags << ": " << r.err;
    EXPECT_NE(r.err.find(cat("prompts of ", prompt, " tokens, then ", tokens,
                             " generated (the default did not fit the model's 32 positions)")),
              std::string::npos)
        << flags << ": " << r.err;
    const json j = json::parse(r.out.substr(0, r.out.find('\n')));
    EXPECT_EQ(j["prompt_tokens"], prompt) << flags;
    EXPECT_EQ(j["completion_tokens"], tokens) << flags;
  }
  auto fits = run_chainlm(dir, "bench serve --model " + quote(model) +
                                   " --threads 1 --concurrency 1 --requests 1 --tokens 8");
  ASSERT_EQ(fits.exit_code, 0) << fits.err;
  EXPECT_EQ(fits.err.find("did not fit"), std::string::npos) << fits.err;
}

}  // namespace
}  // namespace chainlm
