#include "kernels/cross_entropy.h"

#include <cmath>
#include <limits>

#include "core/threads.h"

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
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < V; ++j) sum += std::exp(lr[j] - mx);
    const float log_z = mx + std::log(sum);
    const float loss = log_z - lr[t];
    total += loss;
    if (row_loss) row_loss[r] = loss;
    if (dlogits) {
      float* dr = dlogits + (long)r * ld;
      const float inv = grad_scale / sum;
#pragma omp simd
      for (int j = 0; j < V; ++j) dr[j] = std::exp(lr[j] - mx) * inv;
      dr[t] -= grad_scale;
    }
  }
  return total;
}

}  // namespace chainlm
