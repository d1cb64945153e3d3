#pragma once
// Token embedding lookup.
//   table is (V, D) row-major; tokens is (M); out is (M, width) with row stride ldo,
//   reading the first `width` columns (sub-model k reads columns [0, D_<=k)).
#include "kernels/bf16.h"
#include "kernels/weight_ref.h"

namespace chainlm {

void embedding_forward(int M, int width, const int* tokens, const float* table, int D, float* out,
                       int ldo);
// The same from a bf16 table (widened exactly).
void embedding_forward(int M, int width, const int* tokens, const bf16_t* table, int D, float* out,
                       int ldo);
// The same from a block-quantized table (quant.h), dequantized.
void embedding_forward(int M, int width, const int* tokens, QuantType type, const uint8_t* table,
                       int D, float* out, int ldo);
inline void embedding_forward(int M, int width, const int* tokens, WeightRef table, int D,
                              float* out, int ldo) {
  if (table.quant)
    embedding_forward(M, width, tokens, table.quant_type, table.quant, D, out, ldo);
  else if (table.bf16)
    embedding_forward(M, width, tokens, table.bf16, D, out, ldo);
  else
    embedding_forward(M, width, tokens, table.f32, D, out, ldo);
}
// dtable[token, :width] += dout[row]. Serial over rows so repeated tokens never race.
void embedding_backward(int M, int width, const int* tokens, const float* dout, int lddo,
                        float* dtable, int D);

}  // namespace chainlm
