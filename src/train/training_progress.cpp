#include "train/training_progress.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>

#include "core/error.h"
#include "core/memory.h"

namespace chainlm {

namespace {

std::string format_eta(double seconds) {
  char buf[32];
  const long s = (long)seconds;
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%ldh%02ldm", s / 3600, (s / 60) % 60);
  else
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
  return buf;
}

// " k1=3.141 k2=2.718" for the chains with a loss to show, rounded to 3 decimals.
std::string chain_losses(const std::vector<double>& loss, const std::vector<float>* weights) {
  std::string s;
  for (size_t i = 0; i < loss.size(); ++i)
    if (!weights || (*weights)[i] > 0)
      s += cat(" k", i + 1, "=", std::round(loss[i] * 1000) / 1000);
  return s;
}

// Newlines and tabs shown as \n and \t, so one sample stays on one line of the log.
std::string one_line(const std::string& text) {
  std::string out;
  for (char ch : text) {
    if (ch == '\n')
      out += "\\n";
    else if (ch == '\t')
      out += "\\t";
    else if (ch == '\r')
      out += "\\r";
    else
      out += ch;
  }
  return out;
}

}  // namespace

TrainingProgress::TrainingProgress(bool quiet, bool root, long start_step, long steps)
    : quiet_(quiet || !root),
      root_(root),
      tty_(isatty(fileno(stderr))),
      start_step_(start_step),
      steps_(steps) {}

double TrainingProgress::add_step(double tokens, double seconds) {
  window_tokens_ += tokens;
  window_seconds_ += seconds;
  const double rate = window_tokens_ / window_seconds_;
  if (window_seconds_ > 5) window_tokens_ = window_seconds_ = 0;  // a moving rate
  return rate;
}

void TrainingProgress::step(long step, const std::vector<double>& chain_loss,
                            const std::vector<float>& weights, float lr, double tokens_per_s) {
  // Without a terminal, a line every few seconds, not every step.
  const bool due = tty_ || step == start_step_ + 1 || step == steps_ || since_print_.seconds() >= 5;
  if (quiet_ || !due) return;
  since_print_.reset();
  const double eta = total_.seconds() / (step - start_step_) * (steps_ - step);
  std::fprintf(stderr, "%sstep %ld/%ld | loss%s | lr %.2e | %.0f tok/s | ETA %s%s", clear(), step,
               steps_, chain_losses(chain_loss, &weights).c_str(), lr, tokens_per_s,
               format_eta(eta).c_str(), tty_ ? "" : "\n");
  std::fflush(stderr);
}

void TrainingProgress::validation(long step, const std::vector<double>& val_loss) const {
  if (quiet_) return;
  std::fprintf(stderr, "%sstep %ld | val loss%s\n", clear(), step,
               chain_losses(val_loss, nullptr).c_str());
}

void TrainingProgress::skipped(long step, const std::string& why, long in_a_row,
                               long in_all) const {
  if (!root_) return;
  std::fprintf(stderr,
               "%swarning: step %ld skipped (--on-nonfinite skip): %s; weights and "
               "optimizer state unchanged (%ld in a row, %ld in all)\n",
               clear(), step, why.c_str(), in_a_row, in_all);
}

void TrainingProgress::nonfinite_validation(long step, const std::vector<double>& val_loss) const {
  // The checkpoint guard lets such weights through, and a run of one more step ended with exit
  // 0, its report showing "—" (a user trial).
  std::string which;
  for (size_t i = 0; i < val_loss.size(); ++i)
    if (!std::isfinite(val_loss[i]))
      which += cat(which.empty() ? "" : ", ", "k", i + 1, "=", val_loss[i]);
  if (which.empty() || !root_) return;
  std::fprintf(stderr,
               "%swarning: step %ld: the validation loss is not finite (%s): the weights overflow "
               "in the forward pass, so the run has diverged; its checkpoints from here on give "
               "no text. Go on from an earlier checkpoint (train --init) with a lower --lr\n",
               clear(), step, which.c_str());
}

void TrainingProgress::samples(long step, const std::string& prompt,
                               const nlohmann::json& samples) const {
  if (quiet_) return;
  for (const auto& s : samples)
    std::fprintf(stderr, "%sstep %ld | sample k=%d | %s[%s]\n", clear(), step,
                 s.at("chains").get<int>(), one_line(prompt).c_str(),
                 one_line(s.at("text").get<std::string>()).c_str());
}

void TrainingProgress::saved(const std::string& dir) const {
  if (!quiet_) std::fprintf(stderr, "saved %s\n", dir.c_str());
}

void TrainingProgress::peak_memory(uint64_t peak_bytes, uint64_t estimated_bytes) const {
  if (!quiet_)
    std::fprintf(stderr, "peak memory %s (estimated %s)\n",
                 format_bytes((double)peak_bytes).c_str(),
                 format_bytes((double)estimated_bytes).c_str());
}

}  // namespace chainlm
