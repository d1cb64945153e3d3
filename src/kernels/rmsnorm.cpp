#include "kernels/rmsnorm.h"

#include <cmath>
#include <vector>

#include <omp.h>

#include "core/threads.h"

namespace chainlm {

namespace {

template <typename Out>
void forward(const ChainSplit& split, int k, int M, const float* x, int ldx, const float* gain,
             float eps, Out* y, int ldy, float* rstd) {
  const int n = split.n();
  parallel_for(M, (long)M * split.prefix(k), [&](long r) {
    const float* xr = x + (long)r * ldx;
    Out* yr = y + (long)r * ldy;
    for (int c = 0; c < k; ++c) {
      const int b = split.begin(c), e = split.end(c);
      float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
      for (int j = b; j < e; ++j) ss += xr[j] * xr[j];
      const float s = 1.0f / std::sqrt(ss / (e - b) + eps);
      rstd[(long)r * n + c] = s;
#pragma omp simd
      for (int j = b; j < e; ++j) store_element(yr[j], xr[j] * s * gain[j]);
    }
  });
}

}  // namespace

void rmsnorm_forward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                     const float* gain, float eps, float* y, int ldy, float* rstd) {
  forward(split, k, M, x, ldx, gain, eps, y, ldy, rstd);
}

void rmsnorm_forward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                     const float* gain, float eps, bf16_t* y, int ldy, float* rstd) {
  forward(split, k, M, x, ldx, gain, eps, y, ldy, rstd);
}

void rmsnorm_backward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                      const float* gain, const float* rstd, const float* dy, int lddy, float* dx,
                      int lddx, float* dgain) {
  const int n = split.n();
  const int width = split.prefix(k);
  // y_j = x_j * s * g_j with s = (mean(x^2)+eps)^-1/2
  // dx_j = s * g_j * dy_j - x_j * s^3 / w * sum_l(dy_l g_l x_l)
  // Per-thread partial gain gradients, summed in thread order afterwards, so the result is
  // bit-reproducible run to run (a critical section would sum in arrival order).
  const int max_threads = omp_get_max_threads();
  thread_local std::vector<float> partial;
  if (dgain) partial.assign((size_t)max_threads * width, 0.0f);
  float* partial_base = partial.data();  // thread_local: take the caller's buffer here
  int used_threads = 1;
#pragma omp parallel if ((long)M * width >= kParallelMinWork)
  {
    float* dgain_local = dgain ? partial_base + (size_t)omp_get_thread_num() * width : nullptr;
#pragma omp single
    used_threads = omp_get_num_threads();
#pragma omp for schedule(static)
    for (int r = 0; r < M; ++r) {
      const float* xr = x + (long)r * ldx;
      const float* dyr = dy + (long)r * lddy;
      float* dxr = dx + (long)r * lddx;
      for (int c = 0; c < k; ++c) {
        const int b = split.begin(c), e = split.end(c);
        const float s = rstd[(long)r * n + c];
        float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
        for (int j = b; j < e; ++j) dot += dyr[j] * gain[j] * xr[j];
        const float coef = dot * s * s * s / (e - b);
#pragma omp simd
        for (int j = b; j < e; ++j) dxr[j] += s * gain[j] * dyr[j] - xr[j] * coef;
        if (dgain) {
#pragma omp simd
          for (int j = b; j < e; ++j) dgain_local[j] += dyr[j] * xr[j] * s;
        }
      }
    }
  }
  if (dgain)
    for (int t = 0; t < used_threads; ++t)
      for (int j = 0; j < width; ++j) dgain[j] += partial[(size_t)t * width + j];
}

}  // namespace chainlm
