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

#if defined(__AVX2__)
// sums[i] = horizontal_sum(x[i]) for 8 registers at once: the same additions of the same lanes
// in the same tree (lane i + lane i + 4, then + 2, then + 1), so the same bits, in 7 additions
// and 14 shuffles where 8 separate sums take ~40 instructions (the AVX2 few-row kernel's tiles
// of 5-8 rows at small K, where they were a large part of the work).
inline void horizontal_sums8(const __m256* x, float* sums) {
  __m256 y[4], z[2];
  for (int p = 0; p < 4; ++p)  // lanes 0-3: x[2p]'s i + (i + 4); lanes 4-7: x[2p + 1]'s
    y[p] = _mm256_add_ps(_mm256_permute2f128_ps(x[2 * p], x[2 * p + 1], 0x20),
                         _mm256_permute2f128_ps(x[2 * p], x[2 * p + 1], 0x31));
  // 128-bit lane h of z[q]: x[4q + h]'s two sums of i and i + 2, then x[4q + h + 2]'s
  for (int q = 0; q < 2; ++q)
    z[q] = _mm256_add_ps(_mm256_shuffle_ps(y[2 * q], y[2 * q + 1], 0x44),
                         _mm256_shuffle_ps(y[2 * q], y[2 * q + 1], 0xEE));
  // v holds the sums of x[0], x[2], x[4], x[6], x[1], x[3], x[5], x[7]; one permute orders them.
  const __m256 v =
      _mm256_add_ps(_mm256_shuffle_ps(z[0], z[1], 0x88), _mm256_shuffle_ps(z[0], z[1], 0xDD));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  _mm256_storeu_ps(sums, _mm256_permutevar8x32_ps(v, order));
}
#endif

#if defined(__AVX512F__)
// sums[i] = horizontal_sum(low half of x[i] + its high half), which is also GCC's
// _mm512_reduce_add_ps(x[i]), for 16 registers at once: the same additions of the same lanes,
// in the same tree, so the same bits (a + b and b + a are the same float), in 15 additions, 30
// shuffles and a permute where 16 separate sums take ~130 instructions (for the quantized batch
// tiles at K = 512, 8 pairs of blocks a tile, those were a sixth of the work).
// Each level adds lane i to lane i + h for h = 8, 4, 2, 1 of every register, two registers
// packed into one at each level.
inline void horizontal_sums16(const __m512* x, float* sums) {
  __m512 y[8], z[4], w[2];
  for (int p = 0; p < 8; ++p)  // lanes 0-7: x[2p]'s i + (i + 8); lanes 8-15: x[2p + 1]'s
    y[p] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0x44),
                         _mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0xEE));
  for (int q = 0; q < 4; ++q)  // 128-bit lane k: x[4q + k]'s four sums of lanes i and i + 4
    z[q] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * q], y[2 * q + 1], 0x88),
                         _mm512_shuffle_f32x4(y[2 * q], y[2 * q + 1], 0xDD));
  for (int h = 0; h < 2; ++h)  // lane k: x[8h + k]'s two sums of i and i + 2, then x[8h + 4 + k]'s
    w[h] = _mm512_add_ps(_mm512_shuffle_ps(z[2 * h], z[2 * h + 1], 0x44),
                         _mm512_shuffle_ps(z[2 * h], z[2 * h + 1], 0xEE));
  // Lane 4k + m: x[4m + k]'s sum; one permute puts x[i]'s in lane i.
  const __m512 v =
      _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  _mm512_storeu_ps(sums, _mm512_permutexvar_ps(order, v));
}
#endif
