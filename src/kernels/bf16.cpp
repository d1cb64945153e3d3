#include "kernels/bf16.h"

#include "core/threads.h"

namespace chainlm {

void to_bf16(const float* src, bf16_t* dst, size_t n) {
#pragma omp parallel for simd if (n >= (size_t)kParallelMinWork)
  for (size_t i = 0; i < n; ++i) dst[i] = to_bf16(src[i]);
}

void from_bf16(const bf16_t* src, float* dst, size_t n) {
#pragma omp parallel for simd if (n >= (size_t)kParallelMinWork)
  for (size_t i = 0; i < n; ++i) dst[i] = from_bf16(src[i]);
}

}  // namespace chainlm
