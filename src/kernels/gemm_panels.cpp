#include "kernels/gemm_panels.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/threads.h"
#include "kernels/simd.h"

namespace chainlm {

namespace {

constexpr int kTileRows = 8;  // rows of A a tile keeps: 8 x 32 outputs = 16 of 32 zmm registers

// Panels a tile of R rows takes at once: enough independent accumulators (8 or more) to keep both
// FMA units busy through their 4-cycle latency; one row alone would otherwise wait on 2 chains.
constexpr int panels_per_tile(int R) {
  return R == 1 ? 4 : R <= 3 ? 2 : 1;
}

// out[r][g * kPanel + j] = sum over k in order of A[r][k] * panel g's W[j][k], one fused
// multiply-add at a time from 0. P points at the first panel, the next ones `stride` floats on.
#if defined(__AVX512F__)
template <int R, int G>
[[gnu::noinline]] void panel_tile(int K, const float* A, int lda, const float* P, long stride,
                                  float* out) {
  constexpr int V = 2 * G;  // 16-float vectors per row of the tile
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  // The panels stream in order: fetched 8 KB ahead into L1, 8 rows streamed from memory in
  // 1.01-1.04x the time of one row (3 KB ahead: 1.18-1.24x; bench/few_row_gemm_bench.cpp).
  // Past the end of a panel's K the fetch moves to where the next tile reads, G panels on: a
  // tile of two panels would otherwise fetch the start of its own second panel, read long ago,
  // and a slice of K (the head's chain blocks) the part of its panel the next product reads.
  // 8 mixed CoLM-Air rows 9% faster a step, one row of 4 chains 6%; not for whole panels four
  // at a time (one row): the four streams' jump made dense one-row steps 4-11% slower
  // (bench/RESULTS.md, "Prefetching the next tile").
  constexpr long kAhead = 64 * kPanel;
  const bool sliced = stride != (long)K * kPanel;
  const long to_next_tile = sliced || G < 4 ? (long)G * stride - (long)K * kPanel : 0;
  // Two runs of k, each with its fetch distance fixed (no select in the loop).
  const int k_tail = K > 64 ? K - 64 : 0;
  auto run = [&](int k0, int k1, long ahead) __attribute__((always_inline)) {
    for (int k = k0; k < k1; ++k) {
      __m512 w[V];
      for (int g = 0; g < G; ++g) {
        const float* p = P + g * stride + (long)k * kPanel;
        _mm_prefetch(reinterpret_cast<const char*>(p + ahead), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(p + ahead + 16), _MM_HINT_T0);
        w[2 * g] = _mm512_loadu_ps(p);
        w[2 * g + 1] = _mm512_loadu_ps(p + 16);
      }
      for (int r = 0; r < R; ++r) {
        const __m512 a = _mm512_set1_ps(A[(long)r * lda + k]);
        for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(a, w[v], acc[r][v]);
      }
    }
  };
  run(0, k_tail, kAhead);
  run(k_tail, K, kAhead + to_next_tile);
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm512_storeu_ps(out + r * G * kPanel + v * 16, acc[r][v]);
}
#else
template <int R, int G>
void panel_tile(int K, const float* A, int lda, const float* P, long stride, float* out) {
  for (int r = 0; r < R; ++r)
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < kPanel; ++j) {
        float acc = 0.0f;
        for (int k = 0; k < K; ++k)
          acc = std::fma(A[(long)r * lda + k], P[g * stride + (long)k * kPanel + j], acc);
        out[r * G * kPanel + g * kPanel + j] = acc;
      }
}
#endif

// Panels [p0, p1) of the weight for R rows of A, written to C's columns [col0, col0 + N) they
// hold (C's column c is the weight's row col0 + c).
template <int R>
void rows_over_panels(int K, const float* A, int lda, const float* P, long stride, int p0, int p1,
                      int col0, int N, float* C, int ldc, float beta) {
  constexpr int G = panels_per_tile(R);
  alignas(64) float out[R * G * kPanel];
  for (int p = p0; p < p1;) {
    // The widest tile that fits what is left (a CoLM chain block of 128 outputs gives each of
    // two threads 2 panels).
    int g = G;
    while (p + g > p1) g /= 2;
    if (g == 4)
      panel_tile<R, (G >= 4 ? 4 : 1)>(K, A, lda, P + p * stride, stride, out);
    else if (g == 2)
      panel_tile<R, (G >= 2 ? 2 : 1)>(K, A, lda, P + p * stride, stride, out);
    else
      panel_tile<R, 1>(K, A, lda, P + p * stride, stride, out);
    // The tile's weight rows [p * kPanel, (p + g) * kPanel) within C's columns.
    const int lo = std::max(p * kPanel, col0), hi = std::min((p + g) * kPanel, col0 + N);
    for (int r = 0; r < R; ++r) {
      const float* o = out + r * g * kPanel + (lo - p * kPanel);
      float* c = C + (long)r * ldc + (lo - col0);
      if (beta == 0.0f)
        std::memcpy(c, o, sizeof(float) * (hi - lo));
      else
        for (int n = 0; n < hi - lo; ++n) c[n] = o[n] + beta * c[n];
    }
    p += g;
  }
}

using RowsKernel = void (*)(int, const float*, int, const float*, long, int, int, int, int, float*,
                            int, float);
constexpr RowsKernel kRows[] = {&rows_over_panels<1>, &rows_over_panels<2>, &rows_over_panels<3>,
                                &rows_over_panels<4>, &rows_over_panels<5>, &rows_over_panels<6>,
                                &rows_over_panels<7>, &rows_over_panels<8>};
static_assert(sizeof(kRows) / sizeof(kRows[0]) == kTileRows);

// Columns [col0, col0 + N) for all M rows, over the panels holding them: blocks of ~128 KB of
// panels (in L2), each multiplied by every chunk of 8 rows before the next block, so the weights
// come from memory once for any M.
void panels_for_rows(int M, int K, const float* A, int lda, const float* P, long stride, int col0,
                     int N, float* C, int ldc, float beta) {
  const int p0 = col0 / kPanel, p1 = (col0 + N + kPanel - 1) / kPanel;
  constexpr long kBlockBytes = 128 * 1024;
  const int block =
      (int)std::max(1L, kBlockBytes / ((long)sizeof(float) * kPanel * std::max(K, 1)));
  for (int b0 = p0; b0 < p1; b0 += block) {
    const int b1 = std::min(p1, b0 + block);
    for (int r0 = 0; r0 < M; r0 += kTileRows) {
      const int m = std::min(kTileRows, M - r0);
      kRows[m - 1](K, A + (long)r0 * lda, lda, P, stride, b0, b1, col0, N, C + (long)r0 * ldc, ldc,
                   beta);
    }
  }
}

}  // namespace

