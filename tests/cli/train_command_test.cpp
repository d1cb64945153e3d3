// End-to-end checks of `chainlm train` and `chainlm generate` on bad and good input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

const char* kGoodConfig =
    R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 258,
        "chains": [1, 1], "kv_share": true, "max_seq_len": 32})";

class TrainCommand : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(400, "the quick brown fox jumps over the lazy dog ");
    write_bytes(dir.file("good.json"), kGoodConfig);
  }
  testing::RunResult train(const std::string& config_json, const std::string& out, const std::string& extra = "") {
    write_bytes(dir.file("config.json"), config_json);
    return run_chainlm(dir, "train --config " + quote(dir.file("config.json")) + " --data " + quote(data) +
                                " --out " + quote(out) + " --steps 2 --batch-size 2 --seq-len 16 --quiet " + extra);
  }
};

TEST_F(TrainCommand, RejectsBadConfigsNamingTheProblem) {
  struct Case {
    std::string json, expect;
  };
  const std::vector<Case> cases = {
      {"{not json", "invalid JSON"},
      {R"({"dim": 32})", "missing required field 'n_layers'"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258, "colour": 1})", "unknown field 'colour'"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": "many"})", "'vocab_size' has the wrong type"},
      {R"({"dim": 30, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258})", "multiple of 'n_heads'"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258, "chains": [1, 2]})", "multiple of sum(chains)"},
      {R"({"dim": 48, "n_layers": 1, "n_heads": 4, "ffn_dim": 66, "vocab_size": 258, "chains": [1, 3]})", "ffn_dim*c_i/sum(chains)"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 258, "chains": [3, 1]})", "whole KV heads"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64, "vocab_size": 258, "chains": [3, 1], "kv_share": true})", "CoLM-Air"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258, "chains": [1, 0]})", "positive integer"},
      {R"({"dim": 32, "n_layers": 0, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258})", "'n_layers' must be positive"},
      {R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64, "vocab_size": 100})", "vocab_size is 100"},
  };
  for (const auto& c : cases) {
    auto r = train(c.json, dir.file("run_bad"));
    EXPECT_NE(r.exit_code, 0) << c.json;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << "config " << c.json << "\nstderr: " << r.err;
    EXPECT_FALSE(fs::exists(dir.file("run_bad") + "/latest"));
  }
}

TEST_F(TrainCommand, MissingOrEmptyDataIsAClearError) {
  auto r = run_chainlm(dir, "train --config " + quote(dir.file("good.json")) + " --data " +
                                quote(dir.file("nowhere")) + " --out " + quote(dir.file("r")) + " --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("nowhere"), std::string::npos) << r.err;
  // A split too short for one window.
  write_token_shard(data + "/train.bin", {256, 1, 2}, 258);
  r = train(kGoodConfig, dir.file("r2"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("train.bin"), std::string::npos) << r.err;
}

TEST_F(TrainCommand, TrainsResumesAndNeverOverwritesARun) {
  const std::string run = dir.file("run");
  auto r = train(kGoodConfig, run);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string ckpt = run + "/step-00000002";
  ASSERT_TRUE(fs::exists(ckpt + "/model.safetensors"));
  const std::string weights = read_bytes(ckpt + "/model.safetensors");

  // Training again into the same directory without --resume is refused.
  r = train(kGoodConfig, run);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--resume"), std::string::npos) << r.err;
  EXPECT_EQ(read_bytes(ckpt + "/model.safetensors"), weights);

  // Resume to step 4.
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(run + "/step-00000004/model.safetensors"));
  EXPECT_EQ(read_bytes(run + "/latest"), "step-00000004\n");

  // Generation works with every sub-model, with text on stdout only.
  for (int k : {1, 2}) {
    r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt 'the ' --max-tokens 5 --temperature 0 --chains " + std::to_string(k));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out.rfind("the ", 0), 0u) << r.out;
  }
  r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt 'the ' --max-tokens 5 --temperature 0 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_tokens"][0], 256);  // BOS of the byte tokenizer
  EXPECT_EQ(j["tokens"].size(), 5u);
}

TEST_F(TrainCommand, CorruptCheckpointsAreRefusedAndLeftAlone) {
  const std::string run = dir.file("run");
  ASSERT_EQ(train(kGoodConfig, run).exit_code, 0);
  const std::string ckpt = run + "/step-00000002";
  const std::string weights = read_bytes(ckpt + "/model.safetensors");

  // Truncated weights.
  write_bytes(ckpt + "/model.safetensors", weights.substr(0, weights.size() / 2));
  auto r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("model.safetensors"), std::string::npos) << r.err;
  r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(run + "/step-00000004"));

  // Shapes that disagree with config.json.
  write_bytes(ckpt + "/model.safetensors", weights);
  auto cfg = nlohmann::json::parse(read_bytes(ckpt + "/config.json"));
  cfg["ffn_dim"] = 128;
  write_bytes(ckpt + "/config.json", cfg.dump());
  r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("shape"), std::string::npos) << r.err;

  // A `latest` that names nothing.
  write_bytes(run + "/latest", "step-99\n");
  r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("step-99"), std::string::npos) << r.err;
}

