#pragma once
// AdamW (decoupled weight decay), one fused pass over a flat parameter range.
//   p, g, m, v are (n); the gradient is scaled by grad_scale first (clipping, averaging).
#include <cstddef>

namespace chainlm {

struct AdamWParams {
  float lr = 3e-4f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // applied to this range (0 for norms)
  long step = 1;              // 1-based, for bias correction
};

void adamw_update(std::size_t n, float* p, const float* g, float* m, float* v, float grad_scale,
                  const AdamWParams& hp);

// The same update on a column range of a row-major matrix: columns [col_begin, col_end) of each
// of `rows` rows of width `cols`; the other columns (frozen, SPEC A7, or read by no trained
// sub-model) are not read or written.
void adamw_update_columns(std::size_t rows, std::size_t cols, std::size_t col_begin,
                          std::size_t col_end, float* p, const float* g, float* m, float* v,
                          float grad_scale, const AdamWParams& hp);

}  // namespace chainlm
