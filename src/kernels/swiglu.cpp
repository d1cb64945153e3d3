#include "kernels/swiglu.h"

#include "core/threads.h"
#include "kernels/fast_exp.h"

namespace chainlm {

void swiglu_forward(int M, int width, const float* a, const float* b, float* g, int ld) {
  parallel_for(M, (long)M * width, [&](long r) {
    const float* ar = a + (long)r * ld;
    const float* br = b + (long)r * ld;
    float* gr = g + (long)r * ld;
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      const float sig = 1.0f / (1.0f + fast_exp(-ar[j]));
      gr[j] = ar[j] * sig * br[j];
    }
  });
}

void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, float* da,
                     float* db, int ld) {
  parallel_for(M, (long)M * width, [&](long r) {
    const float* ar = a + (long)r * ld;
    const float* br = b + (long)r * ld;
    const float* dgr = dg + (long)r * ld;
    float* dar = da + (long)r * ld;
    float* dbr = db + (long)r * ld;
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      const float x = ar[j];
      const float sig = 1.0f / (1.0f + fast_exp(-x));
      const float silu = x * sig;
      dbr[j] = dgr[j] * silu;
      dar[j] = dgr[j] * br[j] * sig * (1.0f + x * (1.0f - sig));
    }
  });
}

}  // namespace chainlm
