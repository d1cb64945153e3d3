// `chainlm generate` options beyond the basics: chain schedules, JSON output, bad input.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

class GenerateCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string data = dir.file("data");
    test::make_byte_data_dir(test::numbered_lines("a small model reads a small text ", 300), data, 0.2);
    write_bytes(dir.file("config.json"),
                R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 64,
                    "vocab_size": 258, "chains": [1, 1, 2], "kv_share": true, "max_seq_len": 48})");
    run = dir.file("run");
    auto r = run_chainlm(dir, "train --config " + quote(dir.file("config.json")) + " --data " + quote(data) +
                                  " --out " + quote(run) + " --steps 2 --batch-size 2 --seq-len 16 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  TempDir dir;
  std::string run;
};

TEST_F(GenerateCommand, ChainScheduleIsReportedPerToken) {
  auto r = run_chainlm(dir, "generate --model " + quote(run) +
                                " --prompt ab --max-tokens 7 --temperature 0 --chain-schedule 1:2,3:3,2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["tokens"].size(), 7u) << r.out;
  EXPECT_EQ(j["chains"], nlohmann::json({1, 1, 3, 3, 3, 2, 2}));
  EXPECT_EQ(j["prompt_tokens"], nlohmann::json({256, 'a', 'b'}));
  EXPECT_TRUE(j.contains("prefill_ms") && j.contains("decode_ms_per_token") && j.contains("tokens_per_s"));
}

// Why generation ended is reported: --max-tokens past the context (max_seq_len 48) stops at the
// context and says so, rather than quietly giving fewer tokens than asked for.
TEST_F(GenerateCommand, ReportsWhyGenerationStopped) {
  const std::string base = "generate --model " + quote(run) + " --prompt ab --temperature 0";
  auto short_run = run_chainlm(dir, base + " --max-tokens 5 --json");
  ASSERT_EQ(short_run.exit_code, 0) << short_run.err;
  EXPECT_EQ(nlohmann::json::parse(short_run.out)["stop_reason"], "max_tokens");
  // What reproduces it is in it (the seed and sampling settings were not).
  const auto seeded = run_chainlm(
      dir, "generate --model " + quote(run) +
               " --prompt ab --max-tokens 2 --json --temperature 0.7 --top-k 5 --seed 42");
  ASSERT_EQ(seeded.exit_code, 0) << seeded.err;
  EXPECT_EQ(nlohmann::json::parse(seeded.out)["sampling"],
            nlohmann::json({{"temperature", 0.7f}, {"top_k", 5}, {"top_p", 1.0f}, {"seed", 42}}))
      << seeded.out;
  auto full = run_chainlm(dir, base + " --max-tokens 100 --json");
  ASSERT_EQ(full.exit_code, 0) << full.err;
  auto j = nlohmann::json::parse(full.out);
  EXPECT_EQ(j["stop_reason"], "max_seq_len");
  // 48 positions run through the model; the token sampled at the last one is the 49th.
  EXPECT_EQ(j["tokens"].size() + j["prompt_tokens"].size(), 49u) << full.out;
  auto text = run_chainlm(dir, base + " --max-tokens 100");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.err.find("the context is full (max_seq_len 48)"), std::string::npos) << text.err;
  auto text_short = run_chainlm(dir, base + " --max-tokens 5");
  EXPECT_EQ(text_short.err.find("context is full"), std::string::npos) << text_short.err;
}

TEST_F(GenerateCommand, ChainOnePrefillAndFullPrefillGiveTheSameText) {
  const std::string base = "generate --model " + quote(run) + " --prompt 'a small' --max-tokens 10 --temperature 0 --json";
  auto fast = run_chainlm(dir, base), full = run_chainlm(dir, base + " --full-prefill");
  ASSERT_EQ(fast.exit_code, 0) << fast.err;
  ASSERT_EQ(full.exit_code, 0) << full.err;
  EXPECT_EQ(nlohmann::json::parse(fast.out)["tokens"], nlohmann::json::parse(full.out)["tokens"]);
  EXPECT_EQ(full.err.find("warning"), std::string::npos) << full.err;  // a CoLM-Air model
}

