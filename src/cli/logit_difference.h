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

}  // namespace chainlm::cli
