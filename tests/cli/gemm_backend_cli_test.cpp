// The GEMM backend from the command line (src/kernels/gemm_backend.h): CHAINLM_GEMM chooses it,
// a bad value is refused naming the choices, and training gives the same losses on OpenBLAS,
// on oneDNN's native kernels and on oneDNN held to a lower instruction set (ONEDNN_MAX_CPU_ISA),
// so the kernels of an AVX2-only machine are covered on any machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::ScopedEnv;
using testing::write_bytes;

class GemmBackendCli : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(300, "a small model reads a small text ");
    config = dir.file("config.json");
    write_bytes(config, R"({"dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "ffn_dim": 64,
                            "vocab_size": 258, "chains": [1, 1], "kv_share": true,
                            "max_seq_len": 32})");
  }
  // Per-step training losses of a short run (batch 4 x 32: every GEMM has more rows than the
  // few-row decode path) under the given environment.
  std::map<long, double> losses(const std::string& run, std::optional<std::string> gemm,
                                std::optional<std::string> max_isa,
                                const std::string& precision = "fp32") {
    ScopedEnv g("CHAINLM_GEMM", gemm), isa("ONEDNN_MAX_CPU_ISA", max_isa);
    auto r = run_chainlm(dir, "train --config " + quote(config) + " --data " + quote(data) +
                                  " --out " + quote(dir.file(run)) +
                                  " --steps 4 --batch-size 4 --seq-len 32 --threads 2 --quiet"
                                  " --precision " + precision);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    std::map<long, double> out;
    for (const auto& j : test::read_metrics_lines(dir.file(run)))
      if (j.contains("loss")) out[j["step"].get<long>()] = j["loss"].get<double>();
    return out;
  }
  std::string config;
};

// bench train's default sequence length fits the config (256 was refused by a config of 16).
TEST_F(GemmBackendCli, BenchTrainsDefaultSeqLenFitsTheConfig) {
  auto r = run_chainlm(
      dir, "bench train --config " + quote(config) + " --batch-size 2 --steps 1 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
  EXPECT_EQ(j["seq_len"], nlohmann::json::parse(testing::read_bytes(config))["max_seq_len"])
      << r.out;
}

TEST_F(GemmBackendCli, BadChoiceIsRefusedNamingTheChoices) {
  ScopedEnv g("CHAINLM_GEMM", "mkl");
  auto r = run_chainlm(dir, "bench train --config " + quote(config) +
                                " --batch-size 2 --seq-len 16 --steps 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("CHAINLM_GEMM='mkl': choose 'onednn' or 'openblas'"), std::string::npos)
      << r.err;
  // info --system says what is wrong instead of stopping; help needs no GEMM.
  auto info = run_chainlm(dir, "info --system");
  EXPECT_EQ(info.exit_code, 0) << info.err;
  EXPECT_NE(info.out.find("fp32 GEMM    none: CHAINLM_GEMM='mkl'"), std::string::npos) << info.out;
  EXPECT_EQ(run_chainlm(dir, "train --help").exit_code, 0);
  // Before anything is written, and in bf16, which runs no fp32 GEMM through the backend (a
  // typo passed silently there, and a fp32 run stopped only after making its run directory).
  for (const char* precision : {"fp32", "bf16"}) {
    const std::string out = dir.file(std::string("run-") + precision);
    auto t = run_chainlm(
        dir, "train --config " + quote(config) + " --data " + quote(data) + " --out " + quote(out) +
                 " --steps 1 --batch-size 2 --seq-len 16 --quiet --precision " + precision);
    EXPECT_NE(t.exit_code, 0) << precision;
    EXPECT_NE(t.err.find("CHAINLM_GEMM='mkl'"), std::string::npos) << t.err;
    EXPECT_FALSE(std::filesystem::exists(out)) << precision;
  }
}

// oneDNN ignores an ISA name it does not know without a word: said, and a known one (in any case)
// is not warned of.
TEST_F(GemmBackendCli, AnUnknownOnednnIsaIsWarnedOf) {
  for (const char* value : {"AVX-2", "AVX2 "}) {
    ScopedEnv isa("ONEDNN_MAX_CPU_ISA", value);
    auto r = run_chainlm(dir, "info --system");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find(std::string("warning: ONEDNN_MAX_CPU_ISA='") + value +
                         "' is not an instruction set"),
              std::string::npos)
        << r.err;
  }
  ScopedEnv isa("ONEDNN_MAX_CPU_ISA", "avx2");
  auto r = run_chainlm(dir, "info --system");
  EXPECT_EQ(r.err.find("warning"), std::string::npos) << r.err;
}

TEST_F(GemmBackendCli, BenchReportsTheBackendAndTheIsa) {
  for (const char* backend : {"onednn", "openblas"}) {
    ScopedEnv g("CHAINLM_GEMM", backend), isa("ONEDNN_MAX_CPU_ISA", "AVX2");
    auto r = run_chainlm(dir, "bench train --config " + quote(config) +
                                  " --batch-size 2 --seq-len 16 --steps 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
    EXPECT_EQ(j.at("gemm_backend"), backend);
    EXPECT_EQ(j.at("isa"), "avx2");
    EXPECT_EQ(j.at("precision"), "fp32");
    EXPECT_GT(j.at("peak_gflops").get<double>(), 0.0);
    EXPECT_GE(j.at("peak_gflops").get<double>(), j.at("sgemm_gflops").get<double>());
  }
}

// bench prefill's MFU (docs/precision.md says it reports bench train's fields; it had no mfu): the
// prompt's FLOP rate over the peak of the weights' precision, which bf16 weights measure in bf16.
TEST_F(GemmBackendCli, BenchPrefillReportsMfuAgainstItsPrecisionsPeak) {
  for (const std::string precision : {"fp32", "bf16"}) {
    auto r = run_chainlm(dir, "bench prefill --config " + quote(config) +
                                  " --prompt-tokens 16 --precision " + precision);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind("{\"bench\"")));
    EXPECT_EQ(j.at("precision"), precision);
    const double peak = j.at("peak_gflops").get<double>();
    ASSERT_GT(peak, 0.0) << r.out;
    EXPECT_NEAR(j.at("mfu").get<double>(), j.at("full_prefill_gflops").get<double>() / peak, 1e-9)
        << r.out;
    if (precision == "bf16") {
      EXPECT_EQ(peak,
                std::max({j.at("bf16_gflops").get<double>(), j.at("onednn_gflops").get<double>(),
                          j.at("sgemm_gflops").get<double>()}))
          << r.out;
    }
  }
}

