#include "kernels/adamw.h"

#include <cmath>

namespace chainlm {

void adamw_update(std::size_t n, float* p, const float* g, float* m, float* v, float grad_scale,
                  const AdamWParams& hp) {
  const float bc1 = 1.0f - std::pow(hp.beta1, (float)hp.step);
  const float bc2 = 1.0f - std::pow(hp.beta2, (float)hp.step);
  const float step_size = hp.lr / bc1;
  const float inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
  const float decay = 1.0f - hp.lr * hp.weight_decay;
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) {
    const float gi = g[i] * grad_scale;
    const float mi = hp.beta1 * m[i] + (1.0f - hp.beta1) * gi;
    const float vi = hp.beta2 * v[i] + (1.0f - hp.beta2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (std::sqrt(vi) * inv_sqrt_bc2 + hp.eps);
  }
}

}  // namespace chainlm
