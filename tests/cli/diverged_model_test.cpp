// A run that diverged with finite weights (they overflow in the forward pass, so the checkpoint
// guard lets them through): a user trial found train exiting 0 without a word beside "-nan" (and
// with --quiet, nothing), its report showing "—" as for a loss never computed, and generate and
// serve giving token 0 greedily or random words sampled. Now train warns, the report says "nan"
// and counts skipped steps, and generation is an error naming the overflow.
#include <gtest/gtest.h>

#include "run_cli.h"
#include "workflow_fixture.h"

namespace chainlm {
namespace {

using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;

TEST_F(WorkflowSafety, ADivergedRunIsSaidByTrainReportAndGenerate) {
  const std::string run = dir.file("run");
  auto trained =
      run_chainlm(dir, train_args(run, 2) + " --lr 10000 --warmup 0 --on-nonfinite skip");
  ASSERT_EQ(trained.exit_code, 0) << trained.err;
  EXPECT_TRUE(contains(trained.err, "warning: step 2: the validation loss is not finite (k1="))
      << trained.err;
  EXPECT_TRUE(contains(trained.err, "the run has diverged")) << trained.err;

  ASSERT_EQ(run_chainlm(dir, "report " + quote(run)).exit_code, 0);
  const std::string report = read_bytes(run + "/report.md");
  EXPECT_TRUE(contains(report, "| not finite | the validation loss at step 2")) << report;
  EXPECT_TRUE(contains(report, "| nan | nan |")) << report;
  EXPECT_TRUE(contains(report, "| skipped | 1 step(s) with a non-finite loss")) << report;

  for (const char* sampling : {"--temperature 0", "--temperature 0.8 --seed 3"}) {
    auto g = run_chainlm(
        dir, "generate --model " + quote(run) + " --prompt hello --max-tokens 4 " + sampling);
    EXPECT_NE(g.exit_code, 0) << sampling << ": " << g.out;
    EXPECT_TRUE(contains(g.err, "the model's hidden state overflows float"))
        << sampling << ": " << g.err;
  }
}

}  // namespace
}  // namespace chainlm
