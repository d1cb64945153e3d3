// Numerical faults and damaged data in `chainlm train`, through the real binary
// (docs/reliability.md): NaN gradients and divergence under both --on-nonfinite modes, also
// under mpirun, and a token shard truncated while a run trains. A stopped run keeps its last
// finite checkpoint and resumes to the uninterrupted run's result, bit for bit.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "crash_safety_fixture.h"
#include "run_mpi.h"

namespace chainlm {
namespace {

using namespace crash_safety_test;  // the fixture CrashSafety, RunState and the run helpers

// The token shards are memory-mapped: train.bin truncated in place while a run trains ends it
// with SIGBUS, which used to say nothing. It is said (and the signal kept), and the last
// checkpoint stays the run's, loadable.
TEST_F(CrashSafety, AShardTruncatedWhileTrainingIsNamed) {
  const std::string runp = dir.file("run");
  const std::string out = dir.file("out.txt"), err = dir.file("err.txt");
  const pid_t pid =
      spawn(train_args(runp, 6), {{"CHAINLM_PAUSE_AT", "checkpoint.after_prune:1"}}, out, err);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, WUNTRACED), pid);
  ASSERT_TRUE(WIFSTOPPED(status)) << read_bytes(err);
  fs::resize_file(fs::path(data) / "train.bin", 0);
  ::kill(pid, SIGCONT);
  const Outcome r = finish(pid, out, err);
  EXPECT_EQ(r.signal, SIGBUS) << r.code << " " << r.err;
  EXPECT_TRUE(contains(r.err, "was truncated or replaced while in use (SIGBUS)")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
  expect_loadable(runp, "after SIGBUS");
}

// ---------------------------------------------------------------------------------------------
// Non-finite losses and gradients.

TEST_F(CrashSafety, NanGradientStopsBeforeAnyWeightChanges) {
  const std::string runp = dir.file("run");
  const Outcome r = run(train_args(runp, 6), {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "3"}});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(contains(r.err, "step 3: the gradient norm is not finite (nan)")) << r.err;
  EXPECT_TRUE(contains(r.err, "stopped before any weight was changed")) << r.err;
  EXPECT_TRUE(contains(r.err, "--on-nonfinite skip")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000002\n");
  EXPECT_EQ(expect_checkpoints_finite(runp), 2);
  // The run resumes past the fault once it is gone, to the uninterrupted result.
  const RunState ref = reference(6);
  const Outcome resumed = run(resume_args(runp, 6));
  ASSERT_EQ(resumed.code, 0) << resumed.err;
  expect_identical(read_state(runp), ref, "resumed after a stop on a NaN gradient");
}

TEST_F(CrashSafety, NanGradientSkippedLeavesWeightsAndMomentsUntouched) {
  const std::string runp = dir.file("run");
  const Env nan_at_3 = {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "3"}};
  Env nan_at_3_then_kill = nan_at_3;
  nan_at_3_then_kill.push_back({"CHAINLM_CRASH_AT", "checkpoint.after_prune:3"});
  Outcome r = run(train_args(runp, 6, {"--on-nonfinite", "skip"}), nan_at_3_then_kill);
  ASSERT_EQ(r.signal, SIGKILL) << r.err;
  EXPECT_TRUE(contains(r.err, "warning: step 3 skipped")) << r.err;
  EXPECT_TRUE(contains(r.err, "the gradient norm is not finite")) << r.err;
  // Step 3 changed nothing: its checkpoint's weights and moments are step 2's, bit for bit.
  EXPECT_TRUE(read_bytes(runp + "/step-00000002/model.safetensors") ==
              read_bytes(runp + "/step-00000003/model.safetensors"));
  EXPECT_TRUE(read_bytes(runp + "/step-00000002/optimizer.safetensors") ==
              read_bytes(runp + "/step-00000003/optimizer.safetensors"));
  const auto state = nlohmann::json::parse(read_bytes(runp + "/step-00000003/trainer_state.json"));
  EXPECT_EQ(state["skipped_steps"], 1);
  // The run goes on (resumed here, which must match an uninterrupted skipping run exactly:
  // AdamW's step count, which skipped steps do not advance, is part of the checkpoint).
  r = run(resume_args(runp, 6), nan_at_3);
  ASSERT_EQ(r.code, 0) << r.err;
  const RunState got = read_state(runp);
  EXPECT_EQ(got.skipped,
            (std::map<long, std::string>{{3, "the gradient norm is not finite (nan)"}}));
  EXPECT_EQ(got.loss.size(), 5u);  // steps 1, 2, 4, 5, 6
  for (const auto& [s, l] : got.loss) EXPECT_TRUE(std::isfinite(l)) << s;
  const std::string straight = dir.file("straight");
  r = run(train_args(straight, 6, {"--on-nonfinite", "skip"}), nan_at_3);
  ASSERT_EQ(r.code, 0) << r.err;
  expect_identical(got, read_state(straight), "skipping run, resumed after the skip");
  // The weights did move after the skipped step.
  const RunState unskipped = reference(6);
  EXPECT_FALSE(got.weights == unskipped.weights);
  EXPECT_EQ(got.loss.at(2), unskipped.loss.at(2));
}

