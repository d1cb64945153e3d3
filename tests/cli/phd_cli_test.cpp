// PHD models through the command line: train, generate (with chains), bench, bad configs.
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "core/error.h"
#include "infer/session.h"
#include "model/checkpoint.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const char* kConfig =
    R"({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 1, "ffn_dim": 64,
        "vocab_size": 258, "chains": [1, 1, 2], "kv_share": true, "max_seq_len": 48,
        "phd": {"repeat": 3, "window": 4, "chunk": 8, "position_ids": "extended"}})";

class PhdCommands : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(300, "a small model reads a small text ");
    write_bytes(dir.file("config.json"), kConfig);
    run = dir.file("run");
    auto r = run_chainlm(dir, "train --config " + quote(dir.file("config.json")) + " --data " +
                                  quote(data) + " --out " + quote(run) +
                                  " --steps 3 --batch-size 2 --seq-len 16 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  std::string run;
};

// `info` and the training start line name the PHD settings (info used to say "kind CoLM-Air,
// chains [1,1,2]" and nothing of PHD).
TEST_F(PhdCommands, InfoAndTheStartLineNameThePhdSettings) {
  auto info = run_chainlm(dir, "info --model " + quote(run));
  ASSERT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("phd         PHD-CSWA-3-4-8: every token repeated 3 times"), std::string::npos)
      << info.out;
  auto j = nlohmann::json::parse(run_chainlm(dir, "info --json --model " + quote(run)).out);
  EXPECT_EQ(j["phd_name"], "PHD-CSWA-3-4-8");
  EXPECT_EQ(j["architecture"], "CoLM-Air + PHD-CSWA-3-4-8");  // as the server's /v1/models says
  // The hidden-token ring a session holds beside its cache (a user trial found it unshown,
  // though at a short context it is as large as the cache): what a session allocates.
  {
    auto model = load_model(run);
    InferenceSession session(*model);
    const long cache =
        2L * 2 * 48 * 8 * (long)sizeof(float);  // K+V, 2 layers, 48 positions, 1 KV head of 8
    EXPECT_EQ(j["phd_ring_bytes"].get<long>() + cache, (long)session.cache().bytes_allocated());
    EXPECT_EQ(j["phd_ring_bytes"].get<long>(), 2L * 2 * j["phd_ring_rows"].get<long>() * 8 * 4);
    EXPECT_NE(info.out.find(cat("a session holds a ring of ", j["phd_ring_rows"].get<int>(),
                                " hidden-token rows a layer")),
              std::string::npos)
        << info.out;
  }
  auto train = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4");
  ASSERT_EQ(train.exit_code, 0) << train.err;
  EXPECT_NE(train.err.find("chains [1,1,2] (CoLM-Air), PHD-CSWA-3-4-8"), std::string::npos) << train.err;
}

// A checkpoint's config.json edited by hand (the PHD window changed) resumed the run as another
// model with nothing said (a user trial): refused, naming what differs; the same model resumes.
TEST_F(PhdCommands, AResumeOfAnEditedCheckpointConfigIsRefused) {
  const std::string ckpt = resolve_checkpoint_dir(run);
  const std::string config_path = ckpt + "/config.json";
  const std::string original = testing::read_bytes(config_path);
  auto c = nlohmann::json::parse(original);
  c["phd"]["window"] = 2;
  write_bytes(config_path, c.dump(2));
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("config.json is not the model the run trained (it differs in: "
                       "phd.window 2 (the run's: 4);"),
            std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("chainlm train --init " + ckpt + " --out NEW"), std::string::npos) << r.err;
  EXPECT_EQ(resolve_checkpoint_dir(run), ckpt) << "nothing was trained";
  write_bytes(config_path, original);
  // A --config of another model given to the resume names each field it changes (it said only
  // "not the run's model", a user trial).
  auto other = nlohmann::json::parse(kConfig);
  other["phd"]["repeat"] = 2;
  other["dim"] = 64;
  write_bytes(dir.file("other.json"), other.dump());
  r = run_chainlm(dir, "train --config " + quote(dir.file("other.json")) + " --out " + quote(run) +
                           " --resume --steps 4 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(
      r.err.find("(not the run's model: dim 64 (the run's: 32), phd.repeat 2 (the run's: 3))"),
      std::string::npos)
      << r.err;
  EXPECT_EQ(resolve_checkpoint_dir(run), ckpt) << "nothing was trained";
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --quiet");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

