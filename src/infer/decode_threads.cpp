#include "infer/decode_threads.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace chainlm {

DecodeThreadTuner::DecodeThreadTuner(int max_threads, bool adaptive, int first_trial)
    : max_(max_threads),
      adaptive_(adaptive && max_threads > 1),
      current_(max_threads),
      first_trial_(first_trial),
      wait_(first_trial) {
  CHAINLM_CHECK(max_threads >= 1, "the scheduler needs at least one thread (got ", max_threads,
                ")");
}

double DecodeThreadTuner::mean_of(const std::vector<Step>& turns, int rows) {
  double sum = 0;
  int n = 0;
  for (const Step& s : turns)
    if (s.rows == rows) {
      sum += s.seconds;
      ++n;
    }
  return n >= 3 ? sum / n : -1.0;
}

void DecodeThreadTuner::record(int rows, double seconds) {
  if (!adaptive_) return;
  if (probing_) {
    trial_.push_back({rows, seconds});
    const int n = (int)trial_.size();
    if (n == 1) {  // many times slower at once: a busy core's other thread, no noise
      const double before = mean_of(recent_, rows);
      if (before > 0 && seconds > kEarlyLossOne * before) end_trial(false, rows, before, seconds);
      return;
    }
    if (n != kEarlyTurns && n != kProbeSteps) return;  // nothing to decide yet
    // The batch size the trial ran most, against the turns just before it of that size.
    std::map<int, int> count;
    for (const Step& s : trial_) ++count[s.rows];
    const int common =
        std::max_element(count.begin(), count.end(), [](const auto& a, const auto& b) {
          return a.second < b.second;
        })->first;
    const double tried = mean_of(trial_, common), before = mean_of(recent_, common);
    if (n == kEarlyTurns && tried > 0 && before > 0 && tried > kEarlyLoss * before)
      end_trial(false, common, before, tried);
    else if (n == kProbeSteps)
      end_trial(tried > 0 && before > 0 && tried < kMargin * before, common, before, tried);
    return;
  }
  recent_.push_back({rows, seconds});
  if ((int)recent_.size() > kProbeSteps) recent_.erase(recent_.begin());
  ++since_;
  since_seconds_ += seconds;
  const bool due = since_ >= wait_;
  // (recent_ holds only turns at the chosen count: end_trial empties it on a change.)
  const bool slower = since_ >= first_trial_ && ref_seconds_ > 0 && rows == ref_rows_ &&
                      mean_of(recent_, ref_rows_) > kSlowdown * ref_seconds_;
  if ((!due && !slower) || since_seconds_ * kTrialShare < cost_seconds_) return;
  // A trial of one thread fewer or one more, alternating when both exist.
  const bool fewer = current_ == max_ || (current_ > 1 && try_fewer_);
  try_fewer_ = !fewer;
  probe_ = fewer ? current_ - 1 : current_ + 1;
  probing_ = true;
  trial_.clear();
}

void DecodeThreadTuner::end_trial(bool keep, int rows, double before, double tried) {
  probing_ = false;
  since_ = 0;
  since_seconds_ = 0;
  // What a lost trial cost: each of its turns' time beyond the chosen count's turns of its size.
  cost_seconds_ = 0;
  for (const Step& s : trial_) {
    const double usual = keep ? -1.0 : mean_of(recent_, s.rows);
    if (usual > 0) cost_seconds_ += std::max(0.0, s.seconds - usual);
  }
  if (keep) {
    current_ = probe_;
    recent_.clear();  // turns at the old count (kFirstTrial is below kProbeSteps)
  }
  // After a lost trial the wait doubles, from kFirstProbe at least: the early first trial must
  // not make the next ones early too, each costing a quiet machine ~2%.
  wait_ = keep ? first_trial_ : std::min(std::max(2 * wait_, kFirstProbe), kProbeEvery);
  ref_rows_ = rows;
  ref_seconds_ = keep ? tried : before;
}

}  // namespace chainlm