TEST_F(CrashSafety, SkippingGivesUpAfterTooManyNonFiniteStepsInARow) {
  const std::string runp = dir.file("run");
  const Outcome r =
      run(train_args(runp, 12, {"--on-nonfinite", "skip", "--max-nonfinite-skips", "3"}),
          {{"CHAINLM_FAULT_NAN_GRAD_AT_STEP", "2,4-12"}});
  EXPECT_EQ(r.code, 1);
  // Step 2 alone is skipped and 3 trains; 4, 5, 6 are skipped, 7 is one too many.
  EXPECT_TRUE(contains(r.err, "warning: step 2 skipped")) << r.err;
  EXPECT_TRUE(contains(r.err, "(3 in a row, 4 in all)")) << r.err;
  EXPECT_TRUE(contains(r.err,
                       "step 7: the gradient norm is not finite (nan) after 3 skipped step(s) "
                       "in a row (--max-nonfinite-skips 3); giving up"))
      << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000006\n");
  EXPECT_GT(expect_checkpoints_finite(runp), 0);
}

TEST_F(CrashSafety, DivergenceNeverReachesACheckpoint) {
  // An absurd learning rate: the first update throws the weights so far that the next step's
  // loss or gradient norm is not finite (stop; which of the two first depends on the CPU's
  // kernels: the sanitized build on an AVX2 CPU met the gradient's), or, larger still, makes the
  // weights themselves non-finite, which the checkpoint writer refuses.
  struct Case {
    std::string lr, mode, expect, or_expect;
  };
  const std::vector<Case> cases = {
      {"1e3", "stop", "step 2: the loss is not finite", "step 2: the gradient norm is not finite"},
      {"1e3", "skip", "giving up", "giving up"},
      {"1e38", "stop", "refusing to write checkpoint", "refusing to write checkpoint"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.lr + " " + c.mode);
    const std::string runp = dir.file("run_" + c.lr + c.mode);
    const Outcome r =
        run(train_args(runp, 20, {"--lr", c.lr, "--warmup", "0", "--on-nonfinite", c.mode}));
    EXPECT_EQ(r.code, 1);
    EXPECT_TRUE(contains(r.err, c.expect) || contains(r.err, c.or_expect)) << r.err;
    EXPECT_TRUE(contains(r.err, "not finite")) << r.err;
    expect_checkpoints_finite(runp);
    EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
    if (fs::exists(runp + "/latest")) {
      expect_loadable(runp, c.lr);
    }
  }
}

// `args` on 2 MPI ranks with one extra environment variable.
Outcome run_mpi(const TempDir& dir, const Args& args, const std::string& env) {
  std::string cmd = testing::mpirun_command(2) + " -x " + env;
  for (const std::string& a : args) cmd += " '" + a + "'";
  cmd += " >" + dir.file("mpi.out") + " 2>" + dir.file("mpi.err");
  const int status = std::system(cmd.c_str());
  Outcome r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_bytes(dir.file("mpi.err"));
  return r;
}