// Greedy generation over the cache (bounded prefill, K-row decode steps, ring) picks the
// argmax of the full masked forward over the repeated sequence at every step.
TEST_F(PhdCommands, GreedyGenerationFollowsTheFullForward) {
  auto r = run_chainlm(dir, "generate --model " + quote(run) +
                                " --prompt 'a small model' --max-tokens 12 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  std::vector<int> seq = j["prompt_tokens"].get<std::vector<int>>();
  const std::vector<int> generated = j["tokens"].get<std::vector<int>>();
  ASSERT_FALSE(generated.empty());
  auto model = load_model(run);
  ASSERT_EQ(model->config().phd.name(), "PHD-CSWA-3-4-8");
  const int V = model->config().vocab_size;
  for (int t : generated) {
    std::vector<float> logits(seq.size() * V);
    model->logits(seq.data(), 1, (int)seq.size(), 3, logits.data());
    const float* last = logits.data() + (seq.size() - 1) * V;
    EXPECT_EQ(std::max_element(last, last + V) - last, t) << "after " << seq.size() << " tokens";
    seq.push_back(t);
  }
}

TEST_F(PhdCommands, ChainSchedulesWork) {
  auto r = run_chainlm(dir, "generate --model " + quote(run) +
                                " --prompt ab --max-tokens 6 --temperature 0 --chain-schedule 1:2,3:2,2 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const std::vector<int> want{1, 1, 3, 3, 2, 2};
  const size_t n = j["tokens"].size();  // greedy decoding may stop early at EOS
  ASSERT_GE(n, 1u);
  EXPECT_EQ(j["chains"].get<std::vector<int>>(), std::vector<int>(want.begin(), want.begin() + n));
}

TEST_F(PhdCommands, BenchesReportTheBaselineRatio) {
  const std::string cfg = quote(dir.file("config.json"));
  auto r = run_chainlm(dir, "bench train --config " + cfg + " --batch-size 2 --seq-len 16 --steps 1 --baseline");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["phd"], "PHD-CSWA-3-4-8");
  EXPECT_GT(j["step_ratio"].get<double>(), 0);
  r = run_chainlm(dir, "bench decode --config " + cfg + " --prompt-tokens 9 --tokens 5 --baseline");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["ratio"].get<double>(), 0);
  // The originals' cache is the ordinary model's; the ring adds W = 4 hidden tokens.
  const long width = 8, layers = 2;  // one KV head of 8 (CoLM-Air)
  EXPECT_EQ(j["kv_cache_bytes"].get<long>(),
            j["baseline_kv_cache_bytes"].get<long>() + 2 * 4 * layers * 4 * width);
  // Quantized, the same: the baseline's cache took "auto" as an ordinary quantized model's
  // (halves) while the PHD model's was fp32, and the ratio compared the two (a user trial).
  r = run_chainlm(dir, "bench decode --config " + cfg +
                           " --prompt-tokens 9 --tokens 5 --quant q8_0 --baseline");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["kv_cache"], "f32");
  EXPECT_EQ(j["baseline_kv_cache"], "f32");
  EXPECT_EQ(j["kv_cache_bytes"].get<long>(),
            j["baseline_kv_cache_bytes"].get<long>() + 2 * 4 * layers * 4 * width);
  r = run_chainlm(dir, "bench prefill --config " + cfg + " --prompt-tokens 40 --baseline");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  j = nlohmann::json::parse(r.out);
  // The last chunk holds 8 positions, but 2 layers with R = max(W, K-2) = 4 reach back only
  // ceil(2*4/(K-1)) + 1 = 5.
  EXPECT_EQ(j["hidden_positions"], 5);
  EXPECT_TRUE(j.contains("unbounded_prefill_ms") && j.contains("ratio") && j.contains("unbounded_ratio"));
  EXPECT_EQ(j["kv_cache"], "f32");  // PHD keeps fp32 caches; the field was missing from this line
  // --baseline needs a PHD model.
  write_bytes(dir.file("plain.json"), R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64,
                                         "vocab_size": 258, "max_seq_len": 48})");
  r = run_chainlm(dir, "bench train --config " + quote(dir.file("plain.json")) + " --batch-size 1 --seq-len 8 --steps 1 --baseline");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("is not a PHD model (no \"phd\" section, or its repeat is 1"),
            std::string::npos)
      << r.err;
  // A "phd" section of repeat 1 is no PHD model either: the message said it had no section.
  write_bytes(dir.file("k1.json"), R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64,
                                      "vocab_size": 258, "max_seq_len": 48, "phd": {"repeat": 1}})");
  r = run_chainlm(dir,
                  "bench decode --config " + quote(dir.file("k1.json")) + " --tokens 2 --baseline");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("is not a PHD model (no \"phd\" section, or its repeat is 1"),
            std::string::npos)
      << r.err;
  // bench prefill ran an ordinary model's --baseline without a word (a user trial).
  r = run_chainlm(dir, "bench prefill --config " + quote(dir.file("plain.json")) +
                           " --prompt-tokens 8 --baseline");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bench prefill: --baseline compares a PHD model"), std::string::npos)
      << r.err;
}

TEST_F(PhdCommands, BadPhdConfigsAreOneLineErrors) {
  const std::pair<const char*, const char*> cases[] = {
      {R"({"repeat": 0})", "'phd.repeat'"},
      {R"({"repeat": 2, "window": -3})", "'phd.window'"},
      {R"({"repeat": 2, "chunk": 8})", "'phd.chunk'"},
      {R"({"repeat": 2, "window": 48})", "larger than the sequence"},
      {R"({"repeat": 2, "position_ids": "both"})", "'position_ids'"}};
  for (const auto& [phd, needle] : cases) {
    std::string cfg = R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258,
                          "max_seq_len": 48, "phd": )";
    cfg += phd;
    cfg += "}";
    write_bytes(dir.file("bad.json"), cfg);
    auto r = run_chainlm(dir, "train --config " + quote(dir.file("bad.json")) + " --data " + quote(data) +
                                  " --out " + quote(dir.file("bad-run")) + " --steps 1 --quiet");
    EXPECT_NE(r.exit_code, 0) << phd;
    EXPECT_NE(r.err.find(needle), std::string::npos) << phd << ": " << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad-run/latest")));
  }
}

}  // namespace
}  // namespace chainlm
