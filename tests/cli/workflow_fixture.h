#pragma once
// The fixture of the workflow-safety tests (workflow_safety_test.cpp, run_directory_cli_test.cpp):
// byte-level data of 200 lines, a two-chain model config, a three-document corpus, and the
// arguments of a short training run.
#include <string>

#include "../train/train_test_util.h"
#include "run_cli.h"

namespace chainlm {

class WorkflowSafety : public test::TrainingDataTest {
 protected:
  void SetUp() override {
    make_data(200, "nothing the user has is lost ");
    config = dir.file("config.json");
    testing::write_bytes(
        config, R"({"dim": 16, "n_layers": 1, "n_heads": 2, "ffn_dim": 32, "vocab_size": 258,
                            "chains": [1, 1], "max_seq_len": 16})");
    testing::write_bytes(dir.file("corpus.txt"),
                         "first document\n\nsecond document\n\nthird one\n");
  }
  std::string train_args(const std::string& out, long steps) const {
    return "train --config " + testing::quote(config) + " --data " + testing::quote(data) +
           " --out " + testing::quote(out) + " --steps " + std::to_string(steps) +
           " --batch-size 2 --seq-len 8 --eval-every 2 --quiet";
  }
  std::string config;
};

}  // namespace chainlm
