// The scheduler's thread count (serve/decode_threads.h), fed turn times: it keeps every thread
// while trials with fewer lose (stopping a clearly losing trial early), comes down when fewer
// threads serve the same batches faster, goes back up when more do again, ignores differences
// within its margin and trials it cannot compare, and never moves when fixed.
#include "serve/decode_threads.h"

#include <gtest/gtest.h>

#include "core/error.h"

namespace chainlm {
namespace {

using Tuner = DecodeThreadTuner;

// Turns of `rows` rows at `seconds` each until a trial starts; the turns run.
int run_until_trial(Tuner& t, int rows, double seconds) {
  int turns = 0;
  while (!t.in_trial() && turns < 10 * Tuner::kProbeEvery) {
    t.record(rows, seconds);
    ++turns;
  }
  return turns;
}

// A trial's turns at `seconds` (rows each); the turns it lasted.
int run_trial(Tuner& t, int rows, double seconds) {
  int turns = 0;
  while (t.in_trial() && turns < 10 * Tuner::kProbeSteps) {
    t.record(rows, seconds);
    ++turns;
  }
  return turns;
}

TEST(DecodeThreads, KeepsEveryThreadWhileFewerAreSlowerAndStopsALosingTrialEarly) {
  Tuner t(2);
  EXPECT_EQ(t.threads(), 2);
  for (int round = 0; round < 3; ++round) {
    EXPECT_EQ(run_until_trial(t, 8, 3e-3), round == 0 ? Tuner::kFirstProbe : Tuner::kProbeEvery);
    EXPECT_EQ(t.threads(), 1) << "a trial of one thread fewer";
    EXPECT_EQ(run_trial(t, 8, 6e-3), Tuner::kEarlyTurns) << "twice as slow: stopped early";
    EXPECT_EQ(t.threads(), 2);
    EXPECT_EQ(t.chosen(), 2);
  }
}

TEST(DecodeThreads, ComesDownWhenFewerServeFasterAndGoesBackUp) {
  Tuner t(2);
  run_until_trial(t, 8, 12e-3);  // a busy core: two threads wait on each other's time slices
  EXPECT_EQ(run_trial(t, 8, 7e-3), Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 1);
  EXPECT_EQ(t.threads(), 1);
  // The other process is gone: one thread now takes 3 ms, a trial of two 1.6 ms.
  EXPECT_EQ(run_until_trial(t, 8, 3e-3), Tuner::kProbeEvery);
  EXPECT_EQ(t.threads(), 2) << "from one thread, the trial is one more";
  run_trial(t, 8, 1.6e-3);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, DifferencesWithinTheMarginChangeNothing) {
  Tuner t(2);
  run_until_trial(t, 4, 2e-3);
  EXPECT_EQ(run_trial(t, 4, 2e-3 * (Tuner::kMargin + 0.05)), Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, TrialsOfOtherBatchSizesDecideNothing) {
  Tuner t(2);
  run_until_trial(t, 8, 12e-3);
  run_trial(t, 3, 1e-3);  // much faster, but 3-row turns against 8-row ones
  EXPECT_EQ(t.chosen(), 2);
  // Two of the same size are too few to tell either.
  run_until_trial(t, 8, 12e-3);
  for (int i = 0; i < Tuner::kProbeSteps; ++i) t.record(i < 2 ? 8 : 5, i < 2 ? 1e-3 : 12e-3);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, MoreThreadsTryOneMoreAndOneFewerInTurn) {
  Tuner t(4);
  run_until_trial(t, 8, 4e-3);
  EXPECT_EQ(t.threads(), 3);
  run_trial(t, 8, 2e-3);
  ASSERT_EQ(t.chosen(), 3);
  run_until_trial(t, 8, 2e-3);
  EXPECT_EQ(t.threads(), 4) << "then one more";
  EXPECT_EQ(run_trial(t, 8, 4e-3), Tuner::kEarlyTurns);
  EXPECT_EQ(t.chosen(), 3);
  run_until_trial(t, 8, 2e-3);
  EXPECT_EQ(t.threads(), 2) << "then one fewer";
  run_trial(t, 8, 4e-3);
  EXPECT_EQ(t.chosen(), 3);
}

TEST(DecodeThreads, FixedOrOneThreadNeverMoves) {
  for (Tuner t : {Tuner(2, /*adaptive=*/false), Tuner(1)}) {
    const int n = t.threads();
    for (int i = 0; i < 4 * Tuner::kProbeEvery; ++i) {
      t.record(8, i % 7 ? 1e-3 : 50e-3);
      ASSERT_EQ(t.threads(), n);
      ASSERT_FALSE(t.in_trial());
    }
  }
  EXPECT_THROW(Tuner(0), Error);
}

}  // namespace
}  // namespace chainlm
