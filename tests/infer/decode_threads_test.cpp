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

// A trial's turns at `seconds` (of shape `rows`); the turns it lasted, its first (not counted:
// it wakes or parks a thread) included.
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
    EXPECT_EQ(run_trial(t, 8, 7e-3), 1 + Tuner::kEarlyTurns) << "2.3x as slow: stopped early";
    EXPECT_EQ(t.threads(), 2);
    EXPECT_EQ(t.chosen(), 2);
  }
}

// Beside a busy process two threads took 105-333 ms a turn against 5 ms on one (Linux 6.18): such
// a trial ends after two counted turns, and the next waits until its cost is 5% of the time
// between.
TEST(DecodeThreads, ATrialManyTimesSlowerStopsAtOnceAndTheNextWaitsOutItsCost) {
  Tuner t(2);
  run_until_trial(t, 8, 300e-3);  // a busy core from the start
  EXPECT_EQ(run_trial(t, 8, 5e-3), 1 + Tuner::kProbeSteps);
  ASSERT_EQ(t.chosen(), 1);
  // After a change, soon again: kFirstProbe turns of 5 ms (under kSoonSeconds).
  EXPECT_EQ(run_until_trial(t, 8, 5e-3), Tuner::kFirstProbe);
  EXPECT_EQ(t.threads(), 2);
  EXPECT_EQ(run_trial(t, 8, 300e-3), 1 + 2) << "60x slower: no more turns";
  EXPECT_EQ(t.chosen(), 1);
  // 2 x 295 ms lost: the next trial after 11.8 s of (here 6 ms) turns, not after kFirstProbe.
  const int wait = run_until_trial(t, 8, 6e-3);
  EXPECT_EQ(wait, turns_for_cost(2 * 295e-3, 6e-3));
  EXPECT_GT(wait, 1900);
  // 3x or less is not decided on two turns (2.5x here).
  EXPECT_EQ(run_trial(t, 8, 15e-3), 1 + Tuner::kEarlyTurns);
}

// Two threads' first turn after a pause wakes the sleeping one (4.4 ms against 0.3 on one, a
// small model): that turn is not counted, and the trial wins on the turns after it.
TEST(DecodeThreads, ATrialsFirstTurnIsNotCounted) {
  Tuner t(2);
  run_until_trial(t, 1, 1e-3);
  run_trial(t, 1, 0.5e-3);
  ASSERT_EQ(t.chosen(), 1);
  run_until_trial(t, 1, 0.3e-3);
  ASSERT_EQ(t.threads(), 2);
  t.record(1, 4.4e-3);  // the wake-up
  for (int i = 0; i < Tuner::kProbeSteps; ++i) t.record(1, 0.2e-3);
  EXPECT_FALSE(t.in_trial());
  EXPECT_EQ(t.chosen(), 2);
}

// Turns of other shapes (a chain-1 request against a 4-chain one, decode_shape) are not compared.
TEST(DecodeThreads, ShapesSayRowsAndSubModels) {
  EXPECT_NE(Tuner::decode_shape(1, 1), Tuner::decode_shape(1, 4));
  EXPECT_NE(Tuner::decode_shape(2, 4), Tuner::decode_shape(1, 4));
  EXPECT_NE(Tuner::decode_shape(8, 20), Tuner::decode_shape(7, 20));
  Tuner t(2);
  run_until_trial(t, Tuner::decode_shape(1, 4), 1.4e-3);
  // A trial of one thread over chain-1 requests: faster turns, but no comparable ones.
  EXPECT_EQ(run_trial(t, Tuner::decode_shape(1, 1), 0.3e-3), 1 + Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, ComesDownWhenFewerServeFasterAndGoesBackUp) {
  Tuner t(2);
  run_until_trial(t, 8, 12e-3);  // a busy core: two threads wait on each other's time slices
  EXPECT_EQ(run_trial(t, 8, 7e-3), 1 + Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 1);
  EXPECT_EQ(t.threads(), 1);
  // The other process is gone: one thread now takes 3 ms, a trial of two 1.6 ms. A change of
  // count starts the waits over.
  EXPECT_EQ(run_until_trial(t, 8, 3e-3), Tuner::kFirstProbe);
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
  // Another process takes a core: the 8-row turns take 20 times as long. A trial as soon as they
  // have taken kSoonSeconds (9 turns of 60 ms), not after 128 turns (7.7 s).
  static_assert(Tuner::kSoonSeconds == 0.5);
  EXPECT_EQ(run_until_trial(t, 8, 60e-3), 9);
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
  EXPECT_EQ(run_trial(t, 4, 2e-3 * (Tuner::kMargin + 0.05)), 1 + Tuner::kProbeSteps);
  EXPECT_EQ(t.chosen(), 2);
}

TEST(DecodeThreads, TrialsOfOtherBatchSizesDecideNothing) {
  Tuner t(2);
  run_until_trial(t, 8, 12e-3);
  run_trial(t, 3, 1e-3);  // much faster, but 3-row turns against 8-row ones
  EXPECT_EQ(t.chosen(), 2);
  // Two of the same size are too few to tell either.
  run_until_trial(t, 8, 12e-3);
  for (int i = 0; i <= Tuner::kProbeSteps; ++i) t.record(i < 3 ? 8 : 5, i < 3 ? 1e-3 : 12e-3);
  ASSERT_FALSE(t.in_trial());
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
  EXPECT_EQ(run_trial(t, 8, 4e-3), 1 + Tuner::kEarlyTurns);
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