void pack_panels(int N, int K, const float* W, int ldw, float* P) {
  const int panels = (N + kPanel - 1) / kPanel;
  // Once per matrix at load; on the threads (a 7B model's matrices are gigabytes).
  parallel_for(panels, (long)N * K, [&](long p) {
    float* dst = P + (std::size_t)p * K * kPanel;
    for (int k = 0; k < K; ++k)
      for (int j = 0; j < kPanel; ++j) {
        const long n = p * kPanel + j;
        dst[(std::size_t)k * kPanel + j] = n < N ? W[(std::size_t)n * ldw + k] : 0.0f;
      }
  });
}

void panel_column_share(int col0, int N, int t, int nt, int* n0, int* n1) {
  const int first = col0 / kPanel, panels = (col0 + N + kPanel - 1) / kPanel - first;
  const int pa = first + (int)((long)panels * t / nt),
            pb = first + (int)((long)panels * (t + 1) / nt);
  *n0 = std::clamp(pa * kPanel - col0, 0, N);
  *n1 = std::clamp(pb * kPanel - col0, 0, N);
}

void gemm_nt_panels(int M, int N, int K, const float* A, int lda, const float* P, int ld, int col0,
                    float* C, int ldc, float beta) {
  if (M == 0 || N == 0) return;
  const long stride = (long)ld * kPanel;
  if (!worth_parallel((long)M * N * K)) {
    panels_for_rows(M, K, A, lda, P, stride, col0, N, C, ldc, beta);
    return;
  }
#pragma omp parallel
  {
    int n0, n1;
    panel_column_share(col0, N, omp_get_thread_num(), omp_get_num_threads(), &n0, &n1);
    if (n1 > n0) panels_for_rows(M, K, A, lda, P, stride, col0 + n0, n1 - n0, C + n0, ldc, beta);
  }
}

bool gemm_panels_native() {
#if defined(__AVX512F__)
  return true;
#else
  return false;
#endif
}

}  // namespace chainlm
