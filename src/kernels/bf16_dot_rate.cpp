#include "kernels/bf16_dot_rate.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "core/timer.h"

namespace chainlm {

namespace {

#if defined(__AVX512BF16__)
// Independent sums per loop: enough to cover either instruction's latency at its issue rate.
constexpr int kChains = 12;
constexpr int kIterations = 20000;

// Seconds for kIterations x kChains FMAs (dot = false) or dot products; the sums are returned
// through `sink`, so the compiler keeps every one.
double time_chains(bool dot, float* sink) {
  __m512 acc[kChains];
  for (int i = 0; i < kChains; ++i) acc[i] = _mm512_set1_ps(1e-3f * i);
  const __m512 a = _mm512_set1_ps(0.999f), b = _mm512_set1_ps(1e-6f);
  const __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80),
                 y = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  const Timer t;
  if (dot) {
    for (int n = 0; n < kIterations; ++n) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], x, y);
    }
  } else {
    for (int n = 0; n < kIterations; ++n) {
#pragma GCC unroll 12
      for (int i = 0; i < kChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    }
  }
  const double s = t.seconds();
  alignas(64) float lanes[16];
  for (int i = 0; i < kChains; ++i) {
    _mm512_store_ps(lanes, acc[i]);
    *sink += lanes[0];
  }
  return s;
}

double measure_ratio() {
  float sink = 0.0f;
  time_chains(false, &sink);  // a first pass wakes the 512-bit units up
  double fma = 1e9, dot = 1e9;
  for (int r = 0; r < 5; ++r) {
    fma = std::min(fma, time_chains(false, &sink));
    dot = std::min(dot, time_chains(true, &sink));
  }
  volatile float keep = sink;
  (void)keep;
  // A dot product is 64 operations (32 multiplies, 32 adds), an FMA over 16 lanes 32.
  return dot > 0.0 ? (64.0 / dot) / (32.0 / fma) : 0.0;
}
#endif

}  // namespace

double bf16_dot_flops_ratio() {
#if defined(__AVX512BF16__)
  static const double ratio = measure_ratio();
  return ratio;
#else
  return 0.0;
#endif
}

bool bf16_large_gemm_native(const char* onednn_isa, double dot_flops_ratio) {
  if (std::strstr(onednn_isa, "amx")) return true;
  return std::strstr(onednn_isa, "bf16") && bf16_dot_outruns_fma(dot_flops_ratio);
}

}  // namespace chainlm
