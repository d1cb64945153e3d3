#pragma once
// <immintrin.h> for the kernels' hand-vectorized paths (AVX-512 where the build targets it).
// GCC 12 reports its own _mm512_undefined_ps() pass-through operands as (maybe-)uninitialized,
// so its diagnostics are silenced around the header only, never around the kernels' code.
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#include <immintrin.h>
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
#endif

#if defined(__AVX__)
// The sum of an AVX register's eight floats (the few-row GEMM kernels' final reduction).
inline float horizontal_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif
