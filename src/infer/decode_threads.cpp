#include "infer/decode_threads.h"

#include <algorithm>
#include <map>

#include "core/error.h"

namespace chainlm {

DecodeThreadTuner::DecodeThreadTuner(int max_threads, bool adaptive)
    : max_(max_threads),
      adaptive_(adaptive && max_threads > 1),
      current_(max_threads),
      wait_(kFirstTrial) {
  CHAINLM_CHECK(max_threads >= 1, "the scheduler needs at least one thread (got ", max_threads,
                ")");
}

double DecodeThreadTuner::mean_of(const std::vector<Step>& turns, int shape) {
  double sum = 0;
  int n = 0;
  for (const Step& s : turns)
    if (s.shape == shape) {
      sum += s.seconds;
      ++n;
    }
  return n >= 3 ? sum / n : -1.0;
}

void DecodeThreadTuner::record(int shape, double seconds) {
  if (!adaptive_) return;
  if (probing_) {
    if (warmup_) {  // a trial's first turn wakes or parks a thread: not the count's pace
      warmup_ = false;
      return;
    }
    trial_.push_back({shape, seconds});
    const int n = (int)trial_.size();
    if (n == 2) {  // many times slower twice: a busy core's other thread, not noise
      const double first = mean_of(recent_, trial_[0].shape), second = mean_of(recent_, shape);
      if (first > 0 && second > 0 && trial_[0].seconds > kEarlyLossTwo * first &&
          seconds > kEarlyLossTwo * second) {
        end_trial(false, shape, second, seconds);
        return;
      }
    }
    if (n != kEarlyTurns && n != kProbeSteps) return;  // nothing to decide yet
    // The shape the trial ran most, against the turns just before it of that shape.
    std::map<int, int> count;
    for (const Step& s : trial_) ++count[s.shape];
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
  recent_.push_back({shape, seconds});
  if ((int)recent_.size() > kProbeSteps) recent_.erase(recent_.begin());
  ++since_;
  since_seconds_ += seconds;
  // kFirstProbe turns, or fewer that took kSoonSeconds (at least kFirstTrial): slow turns are
  // what a trial may be needed for, and a quiet machine's short ones had their count flip
  // back and forth on outliers with trials 8 turns apart.
  const bool soon =
      since_ >= kFirstProbe || (since_ >= kFirstTrial && since_seconds_ >= kSoonSeconds);
  const bool due = since_ >= wait_ || (changed_ && soon);
  // (recent_ holds only turns at the chosen count: end_trial empties it on a change.)
  const bool slower = soon && ref_seconds_ > 0 && shape == ref_shape_ &&
                      mean_of(recent_, ref_shape_) > kSlowdown * ref_seconds_;
  if ((!due && !slower) || since_seconds_ * kTrialShare < cost_seconds_) return;
  // A trial of one thread fewer or one more, alternating when both exist.
  const bool fewer = current_ == max_ || (current_ > 1 && try_fewer_);
  try_fewer_ = !fewer;
  probe_ = fewer ? current_ - 1 : current_ + 1;
  probing_ = true;
  warmup_ = true;
  trial_.clear();
}

void DecodeThreadTuner::end_trial(bool keep, int shape, double before, double tried) {
  probing_ = false;
  since_ = 0;
  since_seconds_ = 0;
  // What a lost trial cost: each of its turns' time beyond the chosen count's turns of its shape.
  cost_seconds_ = 0;
  for (const Step& s : trial_) {
    const double usual = keep ? -1.0 : mean_of(recent_, s.shape);
    if (usual > 0) cost_seconds_ += std::max(0.0, s.seconds - usual);
  }
  if (keep) {
    current_ = probe_;
    recent_.clear();  // turns at the old count (kFirstTrial is below kProbeSteps)
  }
  // After a lost trial the wait doubles, from kFirstProbe at least: the early first trial must
  // not make the next ones early too, each costing a quiet machine ~2%. After a change, the next
  // comes soon (kFirstProbe turns or kSoonSeconds).
  changed_ = keep;
  wait_ = keep ? kFirstProbe : std::min(std::max(2 * wait_, kFirstProbe), kProbeEvery);
  ref_shape_ = shape;
  ref_seconds_ = keep ? tried : before;
}

}  // namespace chainlm
