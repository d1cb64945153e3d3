#include "kernels/bf16.h"

#include "core/threads.h"

namespace chainlm {

// Small conversions stay out of parallel regions (core/threads.h, worth_parallel).
void to_bf16(const float* src, bf16_t* dst, size_t n) {
  if (worth_parallel((long)n)) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
    return;
  }
#pragma omp simd
  for (size_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
}

void from_bf16(const bf16_t* src, float* dst, size_t n) {
  if (worth_parallel((long)n)) {
#pragma omp parallel for simd
    for (size_t i = 0; i < n; ++i) dst[i] = from_bf16(src[i]);
    return;
  }
#pragma omp simd
  for (size_t i = 0; i < n; ++i) dst[i] = from_bf16(src[i]);
}

void to_bf16_rows(int rows, int cols, const float* src, long ld_src, bf16_t* dst, long ld_dst) {
  parallel_for(rows, (long)rows * cols, [&](long i) {
    const float* s = src + i * ld_src;
    bf16_t* d = dst + i * ld_dst;
#pragma omp simd
    for (int j = 0; j < cols; ++j) d[j] = to_bf16(s[j]);
  });
}

}  // namespace chainlm
