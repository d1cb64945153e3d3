// --precision on the inference commands (docs/precision.md): bf16 runs give fp32's answers within
// bf16 rounding, report what they ran, and bad values are refused naming the valid ones.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <nlohmann/json.hpp>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::TempDir;
using testing::write_bytes;

class PrecisionCli : public ::testing::Test {
 protected:
  void SetUp() override {
    data = dir.file("data");
    test::make_byte_data_dir(test::numbered_lines("a small model reads a small text ", 300), data, 0.2);
    config = dir.file("config.json");
    write_bytes(config, R"({"dim": 32, "n_layers": 2, "n_heads": 4, "ffn_dim": 64, "vocab_size": 258,
                           "chains": [1, 1], "max_seq_len": 48})");
    run = dir.file("run");
    auto r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " +
                                  quote(run) + " --steps 30 --batch-size 4 --seq-len 32 --quiet");
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  TempDir dir;
  std::string data, config, run;
};

TEST_F(PrecisionCli, Bf16PerplexityIsWithinBf16RoundingOfFp32) {
  auto ppl = [&](const std::string& precision) {
    auto r = run_chainlm(dir, "eval ppl --model " + quote(run) + " --data " + quote(data + "/val.bin") +
                                  " --json --precision " + precision);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out);
  };
  const nlohmann::json fp32 = ppl("fp32"), bf16 = ppl("bf16");
  ASSERT_EQ(fp32["chains"].size(), 2u);
  for (int i = 0; i < 2; ++i) {
    const double a = fp32["chains"][i]["loss"].get<double>(), b = bf16["chains"][i]["loss"].get<double>();
    // A trained model's loss moves by far less than bf16's 2^-8 relative rounding of each operand.
    EXPECT_NEAR(b, a, std::ldexp(a, -8)) << "k=" << i + 1;
    EXPECT_NE(b, a) << "bf16 computed exactly fp32's loss: did it run in bf16?";
  }
  // Saved results say which weights ran (eval's JSON had no field for it).
  EXPECT_EQ(fp32["precision"], "fp32");
  EXPECT_EQ(bf16["precision"], "bf16");
}

TEST_F(PrecisionCli, GenerateAndBenchRunInBf16AndSayWhatTheyRan) {
  auto g = run_chainlm(dir, "generate --model " + quote(run) +
                                " --prompt 'a small' --max-tokens 6 --temperature 0 --json --precision bf16");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  EXPECT_EQ(nlohmann::json::parse(g.out)["tokens"].size(), 6u);
  auto b = run_chainlm(dir, "bench decode --model " + quote(run) +
                                " --precision bf16 --vs-fp32 --prompt-tokens 8 --tokens 4 --threads 1");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto j = nlohmann::json::parse(b.out);
  EXPECT_EQ(j["precision"], "bf16");
  EXPECT_LT(j["weight_bytes"].get<double>(), 0.55 * j["fp32_weight_bytes"].get<double>());
  EXPECT_GT(j["speedup_vs_fp32"].get<double>(), 0.0);
  // One token leaves no pair to compare (each turn's first is left out): it came out null.
  auto one =
      run_chainlm(dir, "bench decode --model " + quote(run) +
                           " --precision bf16 --vs-fp32 --prompt-tokens 8 --tokens 1 --threads 1");
  EXPECT_NE(one.exit_code, 0);
  EXPECT_NE(one.err.find("--vs-fp32 needs --tokens 2 or more (it is 1)"), std::string::npos)
      << one.err;
  // info says what the inference commands hold of an fp32 model (panels, where this CPU has
  // them), as bench decode measures it: it said only the smaller "as loaded".
  const auto info =
      nlohmann::json::parse(run_chainlm(dir, "info --json --model " + quote(run)).out);
  auto plain = run_chainlm(
      dir, "bench decode --model " + quote(run) + " --prompt-tokens 8 --tokens 2 --threads 1");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(info["weights"].value("bytes_in_inference", info["weights"]["bytes"]),
            nlohmann::json::parse(plain.out)["weight_bytes"]);
  // bench train beside fp32, a step of each in turn: with one step the speedup is that pair's.
  auto t = run_chainlm(
      dir, "bench train --config " + quote(config) +
               " --precision bf16 --vs-fp32 --steps 1 --batch-size 2 --seq-len 16 --threads 1");
  ASSERT_EQ(t.exit_code, 0) << t.err;
  const auto tj = nlohmann::json::parse(t.out);
  EXPECT_EQ(tj["precision"], "bf16");
  ASSERT_GT(tj["fp32_step_ms"].get<double>(), 0.0);
  EXPECT_NEAR(tj["speedup_vs_fp32"].get<double>(),
              tj["fp32_step_ms"].get<double>() / tj["step_ms"].get<double>(),
              1e-9 * tj["speedup_vs_fp32"].get<double>());
  EXPECT_NEAR(tj["fp32_tokens_per_s"].get<double>(),
              2 * 16 / (tj["fp32_step_ms"].get<double>() / 1e3),
              1e-9 * tj["fp32_tokens_per_s"].get<double>());
  auto p = run_chainlm(dir, "bench prefill --model " + quote(run) + " --precision bf16 --prompt-tokens 16");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  EXPECT_EQ(nlohmann::json::parse(p.out)["precision"], "bf16");
}

