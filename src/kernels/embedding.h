#pragma once
// Token embedding lookup.
//   table is (V, D) row-major; tokens is (M); out is (M, width) with row stride ldo,
//   reading the first `width` columns (sub-model k reads columns [0, D_<=k)).
namespace chainlm {

void embedding_forward(int M, int width, const int* tokens, const float* table, int D, float* out,
                       int ldo);
// dtable[token, :width] += dout[row]. Serial over rows so repeated tokens never race.
void embedding_backward(int M, int width, const int* tokens, const float* dout, int lddo,
                        float* dtable, int D);

}  // namespace chainlm
