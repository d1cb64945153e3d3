#pragma once
// How many compute threads the server's decoding steps run on (docs/serving.md, "A busy
// core"). With another process keeping one of two cores busy, a 2-thread server served
// about a third of its quiet tokens/s, and a 1-thread one over half (bench/RESULTS.md): the
// compute threads, the HTTP threads and the other process all wait for each other's time
// slices. So the scheduler measures what it serves: every kProbeEvery turns (the first after
// kFirstProbe) it runs a trial of up to kProbeSteps turns with one thread fewer (or, once it has
// come down, one more), and keeps the count whose turns of the same batch size took less time
// on average by more than kMargin.
// A trial clearly losing after kEarlyTurns turns stops there, so on a quiet machine trials cost
// about 1% of the time. Medians would not do: under contention most steps are as fast as
// quiet ones and the loss is in the few that wait out another process's time slice. A step's
// bits do not depend on its thread count (the threads split a GEMM's output columns and the
// sequences' attention), so neither do the tokens.
#include <vector>

namespace chainlm {

class DecodeThreadTuner {
 public:
  static constexpr int kProbeEvery = 512;  // turns between trials
  static constexpr int kFirstProbe = 64;   // turns before the first (started beside a busy process)
  static constexpr int kProbeSteps = 16;   // turns of a trial, and the turns before it compared
  static constexpr int kEarlyTurns = 4;    // a trial this long stops if kEarlyLoss slower
  static constexpr double kEarlyLoss = 1.25;
  static constexpr double kMargin = 0.9;  // a trial wins when its mean turn is this much faster

  // max_threads >= 1: the server's --threads, and where it starts; adaptive false keeps it.
  explicit DecodeThreadTuner(int max_threads, bool adaptive = true);

  // Threads for the next decoding step.
  int threads() const { return probing_ ? probe_ : current_; }
  // The count chosen (not a trial's), and whether a trial runs now.
  int chosen() const { return current_; }
  bool in_trial() const { return probing_; }
  // A scheduler turn that ran a decoding step with threads() and no prompt piece: its rows and
  // its wall time from the step's start to the next one's (the tokens handed over included).
  void record(int rows, double seconds);

 private:
  struct Step {
    int rows;
    double seconds;
  };
  // The mean seconds of the turns in `turns` with `rows` rows; -1 with fewer than 3 of them.
  static double mean_of(const std::vector<Step>& turns, int rows);
  void end_trial(bool keep);

  const int max_;
  const bool adaptive_;
  int current_, probe_ = 0;
  bool probing_ = false;
  bool try_fewer_ = true;  // the direction of the next trial, alternating where both exist
  int since_ = kProbeEvery - kFirstProbe;  // turns since the last trial
  std::vector<Step> recent_, trial_;
};

}  // namespace chainlm
