#include "kernels/gemm.h"

#include <cblas.h>

#include "core/threads.h"
#include "kernels/gemm_backend.h"
#include "kernels/onednn_matmul.h"
#include "kernels/simd.h"

namespace chainlm {

namespace {

// C[m, n] = A[m, :K] . B[n, :K] (+ beta C[m, n]) for M <= kMaxDecodeRows rows and n in [n0, n1): every
// row of B (a weight row) is read once for all M rows of A, which stay in L1. Measured on
// 1408x512 weights streamed from memory: M = 4 as fast as sgemv's one row, given the software
// prefetch into L2 a few rows ahead (without it, 1.4x slower); two accumulator sets halve the
// FMA latency chains.
template <int M>
void few_rows_nt(int n0, int n1, int K, const float* A, int lda, const float* B, int ldb, float* C,
                 int ldc, float beta) {
  for (int n = n0; n < n1; ++n) {
    const float* w = B + (long)n * ldb;
    float sum[M];
#if defined(__AVX512F__)
    const float* ahead = w + 8L * ldb;  // prefetching past the end of B is harmless
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 32 <= K; k += 32) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k + 16), _MM_HINT_T1);
      const __m512 w0 = _mm512_loadu_ps(w + k), w1 = _mm512_loadu_ps(w + k + 16);
      for (int m = 0; m < M; ++m) {
        const float* a = A + (long)m * lda + k;
        acc0[m] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a), acc0[m]);
        acc1[m] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(a + 16), acc1[m]);
      }
    }
    for (; k < K; k += 16) {
      const __mmask16 mk = static_cast<__mmask16>(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k), _MM_HINT_T1);
      const __m512 wv = _mm512_maskz_loadu_ps(mk, w + k);
      for (int m = 0; m < M; ++m)
        acc0[m] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mk, A + (long)m * lda + k), acc0[m]);
    }
    for (int m = 0; m < M; ++m) sum[m] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m]));
#else
    for (int m = 0; m < M; ++m) {
      float acc = 0.0f;
      const float* a = A + (long)m * lda;
#pragma omp simd reduction(+ : acc)
      for (int k = 0; k < K; ++k) acc += a[k] * w[k];
      sum[m] = acc;
    }
#endif
    for (int m = 0; m < M; ++m) {
      float& c = C[(long)m * ldc + n];
      c = beta == 0.0f ? sum[m] : sum[m] + beta * c;
    }
  }
}

using FewRowsKernel = void (*)(int, int, int, const float*, int, const float*, int, float*, int,
                               float);
constexpr FewRowsKernel kFewRows[] = {&few_rows_nt<1>, &few_rows_nt<2>, &few_rows_nt<3>, &few_rows_nt<4>,
                                      &few_rows_nt<5>, &few_rows_nt<6>, &few_rows_nt<7>,
                                      &few_rows_nt<8>};
static_assert(sizeof(kFewRows) / sizeof(kFewRows[0]) == kMaxDecodeRows);

// The GEMMs with more rows than the few-row paths take, on the chosen backend.
void large_gemm(bool transa, bool transb, int M, int N, int K, const float* A, int lda,
                const float* B, int ldb, float* C, int ldc, float beta) {
  if (K == 0) {  // no products: C = beta C (libraries differ on empty reductions)
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) C[(long)m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[(long)m * ldc + n];
    return;
  }
  if (gemm_backend() == GemmBackend::OneDnn) {
    onednn_sgemm(transa, transb, M, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  cblas_sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans, transb ? CblasTrans : CblasNoTrans,
              M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (M <= kMaxDecodeRows) {
    // A few rows (decoding steps: one sequence's token, a PHD step's K copies, a server's
    // batch): bandwidth-bound, and sgemm would pack the weight first (2-3x the time of
    // streaming it once). One row goes through the same kernel rather than sgemv, whose sums
    // come out in another order: a row's result must not depend on the rows beside it.
    const FewRowsKernel f = kFewRows[M - 1];
    for_column_ranges(N, (long)M * N * K, [&](int n0, int n1) { f(n0, n1, K, A, lda, B, ldb, C, ldc, beta); });
    return;
  }
  large_gemm(false, true, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

void gemm_nn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta) {
  if (M == 0 || N == 0) return;
  large_gemm(false, false, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

void gemm_tn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta) {
  if (M == 0 || N == 0) return;
  large_gemm(true, false, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

}  // namespace chainlm
