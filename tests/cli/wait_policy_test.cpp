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

// An empty or invalid policy is no choice: libgomp warned and spun, and the command ran as if
// chainlm had no default (a user trial).
TEST_F(WaitPolicy, AnInvalidPolicyIsWarnedOfAndReplaced) {
  for (const char* bad : {"", "garbage"}) {
    ScopedEnv policy("OMP_WAIT_POLICY", std::string(bad)), spin("GOMP_SPINCOUNT", std::nullopt);
    auto r = run_chainlm(dir, "bench train --config " + quote(config) +
                                  " --threads 2 --batch-size 1 --seq-len 8 --steps 1");
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out.substr(r.out.rfind('{'))).at("omp_wait_policy"),
              "passive")
        << bad;
    EXPECT_NE(r.err.find("warning: OMP_WAIT_POLICY='" + std::string(bad) +
                         "' is neither 'active' nor 'passive'; running passive"),
              std::string::npos)
        << r.err;
  }
}

// OMP_NUM_THREADS is checked as --threads is: libgomp ran 99999999999 out of memory, read
// 4294967297 as 1, and info --system printed 1215752191.
TEST_F(WaitPolicy, OmpNumThreadsIsACountFromOneTo4096) {
  for (const char* bad : {"99999999999", "4294967297", "0", "-2", "two", "5000"}) {
    ScopedEnv threads("OMP_NUM_THREADS", std::string(bad));
    auto r = run_chainlm(dir, "info --system");
    EXPECT_EQ(r.exit_code, 1) << bad;
    EXPECT_NE(r.err.find("OMP_NUM_THREADS='" + std::string(bad) +
                         "' is not a thread count from 1 to 4096"),
              std::string::npos)
        << r.err;
  }
  for (const char* good : {"1", "2", " 2 ", "2,1", ""}) {
    ScopedEnv threads("OMP_NUM_THREADS", std::string(good));
    auto r = run_chainlm(dir, "info --system");
    EXPECT_EQ(r.exit_code, 0) << "'" << good << "': " << r.err;
  }
}

}  // namespace
}  // namespace chainlm
