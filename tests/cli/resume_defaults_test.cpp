// A job script repeats its options with --resume: the documented defaults given explicitly
// (--warmup -1, --lr-schedule-steps 0) mean what leaving them out means. A user trial found
// -1 refused ("--warmup -1 (the run's: 5) cannot change"), even for a run already finished, and
// 0 stretching the schedule to the new --steps, which raised the learning rate from its floor.
// Also: a run whose data moved is told to give --data, negative sampling counts are refused, and
// --keep-checkpoints sets how many checkpoints stay.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "run_cli.h"
#include "workflow_fixture.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::contains;
using testing::quote;
using testing::read_bytes;
using testing::run_chainlm;
using testing::trimmed;

TEST_F(WorkflowSafety, DefaultsRepeatedOnResumeKeepTheRunsSchedule) {
  const std::string run = dir.file("run");
  const std::string defaults = " --lr 0.001 --warmup -1 --lr-schedule-steps 0";
  ASSERT_EQ(run_chainlm(dir, train_args(run, 6) + defaults).exit_code, 0);
  // Finished: the same command again ends well (a requeued job).
  auto again = run_chainlm(dir, train_args(run, 6) + defaults + " --resume");
  EXPECT_EQ(again.exit_code, 0) << again.err;
  auto longer = run_chainlm(dir, train_args(run, 9) + defaults + " --resume");
  ASSERT_EQ(longer.exit_code, 0) << longer.err;
  EXPECT_FALSE(contains(longer.err, "--lr-schedule-steps")) << longer.err;
  std::map<long, double> lr;
  for (const auto& j : test::read_metrics_lines(run))
    if (j.contains("lr")) lr[j["step"].get<long>()] = j["lr"].get<double>();
  ASSERT_EQ(lr.size(), 9u);
  for (long s = 7; s <= 9; ++s)
    EXPECT_NEAR(lr[s], 0.0001, 1e-9) << "step " << s << ": the final LR holds";
  // Another warmup than the run's is still refused.
  auto other = run_chainlm(dir, train_args(run, 10) + " --lr 0.001 --warmup 3 --resume");
  EXPECT_NE(other.exit_code, 0);
  EXPECT_TRUE(contains(other.err, "--warmup 3 (the run's: 0) cannot change on resume"))
      << other.err;
}

TEST_F(WorkflowSafety, AResumeWhoseDataMovedNamesTheDataOption) {
  const std::string run = dir.file("run"), moved = dir.file("moved");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 2)).exit_code, 0);
  fs::rename(data, moved);
  auto r = run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 3 --quiet");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(
      contains(r.err, "the run's data " + data + " (recorded when it started) is not there") &&
      contains(r.err, "--resume --data NEW_DIR"))
      << r.err;
  EXPECT_EQ(trimmed(read_bytes(run + "/latest")), "step-00000002");
  auto found = run_chainlm(
      dir, "train --out " + quote(run) + " --resume --steps 3 --quiet --data " + quote(moved));
  EXPECT_EQ(found.exit_code, 0) << found.err;
}

TEST_F(WorkflowSafety, NegativeSamplingCountsAreRefused) {
  // (Without sampling on: --sample-tokens was refused only with --sample-every > 0.)
  for (const auto& [option, says] :
       {std::pair<std::string, std::string>{"--sample-every -1", "must be >= 0"},
        {"--sample-tokens -4", "must be at least 1 (or 0 for the default)"}}) {
    const std::string run = dir.file("sampled");
    auto r = run_chainlm(dir, train_args(run, 2) + " " + option);
    EXPECT_NE(r.exit_code, 0) << option;
    EXPECT_TRUE(contains(r.err, option + " " + says)) << r.err;
    EXPECT_FALSE(fs::exists(run)) << option << ": nothing is written";
  }
}

// The docs named keep_checkpoints (2) as if it were a setting, and no option set it.
TEST_F(WorkflowSafety, KeepCheckpointsSetsHowManyStay) {
  const std::string run = dir.file("run");
  ASSERT_EQ(run_chainlm(dir, train_args(run, 5) + " --save-every 1 --keep-checkpoints 3").exit_code,
            0);
  for (int s = 1; s <= 5; ++s)
    EXPECT_EQ(fs::exists(run + "/step-0000000" + std::to_string(s)), s >= 3) << "step " << s;
  auto zero =
      run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6 --keep-checkpoints 0");
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_TRUE(contains(zero.err, "--keep-checkpoints 0 must be >= 1")) << zero.err;
  EXPECT_FALSE(contains(zero.err, "resume: --steps"))
      << "a refused change is not said first: " << zero.err;
  auto one =
      run_chainlm(dir, "train --out " + quote(run) + " --resume --steps 6 --keep-checkpoints 1");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  for (int s = 1; s <= 6; ++s)
    EXPECT_EQ(fs::exists(run + "/step-0000000" + std::to_string(s)), s == 6) << "step " << s;
}

}  // namespace
}  // namespace chainlm