// A bf16 bench line says whether attention's products ran in bf16: as info --system says.
TEST_F(GemmBackendCli, Bf16BenchSaysHowAttentionRan) {
  auto info = run_chainlm(dir, "info --system --json");
  ASSERT_EQ(info.exit_code, 0) << info.err;
  auto r = run_chainlm(dir, "bench train --config " + quote(config) +
                                " --batch-size 2 --seq-len 16 --steps 1 --precision bf16");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out.substr(r.out.rfind('{')));
  EXPECT_EQ(j.at("precision"), "bf16");
  EXPECT_EQ(j.at("attention_products"),
            nlohmann::json::parse(info.out).at("attention_bf16_products"));
}

TEST_F(GemmBackendCli, InfoSystemNamesTheKernelsInUse) {
  {
    ScopedEnv g("CHAINLM_GEMM", "onednn"), isa("ONEDNN_MAX_CPU_ISA", "SSE41");
    auto r = run_chainlm(dir, "info --system --json");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j.at("onednn_isa"), "sse41");
    EXPECT_EQ(j.at("onednn_max_cpu_isa_env"), "SSE41");
    EXPECT_EQ(j.at("gemm").at("fp32"), "onednn");
    // Held below AVX512-BF16, bf16 GEMMs run on rounded operands through the fp32 kernels.
    EXPECT_EQ(j.at("gemm").at("bf16"), "emulated on onednn");
    EXPECT_FALSE(j.at("cpu").get<std::string>().empty());
    EXPECT_FALSE(j.at("openblas_core").get<std::string>().empty());
    // Every x86-64 CPU this runs on has AVX2 (the build targets it); AVX-512 or not varies.
    const auto features = j.at("features");
    EXPECT_NE(std::find(features.begin(), features.end(), "avx2"), features.end()) << features;
    // bf16 attention products follow the build (not oneDNN's ISA), and only CPUs with
    // AVX512-BF16 can have them.
    const std::string attention = j.at("attention_bf16_products");
    EXPECT_TRUE(attention == "bf16" || attention == "fp32") << attention;
    if (attention == "bf16") {
      EXPECT_NE(std::find(features.begin(), features.end(), "avx512_bf16"), features.end()) << features;
    }
    // fp32 inference weights go into panels only where the build has the 512-bit kernel, which
    // only AVX-512 CPUs run.
    const std::string weights = j.at("fp32_inference_weights");
    EXPECT_TRUE(weights == "panels" || weights == "row-major") << weights;
    if (weights == "panels") {
      EXPECT_NE(std::find(features.begin(), features.end(), "avx512f"), features.end()) << features;
    }
  }
  ScopedEnv g("CHAINLM_GEMM", "openblas");
  auto r = run_chainlm(dir, "info --system");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("fp32 GEMM    openblas"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("attention    "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("fp32 infer   weights "), std::string::npos) << r.out;
  r = run_chainlm(dir, "info");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("give --model (a model to describe) or --system"), std::string::npos) << r.err;
}