TEST_F(CrashSafety, FailedCheckpointEndsEveryMpiRankWithOneMessage) {
  // Rank 0 writes; its second checkpoint fails (ENOSPC injected): every rank ends with its
  // message, printed once, without MPI_Abort; the first checkpoint stays the latest.
  const std::string runp = dir.file("run");
  const Outcome r =
      run_mpi(dir, train_args(runp, 4), "CHAINLM_WRITE_ERROR_AT=atomic_file.write:11");
  EXPECT_NE(r.code, 0);
  const std::string message = "checkpoint at step 2 not written";
  const size_t at = r.err.find(message);
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(message, at + 1), std::string::npos) << "printed twice:\n" << r.err;
  EXPECT_TRUE(contains(r.err, "No space left on device")) << r.err;
  EXPECT_FALSE(contains(r.err, "MPI_ABORT")) << r.err;
  EXPECT_EQ(read_bytes(runp + "/latest"), "step-00000001\n");
  EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
}

TEST_F(CrashSafety, AFailedLogLineEndsEveryMpiRankWithOneMessage) {
  // Rank 0's metrics.jsonl cannot take a step's line (a full disk fills the log first, between
  // checkpoints): every rank ends at that step's agreement with rank 0's message, printed once.
  // It ended the job by MPI_Abort, and mpirun's SIGTERM had rank 1 announce a checkpoint that
  // was never written (a user trial).
  const std::string runp = dir.file("run");
  const Outcome r =
      run_mpi(dir, train_args(runp, 6), "CHAINLM_WRITE_ERROR_AT=metrics.append:5=ENOSPC");
  EXPECT_EQ(r.code, 1) << r.err;
  const std::string message = "cannot append to";
  const size_t at = r.err.find(message);
  ASSERT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(message, at + 1), std::string::npos) << "printed twice:\n" << r.err;
  EXPECT_TRUE(contains(r.err, "rank 0 of 2")) << r.err;
  EXPECT_TRUE(contains(r.err, "No space left on device")) << r.err;
  EXPECT_FALSE(contains(r.err, "MPI_ABORT")) << r.err;
  EXPECT_FALSE(contains(r.err, "saving a checkpoint")) << r.err;
  ASSERT_TRUE(fs::exists(runp + "/latest")) << r.err;
  expect_loadable(runp, "after the failed log line");
  EXPECT_TRUE(leftovers(runp).empty()) << joined(leftovers(runp));
}

TEST_F(CrashSafety, NonFiniteDecisionsAgreeAcrossMpiRanks) {
  // The NaN gradient appears on the last rank only; rank 0 (the writer) sees it through the
  // gradient sum, and both ranks stop, or skip, together.
  auto mpi = [&](const Args& args, const std::string& env) { return run_mpi(dir, args, env); };
  const std::string stop = dir.file("stop"), skip = dir.file("skip");
  Outcome r = mpi(train_args(stop, 5), "CHAINLM_FAULT_NAN_GRAD_AT_STEP=3");
  EXPECT_NE(r.code, 0);
  const std::string message = "step 3: the gradient norm is not finite (nan); stopped";
  const size_t at = r.err.find(message);
  EXPECT_NE(at, std::string::npos) << r.err;
  EXPECT_EQ(r.err.find(message, at + 1), std::string::npos) << "one message, not one per rank:\n"
                                                            << r.err;
  EXPECT_FALSE(contains(r.err, "MPI_ABORT")) << r.err;
  EXPECT_EQ(read_bytes(stop + "/latest"), "step-00000002\n");
  EXPECT_EQ(expect_checkpoints_finite(stop), 2);

  r = mpi(train_args(skip, 3, {"--on-nonfinite", "skip"}), "CHAINLM_FAULT_NAN_GRAD_AT_STEP=3");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(read_bytes(skip + "/step-00000002/model.safetensors") ==
              read_bytes(skip + "/step-00000003/model.safetensors"));
  EXPECT_EQ(read_state(skip).skipped.size(), 1u);
}

}  // namespace
}  // namespace chainlm