TEST_F(GenerateCommand, RejectsBadSchedulesAndTokenizers) {
  for (const std::string& bad : {std::string("--chain-schedule 0"), std::string("--chain-schedule 5"),
                                 std::string("--chain-schedule 1,2"), std::string("--chain-schedule 1:x"),
                                 std::string("--chain-schedule 2:0,1"), std::string("--chains 2 --chain-schedule 1"),
                                 std::string("--tokenizer ") + quote(dir.file("config.json"))}) {
    auto r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 2 " + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.err.find("error"), std::string::npos) << bad << ": " << r.err;
  }
}

// Options and the prompt are checked before anything is printed (the prompt used to come out
// first, then the error); a negative thread count is an error, not "all cores".
TEST_F(GenerateCommand, ValidatesEverythingBeforePrintingThePrompt) {
  const std::string long_prompt(100, 'x');  // longer than max_seq_len 48
  for (const std::string& bad :
       {std::string("--prompt visible --top-p 2"), std::string("--prompt visible --temperature -1"),
        std::string("--prompt visible --chains 4"), std::string("--prompt visible --threads -2"),
        std::string("--prompt visible --seed -1"),
        std::string("--prompt visible --seed 99999999999999999999"),
        std::string("--prompt visible --temperature 1e39"), "--prompt " + long_prompt}) {
    auto r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 3 " + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_EQ(r.out, "") << bad;
    EXPECT_NE(r.err.find("error"), std::string::npos) << bad << ": " << r.err;
  }
  auto r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt visible --max-tokens 3 --threads -2");
  EXPECT_NE(r.err.find("--threads -2"), std::string::npos) << r.err;
  // 100,000 threads: a segmentation fault.
  r = run_chainlm(
      dir, "generate --model " + quote(run) + " --prompt visible --max-tokens 3 --threads 100000");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("--threads 100000: at most 4096"), std::string::npos) << r.err;
  // 1e39 became inf in the fp32 option: "temperature must be >= 0 (got inf)".
  r = run_chainlm(
      dir, "generate --model " + quote(run) + " --prompt visible --max-tokens 3 --top-p 1e39");
  EXPECT_NE(r.err.find("--top-p: 1e39 is beyond an fp32 number's range"), std::string::npos)
      << r.err;
  // Values out of range are named by their flags (the library's field names read "top_p" and
  // "max tokens").
  for (const std::string bad : {"--top-p 2", "--top-k -3", "--temperature -1"}) {
    r = run_chainlm(dir,
                    "generate --model " + quote(run) + " --prompt visible --max-tokens 3 " + bad);
    EXPECT_NE(r.err.find("error: " + bad.substr(0, bad.find(' ')) + " must be"), std::string::npos)
        << r.err;
  }
  r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt visible --max-tokens -1");
  EXPECT_NE(r.err.find("error: --max-tokens must be >= 0 (got -1)"), std::string::npos) << r.err;
  // "temperature must be >= 0 (got inf)" contradicted itself and dropped the flag's "--".
  r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt visible --temperature inf");
  EXPECT_NE(r.err.find("error: --temperature must be finite and >= 0 (got inf)"), std::string::npos)
      << r.err;
  // Nothing to decode: --json still says the threads it had (it said 0).
  r = run_chainlm(dir, "generate --json --threads 1 --model " + quote(run) +
                           " --prompt visible --max-tokens 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["threads"], 1) << r.out;
  auto ok = run_chainlm(dir, "generate --model " + quote(run) + " --prompt visible --max-tokens 3");
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out.rfind("visible", 0), 0u) << ok.out;
}

}  // namespace
}  // namespace chainlm
