#include "kernels/cross_entropy.h"

#include <cmath>
#include <limits>

#include "core/threads.h"
#include "kernels/fast_exp.h"

namespace chainlm {

double cross_entropy_forward_backward(int M, int V, const float* logits, int ld, const int* targets,
                                      float grad_scale, float* dlogits, float* row_loss) {
  double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total) if ((long)M * V >= kParallelMinWork)
  for (int r = 0; r < M; ++r) {
    const float* lr = logits + (long)r * ld;
    const int t = targets[r];
    if (t < 0) {
      if (row_loss) row_loss[r] = 0.0f;
      if (dlogits) {
        float* dr = dlogits + (long)r * ld;
        for (int j = 0; j < V; ++j) dr[j] = 0.0f;
      }
      continue;
    }
    float mx = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; ++j) mx = lr[j] > mx ? lr[j] : mx;
    // The target's logit is read before dlogits (which may be the logits themselves) is written.
    const float target_logit = lr[t];
    float sum = 0.0f;
    if (dlogits) {
      // e^(l - max) is stored on the way and scaled afterwards: one exp per logit, not two.
      float* dr = dlogits + (long)r * ld;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < V; ++j) sum += (dr[j] = fast_exp(lr[j] - mx));
      const float inv = grad_scale / sum;
#pragma omp simd
      for (int j = 0; j < V; ++j) dr[j] *= inv;
      dr[t] -= grad_scale;
    } else {
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < V; ++j) sum += fast_exp(lr[j] - mx);
    }
    const float loss = mx + std::log(sum) - target_logit;
    total += loss;
    if (row_loss) row_loss[r] = loss;
  }
  return total;
}

}  // namespace chainlm
