#include "kernels/swiglu.h"

#include "core/threads.h"
#include "kernels/fast_exp.h"

namespace chainlm {

namespace {

template <typename Out>
void forward(int M, int width, const float* a, const float* b, Out* g, int ld) {
  parallel_for(M, (long)M * width, [&](long r) {
    const float* ar = a + (long)r * ld;
    const float* br = b + (long)r * ld;
    Out* gr = g + (long)r * ld;
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      const float sig = 1.0f / (1.0f + fast_exp(-ar[j]));
      store_element(gr[j], ar[j] * sig * br[j]);
    }
  });
}

template <typename Out>
void backward(int M, int width, const float* a, const float* b, const float* dg, Out* da, Out* db,
              int ld) {
  parallel_for(M, (long)M * width, [&](long r) {
    const float* ar = a + (long)r * ld;
    const float* br = b + (long)r * ld;
    const float* dgr = dg + (long)r * ld;
    Out* dar = da + (long)r * ld;
    Out* dbr = db + (long)r * ld;
#pragma omp simd
    for (int j = 0; j < width; ++j) {
      const float x = ar[j];
      const float sig = 1.0f / (1.0f + fast_exp(-x));
      const float silu = x * sig;
      store_element(dbr[j], dgr[j] * silu);
      store_element(dar[j], dgr[j] * br[j] * sig * (1.0f + x * (1.0f - sig)));
    }
  });
}

}  // namespace

void swiglu_forward(int M, int width, const float* a, const float* b, float* g, int ld) {
  forward(M, width, a, b, g, ld);
}

void swiglu_forward(int M, int width, const float* a, const float* b, bf16_t* g, int ld) {
  forward(M, width, a, b, g, ld);
}

void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, float* da,
                     float* db, int ld) {
  backward(M, width, a, b, dg, da, db, ld);
}

void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, bf16_t* da,
                     bf16_t* db, int ld) {
  backward(M, width, a, b, dg, da, db, ld);
}

}  // namespace chainlm
