#pragma once
// What a training run tells its user as it goes (rank 0 only): a progress line per step (one
// line rewritten in place on a terminal; otherwise a line on the first and last step and every
// few seconds), validation losses, skipped steps, the saved checkpoint and the peak memory;
// and the moving tokens/s that the progress line and metrics.jsonl report.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/timer.h"

namespace chainlm {

class TrainingProgress {
 public:
  // quiet: nothing but warnings; root: whether this rank reports at all. Steps are counted from
  // start_step (a resumed run) to steps.
  TrainingProgress(bool quiet, bool root, long start_step, long steps);

  // Adds a step of `tokens` tokens that took `seconds`; returns the tokens/s over the last
  // few seconds.
  double add_step(double tokens, double seconds);
  // The progress line after step `step` (weights > 0 mark the chains whose loss it shows).
  void step(long step, const std::vector<double>& chain_loss, const std::vector<float>& weights,
            float lr, double tokens_per_s);
  void validation(long step, const std::vector<double>& val_loss) const;
  // A step skipped for a non-finite loss or gradient (printed even when quiet).
  void skipped(long step, const std::string& why, long in_a_row, long in_all) const;
  // A validation loss that is not finite: finite weights that overflow in the forward pass, the
  // run diverged (printed even when quiet; nothing when every loss is finite).
  void nonfinite_validation(long step, const std::vector<double>& val_loss) const;
  // Sample generations: a line per sample, "sample k=2 | <prompt>[continuation]".
  void samples(long step, const std::string& prompt, const nlohmann::json& samples) const;
  void saved(const std::string& dir) const;
  void peak_memory(uint64_t peak_bytes, uint64_t estimated_bytes) const;

 private:
  // On a terminal, what clears the progress line before another line is printed.
  const char* clear() const { return tty_ ? "\r\033[K" : ""; }

  bool quiet_, root_, tty_;
  long start_step_, steps_;
  Timer total_, since_print_;
  double window_tokens_ = 0, window_seconds_ = 0;
};

}  // namespace chainlm
