#include "kernels/adamw.h"

#include <cmath>

namespace chainlm {

namespace {

struct AdamWConstants {
  float step_size, inv_sqrt_bc2, decay;
  explicit AdamWConstants(const AdamWParams& hp) {
    const float bc1 = 1.0f - std::pow(hp.beta1, (float)hp.step);
    const float bc2 = 1.0f - std::pow(hp.beta2, (float)hp.step);
    step_size = hp.lr / bc1;
    inv_sqrt_bc2 = 1.0f / std::sqrt(bc2);
    decay = 1.0f - hp.lr * hp.weight_decay;
  }
};

// One element; shared by both entry points so a column range updates bit-identically to a
// whole-tensor update.
inline void adamw_element(float& p, float g, float& m, float& v, float grad_scale,
                          const AdamWParams& hp, const AdamWConstants& k) {
  const float gi = g * grad_scale;
  const float mi = hp.beta1 * m + (1.0f - hp.beta1) * gi;
  const float vi = hp.beta2 * v + (1.0f - hp.beta2) * gi * gi;
  m = mi;
  v = vi;
  p = p * k.decay - k.step_size * mi / (std::sqrt(vi) * k.inv_sqrt_bc2 + hp.eps);
}

}  // namespace

void adamw_update(std::size_t n, float* p, const float* g, float* m, float* v, float grad_scale,
                  const AdamWParams& hp_in) {
  // Local copies: through references the compiler must assume p/m/v stores change them, and
  // reloads them every element.
  const AdamWParams hp = hp_in;
  const AdamWConstants k(hp);
#pragma omp parallel for simd schedule(static)
  for (std::size_t i = 0; i < n; ++i) adamw_element(p[i], g[i], m[i], v[i], grad_scale, hp, k);
}

void adamw_update_columns(std::size_t rows, std::size_t cols, std::size_t col_begin,
                          std::size_t col_end, float* p, const float* g, float* m, float* v,
                          float grad_scale, const AdamWParams& hp_in) {
  const AdamWParams hp = hp_in;
  const AdamWConstants k(hp);
#pragma omp parallel for schedule(static)
  for (std::size_t r = 0; r < rows; ++r) {
    const std::size_t o = r * cols;
#pragma omp simd
    for (std::size_t j = col_begin; j < col_end; ++j)
      adamw_element(p[o + j], g[o + j], m[o + j], v[o + j], grad_scale, hp, k);
  }
}

}  // namespace chainlm
