#pragma once
// The read-back checks of export, quantize and expand compare two models' logits on a probe.
// std::max(d, NaN) keeps d, so a NaN logit would read as "no difference": here any NaN or
// infinity makes the difference infinite, which every check refuses.
#include <algorithm>
#include <cmath>
#include <cstddef>

namespace chainlm::cli {

inline double max_abs_difference(const float* a, const float* b, std::size_t n) {
  double diff = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = std::fabs((double)a[i] - (double)b[i]);
    if (!std::isfinite(d)) return INFINITY;
    diff = std::max(diff, d);
  }
  return diff;
}

// Whether every logit is finite: a model whose own logits are not (a weight of 3e38 or NaN in
// a file without checksums) is refused as such, not as "a bug" when its copy differs by inf.
inline bool all_finite(const float* v, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    if (!std::isfinite(v[i])) return false;
  return true;
}

// The message for a model whose logits are not finite.
inline const char* kNonFiniteLogits =
    "'s own logits are not finite: a weight holds NaN or a value near float's range (a corrupt "
    "file, or a "
    "run that diverged); nothing was written";

}  // namespace chainlm::cli