// The GEMM kernel rounds too: a run resumed under another oneDNN ISA (ONEDNN_MAX_CPU_ISA,
// another CPU) was not bit-identical while the trainer state read the same ("gemm": "onednn"),
// and nothing was said. It is recorded and compared; said under --quiet too.
TEST_F(PrecisionCli, AResumeOnAnotherGemmKernelSaysSo) {
  const std::string run = dir.file("kernels");
  testing::ScopedEnv gemm("CHAINLM_GEMM", "onednn");
  {
    testing::ScopedEnv isa("ONEDNN_MAX_CPU_ISA", "SSE41");
    auto a = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) +
                                  " --out " + quote(run) +
                                  " --steps 2 --batch-size 2 --seq-len 16 --threads 1 --quiet");
    ASSERT_EQ(a.exit_code, 0) << a.err;
  }
  const std::string state = testing::read_bytes(run + "/step-00000002/trainer_state.json");
  EXPECT_NE(state.find("\"gemm_kernel\": \"onednn sse41\""), std::string::npos) << state;
  auto b =
      run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 4 --threads 1 --quiet");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("resume: the steps so far ran on 1 thread(s) with onednn sse41 GEMMs"),
            std::string::npos)
      << b.err;
}

// The precision is how steps compute, not state: a run may change it on resume, and says so.
TEST_F(PrecisionCli, ARunMayChangePrecisionOnResumeAndSaysSo) {
  const std::string r2 = dir.file("run2");
  auto a = run_chainlm(
      dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " + quote(r2) +
               " --steps 3 --batch-size 2 --seq-len 16 --precision bf16 --threads 2");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.err.find("precision: bf16"), std::string::npos) << a.err;
  auto b = run_chainlm(
      dir, "train --out " + quote(r2) + " --resume --steps 5 --precision fp32 --threads 1");
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_NE(b.err.find("precision: bf16 until the checkpoint, fp32 from here on"), std::string::npos) << b.err;
  // Another thread count: the run goes on, not bit-identically, and says so.
  EXPECT_NE(b.err.find("resume: the steps so far ran on 2 thread(s)"), std::string::npos) << b.err;
  EXPECT_NE(b.err.find("(nor are they in another precision)"), std::string::npos) << b.err;
  EXPECT_EQ(b.err.find("ranks of"), std::string::npos) << b.err;
  // The log records each segment's precision, and the report says which steps ran in which
  // (it named the last segment's alone).
  const std::string log = testing::read_bytes(r2 + "/metrics.jsonl");
  EXPECT_NE(log.find("\"precision\":\"bf16\",\"ranks\":1,\"step\":0"), std::string::npos) << log;
  EXPECT_NE(log.find("\"event\":\"resumed\",\"gemm\":"), std::string::npos) << log;
  auto report =
      run_chainlm(dir, "report " + quote(r2) + " --no-plot --out " + quote(dir.file("r.md")));
  ASSERT_EQ(report.exit_code, 0) << report.err;
  const std::string md = testing::read_bytes(dir.file("r.md"));
  EXPECT_NE(md.find("| precision by steps | bf16 (steps 1-3), fp32 (steps 4-5) |"),
            std::string::npos)
      << md;
  // A further resume in the same precision is one segment with the last; a run whose start
  // predates the record (no precision at step 0) says its first steps are unrecorded.
  auto c = run_chainlm(
      dir, "train --out " + quote(r2) + " --resume --steps 7 --precision fp32 --threads 2");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.err.find("(--threads 1 and "), std::string::npos) << c.err;  // what keeps them
  EXPECT_NE(c.err.find("GEMMs (CHAINLM_GEMM, on a CPU with those kernels) keep them"),
            std::string::npos)
      << c.err;
  std::string log7 = testing::read_bytes(r2 + "/metrics.jsonl");
  auto report_says = [&](const std::string& row) {
    auto r = run_chainlm(
        dir, "report " + quote(r2) + " --no-plot --overwrite --out " + quote(dir.file("r.md")));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    const std::string text = testing::read_bytes(dir.file("r.md"));
    EXPECT_NE(text.find("| precision by steps | " + row + " |"), std::string::npos) << text;
  };
  report_says("bf16 (steps 1-3), fp32 (steps 4-7)");
  log7.replace(log7.find("\"precision\":\"bf16\","), 19, "");
  testing::write_bytes(r2 + "/metrics.jsonl", log7);
  report_says("unrecorded (steps 1-3), fp32 (steps 4-7)");
  std::string latest = testing::read_bytes(r2 + "/latest");
  while (!latest.empty() && std::isspace((unsigned char)latest.back())) latest.pop_back();
  const auto state = nlohmann::json::parse(testing::read_bytes(r2 + "/" + latest + "/trainer_state.json"));
  EXPECT_EQ(state["options"]["precision"], "fp32");
  EXPECT_EQ(state["step"], 7);
}

TEST_F(PrecisionCli, BadValuesAreRefusedNamingTheChoices) {
  for (const std::string& cmd :
       {"generate --model " + quote(run) + " --max-tokens 2", "eval ppl --model " + quote(run) + " --data " +
                                                                 quote(data + "/val.bin"),
        "bench decode --model " + quote(run), "serve --model " + quote(run) + " --port 0",
        "bench train --config " + quote(config) + " --steps 1",
        "train --config " + quote(config) + " --data " + quote(data) + " --out " + quote(dir.file("bad"))}) {
    auto r = run_chainlm(dir, cmd + " --precision fp16");
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_NE(r.err.find("fp16"), std::string::npos) << cmd << ": " << r.err;
    EXPECT_NE(r.err.find("bf16"), std::string::npos) << cmd << ": " << r.err;
  }
  auto r = run_chainlm(dir, "bench decode --model " + quote(run) + " --vs-fp32");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--vs-fp32"), std::string::npos) << r.err;
  r = run_chainlm(dir, "bench train --config " + quote(config) + " --steps 1 --vs-fp32");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--vs-fp32 compares --precision bf16 with fp32"), std::string::npos)
      << r.err;
  r = run_chainlm(dir, "bench train --config " + quote(config) +
                           " --steps 1 --precision bf16 --vs-fp32 --baseline");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--vs-fp32 and --baseline exclude each other"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace chainlm
