// The scheduler's thread count (infer/decode_threads.h), fed turn times: it keeps every thread
// while trials with fewer lose (stopping a clearly losing trial early, waiting twice as long
// after each, and long enough for a lost trial's cost to stay a small share), comes down when
// fewer threads serve the same batches faster, goes back up when more do again, tries at once
// when its turns slow down, ignores differences within its margin and trials it cannot compare,
// and never moves when fixed.
#include "infer/decode_threads.h"

#include <gtest/gtest.h>

#include <cmath>

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

// Turns of `turn` seconds a lost trial's `cost` seconds keep the next trial away (kTrialShare).
int turns_for_cost(double cost, double turn) {
  return (int)std::ceil(cost / Tuner::kTrialShare / turn);
}

TEST(DecodeThreads, KeepsEveryThreadWhileFewerAreSlowerAndStopsALosingTrialEarly) {
  Tuner t(2);
  EXPECT_EQ(t.threads(), 2);
  // Each lost trial: 4 turns of 7 ms against 3: 16 ms, which 107 turns of 3 ms keep under 5%.
  const int cost_wait = turns_for_cost(4 * 4e-3, 3e-3);
  ASSERT_EQ(cost_wait, 107);
  // The first trial soon; then doubling from kFirstProbe up to kProbeEvery, no sooner than the
  // cost allows.
  const int waits[] = {Tuner::kFirstTrial, cost_wait, 128, 256, 512, 512};
  static_assert(Tuner::kFirstTrial == 8 && Tuner::kFirstProbe == 64 && Tuner::kProbeEvery == 512);
  for (int round = 0; round < 6; ++round) {
    EXPECT_EQ(run_until_trial(t, 8, 3e-3), waits[round]) << "round " << round;
    EXPECT_EQ(t.threads(), 1) << "a trial of one thread fewer";
    EXPECT_EQ(run_trial(t, 8, 7e-3), Tuner::kEarlyTurns) << "2.3x as slow: stopped early";
    EXPECT_EQ(t.threads(), 2);
    EXPECT_EQ(t.chosen(), 2);
  }
}

// Beside a busy process two threads took 105-333 ms a turn against 5 ms on one (Linux 6.18): such
// a trial ends after one turn, and the next waits until its cost is 5% of the time between.
TEST(DecodeThreads, ATrialManyTimesSlowerStopsAtOnceAndTheNextWaitsOutItsCost) {
  Tuner t(2);
  run_until_trial(t, 8, 300e-3);  // a busy core from the start
  EXPECT_EQ(run_trial(t, 8, 5e-3), Tuner::kProbeSteps);
  ASSERT_EQ(t.chosen(), 1);
  EXPECT_EQ(run_until_trial(t, 8, 5e-3), Tuner::kFirstTrial) << "after a change, soon again";
  EXPECT_EQ(t.threads(), 2);
  EXPECT_EQ(run_trial(t, 8, 300e-3), 1) << "60x slower: no second turn";
  EXPECT_EQ(t.chosen(), 1);
  // 295 ms lost: the next trial after 5.9 s of (here 6 ms) turns, not after kFirstProbe turns.
  const int wait = run_until_trial(t, 8, 6e-3);
  EXPECT_EQ(wait, turns_for_cost(295e-3, 6e-3));
  EXPECT_GT(wait, 900);
  // 3x or less is not decided on one turn (2.5x here): two threads' first turn after a pause
  // may be slow.
  EXPECT_EQ(run_trial(t, 8, 15e-3), Tuner::kEarlyTurns);
}

TEST(DecodeThreads, ComesDownWhenFewerServeFasterAndGoesBackUp) {
  Tuner t(2);
  run_until_trial(t, 8, 12e-3);  // a busy core: two threads wait on each other's time slices
  EXPECT_EQ(run_trial(t, 8, 7e-3), Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 1);
  EXPECT_EQ(t.threads(), 1);
  // The other process is gone: one thread now takes 3 ms, a trial of two 1.6 ms. A change of
  // count starts the waits over.
  EXPECT_EQ(run_until_trial(t, 8, 3e-3), Tuner::kFirstTrial);
  EXPECT_EQ(t.threads(), 2) << "from one thread, the trial is one more";
  run_trial(t, 8, 1.6e-3);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, TurnsThatSlowDownStartATrialAtOnce) {
  Tuner t(2);
  run_until_trial(t, 8, 3e-3);
  run_trial(t, 8, 7e-3);  // quiet: one thread loses, the next trial waits 107 turns
  run_until_trial(t, 8, 3e-3);
  run_trial(t, 8, 7e-3);  // and the next 128
  ASSERT_EQ(t.chosen(), 2);
  // Another process takes a core: the 8-row turns take 16 times as long. A trial as soon as
  // kFirstTrial turns have passed since the last, not after 128 (the last trial's 16 ms are
  // under 5% of 8 such turns).
  EXPECT_EQ(run_until_trial(t, 8, 50e-3), Tuner::kFirstTrial);
  EXPECT_EQ(t.threads(), 1);
  run_trial(t, 8, 5e-3);
  EXPECT_EQ(t.chosen(), 1);
}

TEST(DecodeThreads, SlowerWithinTheBoundOrOtherBatchSizesWaitTheirTurn) {
  Tuner t(2);
  run_until_trial(t, 8, 3e-3);
  run_trial(t, 8, 4.5e-3);  // 6 ms lost: 40 turns of 3 ms, below kFirstProbe
  // Slower within kSlowdown (a longer context, say): the trial waits its kFirstProbe turns.
  EXPECT_EQ(run_until_trial(t, 8, 3e-3 * (Tuner::kSlowdown - 0.1)), Tuner::kFirstProbe);
  run_trial(t, 8, 6e-3);
  ASSERT_EQ(t.chosen(), 2);
  // Turns of another size than the one compared last are no sign, however slow.
  EXPECT_EQ(run_until_trial(t, 4, 50e-3), 2 * Tuner::kFirstProbe);
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