TEST_F(GemmBackendCli, TrainingLossesAgreeAcrossBackendsAndInstructionSets) {
  const auto native = losses("native", "onednn", std::nullopt);
  const auto sse = losses("sse41", "onednn", "SSE41");
  const auto openblas = losses("openblas", "openblas", std::nullopt);
  ASSERT_EQ(native.size(), 4u);
  ASSERT_EQ(sse.size(), 4u);
  ASSERT_EQ(openblas.size(), 4u);
  // Four steps of fp32 training with differently ordered sums: the losses agree to a few units
  // in the sixth digit (a wrong kernel would be off in the first).
  for (const auto& [step, loss] : native) {
    EXPECT_NEAR(sse.at(step), loss, 1e-4 * loss) << "step " << step;
    EXPECT_NEAR(openblas.at(step), loss, 1e-4 * loss) << "step " << step;
  }
}

// bf16 training runs on oneDNN's bf16 kernels where the CPU has them and on bf16-rounded operands
// through the fp32 kernels elsewhere (AVX2, or oneDNN held to AVX2 here): the same bf16
// products, summed in a different order, so the same losses to well within bf16 rounding.
TEST_F(GemmBackendCli, Bf16TrainingAgreesOnAndOffBf16Instructions) {
  const auto native = losses("bf16_native", std::nullopt, std::nullopt, "bf16");
  const auto avx2 = losses("bf16_avx2", std::nullopt, "AVX2", "bf16");
  const auto fp32 = losses("fp32", std::nullopt, std::nullopt);
  ASSERT_EQ(native.size(), 4u);
  ASSERT_EQ(avx2.size(), 4u);
  for (const auto& [step, loss] : native) {
    EXPECT_NEAR(avx2.at(step), loss, 1e-3 * loss) << "step " << step;
    EXPECT_NEAR(fp32.at(step), loss, std::ldexp(loss, -7)) << "step " << step;
  }
}

}  // namespace
}  // namespace chainlm

namespace chainlm {
namespace {

#if !defined(__SANITIZE_ADDRESS__)  // (AddressSanitizer cannot start under ulimit -v)
// Under an address-space limit too small for OpenBLAS's start: every command that needs no
// OpenBLAS runs (linked in, its start looped for ever before main, even for --version), and
// training on it is refused with the way out rather than hanging. `timeout` ends a hang.
TEST_F(GemmBackendCli, AnAddressSpaceLimitTooSmallForOpenBlasIsAnErrorNotAHang) {
  const std::string binary = std::string("'") + CHAINLM_BINARY + "' ";
  auto limited = [&](const std::string& env, const std::string& args) {
    const std::string err = dir.file("limited.err");
    const std::string cmd =
        "ulimit -v 300000; " + env + " timeout 60 " + binary + args + " >/dev/null 2>" + quote(err);
    const int status = std::system(("bash -c " + quote(cmd)).c_str());
    return std::make_pair(WIFEXITED(status) ? WEXITSTATUS(status) : -1, testing::read_bytes(err));
  };
  auto [code, err] = limited("", "--version");
  EXPECT_EQ(code, 0) << err;
  std::tie(code, err) =
      limited("CHAINLM_GEMM=openblas", "train --config " + quote(config) + " --data " +
                                           quote(data) + " --out " + quote(dir.file("run")) +
                                           " --steps 1 --batch-size 4 --seq-len 32 --threads 2");
  EXPECT_EQ(code, 1) << err;  // not 124, timeout's
  EXPECT_NE(err.find("cannot start OpenBLAS"), std::string::npos) << err;
  EXPECT_NE(err.find("CHAINLM_GEMM=onednn"), std::string::npos) << err;
}
#endif

}  // namespace
}  // namespace chainlm
