// `chainlm train` and `chainlm serve` report peak memory and refuse, before they start, runs
// whose memory estimate does not fit (docs/reliability.md, "Memory").
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

// Activations and parameters dominate the process at batch 8 x 256 (about 300 MB in all).
const char* kMidConfig =
    R"({"dim": 256, "n_layers": 4, "n_heads": 8, "n_kv_heads": 2, "ffn_dim": 768, "vocab_size": 258,
        "chains": [1, 1], "kv_share": true, "max_seq_len": 256})";
// About 1.6e12 parameters: tens of terabytes to train.
const char* kHugeConfig =
    R"({"dim": 32768, "n_layers": 96, "n_heads": 256, "n_kv_heads": 256, "ffn_dim": 131072,
        "vocab_size": 258, "chains": [1], "max_seq_len": 256})";

class MemoryCli : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(2000, "the quick brown fox jumps over the lazy dog ");
    write_bytes(dir.file("mid.json"), kMidConfig);
    write_bytes(dir.file("huge.json"), kHugeConfig);
  }
  testing::RunResult train(const std::string& config, const std::string& out, const std::string& extra) {
    return run_chainlm(dir, "train --config " + quote(dir.file(config)) + " --data " + quote(data) +
                                " --out " + quote(out) + " --batch-size 8 --seq-len 256 --eval-windows 2 " + extra);
  }
};

TEST_F(MemoryCli, TrainingReportsItsPeakMemoryNearItsEstimate) {
  const std::string run = dir.file("run");
  auto r = train("mid.json", run, "--steps 2 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("peak memory "), std::string::npos) << r.err;
  const auto lines = test::read_metrics_lines(run);
  ASSERT_GE(lines.size(), 3u);
  ASSERT_TRUE(lines[0].contains("memory_estimate_bytes")) << lines[0];
  const double estimate = lines[0]["memory_estimate_bytes"];
  double peak = 0;
  for (const auto& l : lines)
    if (l.contains("peak_rss_bytes")) peak = std::max(peak, l["peak_rss_bytes"].get<double>());
  // The estimate is not far above what the process really held...
  EXPECT_GE(peak, 0.75 * estimate) << "peak " << peak << " estimate " << estimate;
#if !defined(__SANITIZE_ADDRESS__)
  // ...nor below it (AddressSanitizer's shadow and quarantine make the process larger than
  // the program's own allocations, so this half holds in ordinary builds only).
  EXPECT_LE(peak, 1.1 * estimate) << "peak " << peak << " estimate " << estimate;
#endif
}

TEST_F(MemoryCli, TrainingThatCannotFitIsRefusedBeforeItStarts) {
  // Over a budget given on the command line: the estimate and its parts are in the message.
  const std::string run = dir.file("run");
  auto r = train("mid.json", run, "--steps 2 --memory-limit 64M");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("train needs an estimated"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("activations for 8 x 256 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("64.00 MiB is available (--memory-limit)"), std::string::npos) << r.err;
  // The limit was given: the advice is to raise it, not to pass it.
  EXPECT_NE(r.err.find("or raise --memory-limit if the machine has more"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("--micro-batch"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(run));  // nothing was written

  // Gradient accumulation shrinks the activations enough to fit a budget the full batch does not.
  auto fits = train("mid.json", run, "--steps 1 --micro-batch 1 --memory-limit 200M --quiet");
  EXPECT_EQ(fits.exit_code, 0) << fits.err;
  auto full = train("mid.json", dir.file("run2"), "--steps 1 --memory-limit 200M --quiet");
  EXPECT_EQ(full.exit_code, 1) << full.err;

  // Over what this machine has: refused at once, before a byte of the model is allocated.
  auto huge = train("huge.json", dir.file("huge"), "--steps 1");
  EXPECT_EQ(huge.exit_code, 1);
  EXPECT_NE(huge.err.find("train needs an estimated"), std::string::npos) << huge.err;
  EXPECT_NE(huge.err.find("TiB"), std::string::npos) << huge.err;
  EXPECT_NE(huge.err.find("is available ("), std::string::npos) << huge.err;
  EXPECT_FALSE(fs::exists(dir.file("huge")));

  // Resuming into a budget that cannot hold the run is refused and leaves the run alone.
  const std::string before = testing::read_bytes((fs::path(run) / "latest").string());
  auto resumed = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 3 --memory-limit 64M");
  EXPECT_EQ(resumed.exit_code, 1);
  EXPECT_NE(resumed.err.find("train needs an estimated"), std::string::npos) << resumed.err;
  EXPECT_EQ(testing::read_bytes((fs::path(run) / "latest").string()), before);
  // A bf16 resume: the advice names --precision fp32, and says which options a resume keeps (it
  // advised a --batch-size the resume then refused).
  auto bf16 = run_chainlm(
      dir, "train --out " + quote(run) + " --resume --steps 3 --memory-limit 64M --precision bf16");
  EXPECT_EQ(bf16.exit_code, 1) << bf16.err;
  EXPECT_NE(bf16.err.find("--precision fp32 (bf16 adds its copies)"), std::string::npos)
      << bf16.err;
  EXPECT_NE(bf16.err.find("(on a new run: a resume keeps them)"), std::string::npos) << bf16.err;
}

TEST_F(MemoryCli, ServeRefusesSessionsThatCannotFit) {
  const std::string run = dir.file("run");
  auto r = train("mid.json", run, "--steps 1 --quiet");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto s = run_chainlm(dir, "serve --model " + quote(run) + " --port 0 --max-sessions 100 --memory-limit 100M");
  EXPECT_EQ(s.exit_code, 1);
  EXPECT_NE(s.err.find("serve needs an estimated"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("100 sessions at 256 tokens"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("--kv-cache f16"), std::string::npos) << s.err;
  EXPECT_NE(s.err.find("--memory-limit if the machine has more"), std::string::npos) << s.err;
  // bench serve names itself and advises no --memory-limit, which it does not take.
  auto b = run_chainlm(dir, "bench serve --model " + quote(run) +
                                " --concurrency 1 --max-sessions 100000 --tokens 2 --requests 1");
  EXPECT_EQ(b.exit_code, 1) << b.err;
  EXPECT_NE(b.err.find("bench serve needs an estimated"), std::string::npos) << b.err;
  EXPECT_EQ(b.err.find("--memory-limit"), std::string::npos) << b.err;
  // An empty --memory-limit meant no limit.
  auto empty = run_chainlm(dir, "serve --model " + quote(run) + " --port 0 --memory-limit ''");
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.err.find("--memory-limit: '' is not a size"), std::string::npos) << empty.err;
}

}  // namespace
}  // namespace chainlm
