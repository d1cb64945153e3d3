// Sample generations during training (issue 15, item 14): `train --sample-every N` prints greedy
// continuations of --sample-prompt from each chosen sub-model, logs them in metrics.jsonl, and
// they are what `generate` makes of the saved checkpoint; bad settings are refused up front.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "io/text_encoding.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::write_bytes;

class TrainingSamples : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(200, "the samples show what the model writes ");
    config = dir.file("config.json");
    write_bytes(config,
                R"({"dim": 24, "n_layers": 1, "n_heads": 3, "ffn_dim": 48, "vocab_size": 258,
                            "chains": [1, 1, 1], "max_seq_len": 32})");
  }
  std::string train_args(const std::string& out, long steps) const {
    return "train --config " + quote(config) + " --data " + quote(data) + " --out " + quote(out) +
           " --steps " + std::to_string(steps) +
           " --batch-size 2 --seq-len 16 --eval-every 4 --threads 1";
  }
  std::string config;
};

TEST_F(TrainingSamples, LoggedPrintedAndEqualToGenerate) {
  const std::string run = dir.file("run");
  auto r = run_chainlm(dir, train_args(run, 6) +
                                " --sample-every 4 --sample-prompt 'the sam' --sample-tokens 6" +
                                " --sample-chains 3,1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // At step 4 and at the last step (6), for chains 1 and 3 in order.
  std::vector<nlohmann::json> sampled;
  for (const auto& line : test::read_metrics_lines(run))
    if (line.contains("samples")) sampled.push_back(line);
  ASSERT_EQ(sampled.size(), 2u);
  EXPECT_EQ(sampled[0]["step"], 4);
  EXPECT_EQ(sampled[1]["step"], 6);
  for (const auto& line : sampled) {
    EXPECT_EQ(line["sample_prompt"], "the sam");
    ASSERT_EQ(line["samples"].size(), 2u);
    EXPECT_EQ(line["samples"][0]["chains"], 1);
    EXPECT_EQ(line["samples"][1]["chains"], 3);
    EXPECT_EQ(line["samples"][0]["tokens"], 6);
  }
  EXPECT_TRUE(contains(r.err, "step 6 | sample k=3 | the sam[")) << r.err;

  // The samples of the last step are the saved model's greedy continuations.
  for (int i = 0; i < 2; ++i) {
    const int k = sampled[1]["samples"][i]["chains"];
    auto g = run_chainlm(dir, "generate --model " + quote(run) +
                                  " --prompt 'the sam' --temperature 0 --max-tokens 6" +
                                  " --chains " + std::to_string(k));
    ASSERT_EQ(g.exit_code, 0) << g.err;
    // An untrained byte model may stop inside a character: metrics.jsonl holds valid UTF-8.
    EXPECT_EQ(replace_invalid_utf8(g.out),
              "the sam" + sampled[1]["samples"][i]["text"].get<std::string>() + "\n")
        << "k=" << k;
  }

  // The report shows them; --quiet keeps them out of the log but not out of metrics.jsonl.
  auto rep = run_chainlm(dir, "report " + quote(run));
  ASSERT_EQ(rep.exit_code, 0) << rep.err;
  EXPECT_TRUE(contains(read_bytes(run + "/report.md"), "## Samples"))
      << read_bytes(run + "/report.md");
  const std::string quiet = dir.file("quiet");
  r = run_chainlm(dir, train_args(quiet, 2) + " --sample-every 2 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(contains(r.err, "sample k=")) << r.err;
  int lines = 0;
  for (const auto& line : test::read_metrics_lines(quiet))
    if (line.contains("samples")) {
      ++lines;
      EXPECT_EQ(line["samples"].size(), 3u);  // every sub-model by default
      EXPECT_EQ(line["sample_prompt"], "");   // BOS alone
    }
  EXPECT_EQ(lines, 1);
}

// A sample that fills the context is all that generate gives there, the token sampled at the
// last position included (it stopped one token short, a docs trial).
TEST_F(TrainingSamples, ASampleFillingTheContextIsGeneratesWholeOutput) {
  const std::string run = dir.file("run"), prompt = "the samples show what the";  // 26 tokens of 32
  auto r =
      run_chainlm(dir, train_args(run, 2) +
                           " --sample-every 2 --sample-chains 1 --sample-prompt '" + prompt + "'");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  nlohmann::json sample;
  for (const auto& line : test::read_metrics_lines(run))
    if (line.contains("samples")) sample = line["samples"][0];
  ASSERT_FALSE(sample.is_null());
  auto g = run_chainlm(dir, "generate --json --model " + quote(run) + " --prompt '" + prompt +
                                "' --temperature 0 --max-tokens 100 --chains 1");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const auto j = nlohmann::json::parse(g.out);
  EXPECT_EQ(sample["tokens"], j["tokens"].size()) << g.out;
  EXPECT_EQ(prompt + sample["text"].get<std::string>(),
            replace_invalid_utf8(j["text"].get<std::string>()))
      << g.out;
  if (j["stop_reason"] == "max_seq_len") {
    EXPECT_EQ(sample["tokens"], 7);
  }
}

TEST_F(TrainingSamples, BadSettingsAreRefusedBeforeTraining) {
  const auto refused = [&](const std::string& flags, const std::string& message) {
    const std::string run = dir.file("bad");
    auto r = run_chainlm(dir, train_args(run, 2) + " --sample-every 1 " + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_TRUE(contains(r.err, message)) << flags << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(run + "/latest")) << flags;
  };
  refused("--sample-chains 4", "--sample-chains 4: 4 is outside 1..3");
  refused("--sample-chains 1,1", "1 is given twice");
  refused("--sample-chains one", "--sample-chains: 'one' is not an integer");
  refused("--sample-chains 1,", "--sample-chains: '1,' ends with a comma");
  refused("--sample-tokens -1", "--sample-tokens -1 must be at least 1");
  // A length past what the context leaves is named with the room there is (it said "no room").
  refused("--sample-tokens 30 --sample-prompt 'a long prompt'",
          "--sample-tokens 30 is more than the model's context of 32 tokens leaves after "
          "--sample-prompt (14 "
          "tokens, BOS included): at most 19 fit");
  refused("--sample-tokens 33",
          "--sample-tokens 33 is more than the model's context of 32 tokens leaves after "
          "BOS (no --sample-prompt: 1 token): at most 32 fit");
  refused("--sample-prompt '" + std::string(40, 'x') + "'",
          "41 tokens (BOS included), which leaves no room");
}

TEST_F(TrainingSamples, MayChangeOnResume) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2) + " --sample-every 2").exit_code, 0);
  auto r = run_chainlm(dir, "train --out " + quote(run) +
                                " --resume --steps 4 --sample-every 1 --sample-chains 2 "
                                "--sample-prompt hi --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(contains(r.err, "--sample-every 2 -> 1")) << r.err;
  EXPECT_TRUE(contains(r.err, "--sample-chains all -> 2")) << r.err;
  std::vector<long> steps;
  for (const auto& line : test::read_metrics_lines(run))
    if (line.contains("samples")) {
      steps.push_back(line["step"]);
      if (line["step"] > 2) {
        EXPECT_EQ(line["samples"].size(), 1u);
        EXPECT_EQ(line["samples"][0]["chains"], 2);
        EXPECT_EQ(line["sample_prompt"], "hi");
      }
    }
  EXPECT_EQ(steps, (std::vector<long>{2, 3, 4}));
}

}  // namespace
}  // namespace chainlm
