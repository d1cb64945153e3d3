// How idle OpenMP threads wait (src/core/wait_policy.h): training-type commands start themselves
// again with OMP_WAIT_POLICY=passive, inference keeps libgomp's default, and a policy the user
// set is never replaced. Each bench command reports the policy its process ran with.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "run_cli.h"

namespace chainlm {
namespace {

using testing::quote;
using testing::run_chainlm;
using testing::ScopedEnv;
using testing::TempDir;
using testing::write_bytes;

class WaitPolicy : public ::testing::Test {
 protected:
  void SetUp() override {
    config = dir.file("config.json");
    write_bytes(config, R"({"dim": 32, "n_layers": 1, "n_heads": 4, "ffn_dim": 64,
                            "vocab_size": 258, "max_seq_len": 32})");
  }
  // The policy a bench command's JSON line reports.
  std::string reported(const std::string& bench) {
    const std::string args = bench == "train" ? " --batch-size 1 --seq-len 8 --steps 1"
                                              : " --prompt-tokens 4 --tokens 4";
    auto r = run_chainlm(dir, "bench " + bench + " --config " + quote(config) + " --threads 2" + args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (r.exit_code != 0) return "";
    return nlohmann::json::parse(r.out.substr(r.out.rfind('{'))).at("omp_wait_policy");
  }
  TempDir dir;
  std::string config;
};

TEST_F(WaitPolicy, TrainingWaitsPassivelyAndDecodingKeepsTheDefault) {
  ScopedEnv policy("OMP_WAIT_POLICY", std::nullopt), spin("GOMP_SPINCOUNT", std::nullopt);
  EXPECT_EQ(reported("train"), "passive");
  EXPECT_EQ(reported("decode"), "default");
}

TEST_F(WaitPolicy, TheUsersChoiceIsKept) {
  {
    ScopedEnv policy("OMP_WAIT_POLICY", "active"), spin("GOMP_SPINCOUNT", std::nullopt);
    EXPECT_EQ(reported("train"), "active");
  }
  {
    ScopedEnv policy("OMP_WAIT_POLICY", std::nullopt), spin("GOMP_SPINCOUNT", "1000");
    EXPECT_EQ(reported("train"), "spin count 1000");
  }
}

}  // namespace
}  // namespace chainlm
