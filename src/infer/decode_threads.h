#pragma once
// How many compute threads decoding steps run on: the server's (docs/serving.md, "A busy
// core") and `generate`'s (docs/inference.md). With another process keeping one of two cores busy,
// a 2-thread server served about a third of its quiet tokens/s, and a 1-thread one over half
// (bench/RESULTS.md): the compute threads, the HTTP threads and the other process all wait for each
// other's time slices. So the scheduler measures what it serves: it runs trials of up to
// kProbeSteps turns with one thread fewer (or, once it has come down, one more) and keeps the count
// whose turns of the same shape (rows and their sub-models) took less time on average by more
// than kMargin.
// - When: the first trial comes kFirstTrial turns after the start (in the server as in
//   `generate`, whose generations are often a few dozen tokens), and the next "soon" after a
//   change of count: kFirstProbe turns, or as few as kFirstTrial that took kSoonSeconds. Each lost
//   trial doubles the wait for the next, from kFirstProbe up to kProbeEvery turns. Turns that have
//   become kSlowdown slower than the count's own turns at the last trial (another process taking
//   a core mid-run) start one early, as soon.
// - What a trial may cost: beside a busy process two threads can be ~60x slower than one (every
//   parallel region waits out the other process's time slice: 105-333 ms turns against 5 ms on
//   one thread, Linux 6.18). So a trial's first turn is not counted (two threads' first turn
//   after a pause wakes the sleeping one: 4.4 ms against 0.3 on one, and a trial lost on it); a
//   trial whose next two turns are each kEarlyLossTwo slower stops there, one clearly losing
//   after kEarlyTurns counted turns stops then; and a lost trial's cost (its turns' time beyond
//   the usual turns) is kept under kTrialShare of the time to the next trial. Before these, a
//   server's first 64 turns on two threads took ~20 s there, and one 300 ms trial turn every 512
//   turns of 5 ms cost ~15% of its time. On a quiet machine trials cost about 1%.
// Means, not medians: under contention most steps are as fast as quiet ones and the loss is in
// the few that wait out another process's time slice. A step's bits do not depend on its thread
// count (the threads split a GEMM's output columns and the sequences' attention), so neither do
// the tokens.
#include <vector>

namespace chainlm {

class DecodeThreadTuner {
 public:
  static constexpr int kProbeEvery = 512;        // the longest wait between trials, in turns
  static constexpr int kFirstProbe = 64;         // the shortest wait after a lost trial
  static constexpr int kFirstTrial = 8;          // turns before the first
  static constexpr double kSoonSeconds = 0.5;    // or kFirstProbe turns: "soon" (see above)
  static constexpr double kSlowdown = 1.5;       // turns this much slower start a trial early
  static constexpr int kProbeSteps = 16;  // turns of a trial, and the turns before it compared
  static constexpr int kEarlyTurns = 4;   // a trial this long stops if kEarlyLoss slower
  static constexpr double kEarlyLoss = 1.25;
  static constexpr double kEarlyLossTwo = 3.0;  // two turns this much slower stop a trial
  static constexpr double kTrialShare = 0.05;   // a lost trial's cost against the time to the next
  static constexpr double kMargin = 0.9;  // a trial wins when its mean turn is this much faster

  // max_threads >= 1: the server's --threads, and where it starts; adaptive false keeps it.
  explicit DecodeThreadTuner(int max_threads, bool adaptive = true);

  // The shape of a turn of `rows` rows whose sub-models have `chains` chains in all (PHD copies
  // not counted: a request's are always the same).
  static int decode_shape(int rows, int chains) { return rows * 4096 + chains; }

  // Threads for the next decoding step.
  int threads() const { return probing_ ? probe_ : current_; }
  // The count chosen (not a trial's), and whether a trial runs now.
  int chosen() const { return current_; }
  bool in_trial() const { return probing_; }
  // A scheduler turn that ran a decoding step with threads() and no prompt piece: its shape and
  // its wall time from the step's start to the next one's (the tokens handed over included).
  // Turns of one shape are compared: the caller's key for its rows and their sub-models
  // (decode_shape), as a chain-1 row decodes ~5x faster than a 4-chain one.
  void record(int shape, double seconds);

 private:
  struct Step {
    int shape;
    double seconds;
  };
  // The mean seconds of the turns in `turns` of `shape`; -1 with fewer than 3 of them.
  static double mean_of(const std::vector<Step>& turns, int shape);
  // Ends a trial, which compared `tried` with `before` mean seconds of turns of `shape` (either
  // -1 when too few turns of that shape ran).
  void end_trial(bool keep, int shape, double before, double tried);

  const int max_;
  const bool adaptive_;
  int current_, probe_ = 0;
  bool probing_ = false;
  bool warmup_ = false;    // the trial's first turn is to come: not counted
  bool changed_ = false;   // the last trial changed the count
  bool try_fewer_ = true;  // the direction of the next trial, alternating where both exist
  int since_ = 0;          // turns since the last trial (or the start)
  double since_seconds_ = 0;  // their time
  double cost_seconds_ = 0;   // the last trial's turns beyond the turns before it, if it lost
  int wait_;                   // turns from the last trial to the next
  int ref_shape_ = 0;          // the chosen count's mean turn of ref_shape_ at the last
  double ref_seconds_ = -1.0;  // trial (-1: none), against which a slowdown is judged
  std::vector<Step> recent_, trial_;
};

}  // namespace chainlm