TEST_F(TrainCommand, GenerateRejectsBadOptions) {
  const std::string run = dir.file("run");
  ASSERT_EQ(train(kGoodConfig, run).exit_code, 0);
  for (const std::string& bad : {std::string("--chains 0"), std::string("--chains 3"),
                                 std::string("--temperature -1"), std::string("--top-p 0")}) {
    auto r = run_chainlm(dir, "generate --model " + quote(run) + " --max-tokens 2 " + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_FALSE(r.err.empty()) << bad;
  }
  std::string long_prompt(100, 'x');  // 101 byte tokens > max_seq_len 32
  auto r = run_chainlm(dir, "generate --model " + quote(run) + " --prompt " + long_prompt);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("max_seq_len"), std::string::npos) << r.err;
}

// A resume carries the tokenizer through a temporary directory: an empty TMPDIR (which POSIX
// and mktemp read as /tmp) stopped it with "temp_directory_path: No such file or directory", and
// a missing one said nothing of TMPDIR (a user trial).
TEST_F(TrainCommand, TmpdirEmptyMeansTmpAndAMissingOneIsNamed) {
  const std::string run = dir.file("run");
  ASSERT_EQ(train(kGoodConfig, run).exit_code, 0);
  const std::string resume = std::string("'") + CHAINLM_BINARY + "' train --quiet --out " +
                             quote(run) + " --resume --steps ";
  auto r = testing::run_shell(dir, "env TMPDIR= " + resume + "3");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = testing::run_shell(dir, "env TMPDIR=" + quote(dir.file("nowhere")) + " " + resume + "4");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("TMPDIR=" + dir.file("nowhere") + " is not a directory"), std::string::npos)
      << r.err;
  // What a run killed there left (the crash tests' kills left dozens in /tmp) goes at the next
  // run; a live process's stays, and nothing of this run's is left.
  const std::string tmp = dir.file("tmp");
  std::filesystem::create_directories(tmp + "/chainlm-tokenizer-2147483646.0");  // no such process
  const std::string live = tmp + "/chainlm-tokenizer-" + std::to_string(::getpid()) + ".0";
  std::filesystem::create_directories(live);
  r = testing::run_shell(dir, "env TMPDIR=" + quote(tmp) + " " + resume + "4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(std::filesystem::exists(live));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(tmp),
                          std::filesystem::directory_iterator()),
            1);
}

// A command whose stdout carries only a status line wrote its output, then exited 1 because the
// status line met a full disk, and a retry refused the output it had written (a user trial).
TEST_F(TrainCommand, AStatusLineToAFullStdoutIsAWarning) {
  auto r = testing::run_shell(
      dir, std::string("'") + CHAINLM_BINARY + "' prepare --tokenizer byte --input " +
               quote(dir.file("good.json")) + " --split lines --val-fraction 0.5 --out " +
               quote(dir.file("data2")) + " >/dev/full");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: the status line could not be written to standard output"),
            std::string::npos)
      << r.err;
  EXPECT_TRUE(fs::exists(dir.file("data2/train.bin")));
  // Where stdout is the output (info, generate, eval), it stays an error.
  r = testing::run_shell(dir, std::string("'") + CHAINLM_BINARY + "' info --model " +
                                  quote(dir.file("nothing")) + " >/dev/full");
  EXPECT_NE(r.exit_code, 0);
  r = testing::run_shell(dir, std::string("'") + CHAINLM_BINARY + "' --help >/dev/full");
  EXPECT_EQ(r.exit_code, 1) << "help to a full disk";
  EXPECT_NE(r.err.find("could not be written to standard output"), std::string::npos) << r.err;
}

// `--out .` in a project directory, or `--out ~`: the run's files went in beside the user's with
// nothing said. Said now (nothing of theirs is touched); an empty or new directory says nothing.
TEST_F(TrainCommand, ANewRunBesideOtherFilesIsNoted) {
  fs::create_directories(dir.file("project/src"));
  write_bytes(dir.file("project/README"), "mine\n");
  auto r = train(kGoodConfig, dir.file("project"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("train: note: " + dir.file("project") +
                       " already holds 2 entries ('README', 'src') and is not a run"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(read_bytes(dir.file("project/README")), "mine\n");
  fs::create_directories(dir.file("empty"));
  r = train(kGoodConfig, dir.file("empty"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.err.find("note:"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace chainlm
