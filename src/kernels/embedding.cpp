#include "kernels/embedding.h"

#include <cstring>

#include "core/threads.h"

namespace chainlm {

void embedding_forward(int M, int width, const int* tokens, const float* table, int D, float* out,
                       int ldo) {
  parallel_for(M, (long)M * width, [&](long r) {
    std::memcpy(out + r * ldo, table + (long)tokens[r] * D, sizeof(float) * width);
  });
}

void embedding_forward(int M, int width, const int* tokens, const bf16_t* table, int D, float* out,
                       int ldo) {
  parallel_for(M, (long)M * width,
               [&](long r) { from_bf16(table + (long)tokens[r] * D, out + r * ldo, width); });
}

void embedding_forward(int M, int width, const int* tokens, QuantType type, const uint8_t* table,
                       int D, float* out, int ldo) {
  const size_t row = quant_row_bytes(type, D);
  // dequantize_row writes whole rows' worth of its first `width` columns only.
  parallel_for(M, (long)M * width,
               [&](long r) { dequantize_row(type, table + (long)tokens[r] * row, width, out + r * ldo); });
}

void embedding_backward(int M, int width, const int* tokens, const float* dout, int lddo,
                        float* dtable, int D) {
  // Parallel over columns: each thread owns a column range, so no two threads touch the
  // same element even when tokens repeat.
#pragma omp parallel
  {
#pragma omp for schedule(static)
    for (int c0 = 0; c0 < width; c0 += 64) {
      const int c1 = c0 + 64 < width ? c0 + 64 : width;
      for (int r = 0; r < M; ++r) {
        float* dst = dtable + (long)tokens[r] * D;
        const float* src = dout + (long)r * lddo;
#pragma omp simd
        for (int c = c0; c < c1; ++c) dst[c] += src[c];
      }
    }
  }
}

}  // namespace chainlm
