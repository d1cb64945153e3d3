#include "kernels/gemm.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <exception>
#include <vector>

#include "core/openblas.h"
#include "core/thread_scratch.h"
#include "core/threads.h"
#include "kernels/bf16.h"
#include "kernels/gemm_backend.h"
#include "kernels/gemm_quant_rows.h"
#include "kernels/job_inputs.h"
#include "kernels/onednn_matmul.h"
#include "kernels/simd.h"

namespace chainlm {

namespace {

// AVX2 builds have their own few-row kernel (few_rows_avx2); AVX-512 and portable builds this one.
#if defined(__AVX2__) && defined(__FMA__) && !defined(__AVX512F__)
#define CHAINLM_FEW_ROWS_AVX2 1
#else
#define CHAINLM_FEW_ROWS_AVX2 0
#endif

#if !CHAINLM_FEW_ROWS_AVX2
#if defined(__AVX512F__)
// R rows of A against one weight row w: 16-float blocks, the even ones into acc0 and the odd
// ones into acc1, the masked tail into acc0, then the fixed horizontal sum of acc0 + acc1: the
// same order for every R, which keeps decoding batches bit-invariant. The row is fetched into
// L1 four rows ahead (`ahead`; it was L2, eight rows ahead). Kept out of line: called once per
// weight row, it measured 1.3-1.4x faster at 4 rows and 1.2x at 8 than the same loop inlined
// into the loop over weight rows (40 matrices 1408x512 streamed from memory, 1 thread;
// bench/RESULTS.md), and no slower at 1 or 2 rows.
template <int R>
[[gnu::noinline]] void dot_weight_row(int K, const float* A, int lda, const float* w,
                                      const float* ahead, float* sum) {
  __m512 acc0[R], acc1[R];
  for (int r = 0; r < R; ++r) acc0[r] = acc1[r] = _mm512_setzero_ps();
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    _mm_prefetch(reinterpret_cast<const char*>(ahead + k), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(ahead + k + 16), _MM_HINT_T0);
    const __m512 w0 = _mm512_loadu_ps(w + k), w1 = _mm512_loadu_ps(w + k + 16);
    for (int r = 0; r < R; ++r) {
      const float* a = A + (long)r * lda + k;
      acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(a), acc0[r]);
      acc1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(a + 16), acc1[r]);
    }
  }
  for (; k < K; k += 16) {
    const __mmask16 mk = static_cast<__mmask16>(K - k >= 16 ? 0xFFFF : (1u << (K - k)) - 1);
    const __m512 wv = _mm512_maskz_loadu_ps(mk, w + k);
    for (int r = 0; r < R; ++r)
      acc0[r] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(mk, A + (long)r * lda + k), acc0[r]);
  }
  for (int r = 0; r < R; ++r) sum[r] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r]));
}
#endif

// C[m, n] = A[m, :K] . B[n, :K] (+ beta C[m, n]) for M <= kMaxDecodeRows rows and n in [n0, n1):
// every row of B (a weight row) is read from memory once for all M rows of A, which stay in L1.
template <int M>
void few_rows_nt(int n0, int n1, int K, const float* A, int lda, const float* B, int ldb, float* C,
                 int ldc, float beta) {
  for (int n = n0; n < n1; ++n) {
    const float* w = B + (long)n * ldb;
    float sum[M];
#if defined(__AVX512F__)
    dot_weight_row<M>(K, A, lda, w, w + 4L * ldb, sum);  // prefetching past B's end is harmless
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

#endif

#if CHAINLM_FEW_ROWS_AVX2
// AVX2 (16 vector registers): tiles of R rows of A by S weight rows, one 8-lane accumulator per
// pair, so a weight vector loaded once serves R rows and an activation vector S weight rows
// (at 8 rows of A the single-row loop of the portable path reached a fifth of the FMA peak).
// Up to 4 rows: tiles of 4 x 3; from 5 rows: all rows against one weight row at a time, so the
// weights stream once (measured 15% faster at 8 rows than two passes of 4 x 3 tiles).
// Every (row, weight row) pair sums the same way whatever the tile: 8-float blocks in order
// into one accumulator, its fixed horizontal sum, then the tail in order with fused
// multiply-adds, which keeps decoding batches bit-invariant (gemm.h kMaxDecodeRows).
template <int R, int S>
void tile_avx2(int K, const float* A, int lda, const float* W, int ldb, float* out) {
  __m256 acc[R][S];
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < S; ++s) acc[r][s] = _mm256_setzero_ps();
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 w[S];
    for (int s = 0; s < S; ++s) {
      const float* ws = W + (long)s * ldb + k;
      // Weights stream from memory: fetch into L2 the rows a few tiles ahead, once a line.
      if (k % 16 == 0) _mm_prefetch(reinterpret_cast<const char*>(ws + 8L * ldb), _MM_HINT_T1);
      w[s] = _mm256_loadu_ps(ws);
    }
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_loadu_ps(A + (long)r * lda + k);
      for (int s = 0; s < S; ++s) acc[r][s] = _mm256_fmadd_ps(a, w[s], acc[r][s]);
    }
  }
  // The fixed horizontal sums, eight registers at a time from four (horizontal_sums8: the same
  // bits; 8 mixed CoLM-Air rows' steps ~10% faster, their chain blocks' K being 128-352).
  constexpr int kPairs = R * S, kGroups = (kPairs + 7) / 8;
  alignas(32) float sums[kGroups * 8];
  if constexpr (kPairs < 4) {
    for (int i = 0; i < kPairs; ++i) sums[i] = horizontal_sum(acc[i / S][i % S]);
  } else {
    for (int g = 0; g < kGroups; ++g) {
      __m256 x[8];
      for (int i = 0; i < 8; ++i)
        x[i] = g * 8 + i < kPairs ? acc[(g * 8 + i) / S][(g * 8 + i) % S] : _mm256_setzero_ps();
      horizontal_sums8(x, sums + g * 8);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < S; ++s) {
      float sum = sums[r * S + s];
      for (int t = k; t < K; ++t) sum = std::fma(A[(long)r * lda + t], W[(long)s * ldb + t], sum);
      out[r * S + s] = sum;
    }
}

// R rows of A against weight rows [n0, n1) with K cut into slices whose R rows of A fit in L1:
// each group of weight rows runs slice by slice, its accumulators kept in memory between
// slices. Eight rows of K = 1408 (45 KB; the FFN's down projection of the 30M model) read A
// from L2 for every weight row in one pass and took 2.2x the time of one row there, against
// 1.1x at K = 512 (40 matrices streamed, 2 threads, AVX2 EPYC; bench/RESULTS.md). Every lane
// sees the same fused multiply-adds in the same order as tile_avx2<R, 1>, so the bits are
// those of one pass (and of the row alone).
template <int R>
void sliced_rows_avx2(int n0, int n1, int K, int slice, const float* A, int lda, const float* B,
                      int ldb, float* C, int ldc, float beta) {
  constexpr int kGroup = 16;  // weight rows whose accumulators wait between slices (4 KB at 8 rows)
  alignas(32) float partial[kGroup][R][8];
  const int k8 = K / 8 * 8;
  for (int g0 = n0; g0 < n1; g0 += kGroup) {
    const int g1 = std::min(n1, g0 + kGroup);
    for (int kb = 0; kb < k8; kb += slice) {
      const int ke = std::min(k8, kb + slice);
      for (int n = g0; n < g1; ++n) {
        const float* w = B + (long)n * ldb;
        __m256 acc[R];
        for (int r = 0; r < R; ++r)
          acc[r] = kb == 0 ? _mm256_setzero_ps() : _mm256_load_ps(partial[n - g0][r]);
        for (int k = kb; k < ke; k += 8) {
          if (k % 16 == 0)
            _mm_prefetch(reinterpret_cast<const char*>(w + 8L * ldb + k), _MM_HINT_T1);
          const __m256 wv = _mm256_loadu_ps(w + k);
          for (int r = 0; r < R; ++r)
            acc[r] = _mm256_fmadd_ps(_mm256_loadu_ps(A + (long)r * lda + k), wv, acc[r]);
        }
        for (int r = 0; r < R; ++r) _mm256_store_ps(partial[n - g0][r], acc[r]);
      }
    }
    for (int n = g0; n < g1; ++n) {
      __m256 x[8];
      for (int r = 0; r < 8; ++r)
        x[r] = r < R && k8 > 0 ? _mm256_load_ps(partial[n - g0][r]) : _mm256_setzero_ps();
      alignas(32) float sums[8];
      horizontal_sums8(x, sums);
      for (int r = 0; r < R; ++r) {
        float sum = sums[r];
        for (int t = k8; t < K; ++t)
          sum = std::fma(A[(long)r * lda + t], B[(long)n * ldb + t], sum);
        float& c = C[(long)r * ldc + n];
        c = beta == 0.0f ? sum : sum + beta * c;
      }
    }
  }
}

template <int M>
void few_rows_avx2(int n0, int n1, int K, const float* A, int lda, const float* B, int ldb, float* C, int ldc,
                   float beta) {
  // From 5 rows whose activations outgrow 24 KB of L1: K in slices (above).
  // Slices of 16 KB of activations (8 rows: 512 floats): 8 x 512 x 1408 streamed 4.7 ms a pass
  // at 2 threads, against 4.9-5.1 with 24 KB slices and 6.7 in one pass.
  constexpr int kActivationBytes = 24 * 1024, kSliceBytes = 16 * 1024;
  if (M > 4 && (long)M * K * (long)sizeof(float) > kActivationBytes) {
    const int slice = std::max(8, kSliceBytes / (int)(sizeof(float) * M) / 8 * 8);
    sliced_rows_avx2<M>(n0, n1, K, slice, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  // Up to 4 rows, tiles of M x 3 weight rows (at most 12 accumulators, 3 weight and 1
  // activation register); from 5, M x 1 (the weights stream once).
  constexpr int kS = M > 4 ? 1 : 3;
  float out[M * kS];
  for (int n = n0; n < n1; n += kS) {
    const float* w = B + (long)n * ldb;
    const int s_count = std::min(kS, n1 - n);
    if constexpr (kS == 3) {
      if (s_count == 3)
        tile_avx2<M, 3>(K, A, lda, w, ldb, out);
      else if (s_count == 2)
        tile_avx2<M, 2>(K, A, lda, w, ldb, out);
      else
        tile_avx2<M, 1>(K, A, lda, w, ldb, out);
    } else {
      tile_avx2<M, 1>(K, A, lda, w, ldb, out);
    }
    for (int r = 0; r < M; ++r)
      for (int s = 0; s < s_count; ++s) {
        float& c = C[(long)r * ldc + n + s];
        const float v = out[r * s_count + s];
        c = beta == 0.0f ? v : v + beta * c;
      }
  }
}
#define CHAINLM_FEW_ROWS few_rows_avx2
#else
#define CHAINLM_FEW_ROWS few_rows_nt
#endif

using FewRowsKernel = void (*)(int, int, int, const float*, int, const float*, int, float*, int,
                               float);
constexpr FewRowsKernel kFewRows[] = {&CHAINLM_FEW_ROWS<1>, &CHAINLM_FEW_ROWS<2>, &CHAINLM_FEW_ROWS<3>,
                                      &CHAINLM_FEW_ROWS<4>, &CHAINLM_FEW_ROWS<5>, &CHAINLM_FEW_ROWS<6>,
                                      &CHAINLM_FEW_ROWS<7>, &CHAINLM_FEW_ROWS<8>};
static_assert(sizeof(kFewRows) / sizeof(kFewRows[0]) == kMaxDecodeRows);

// Rows of A one pass of the AVX-512 kernel over the weights takes: as many as fit in 24 KB, so
// they stay in L1 (48 KB on Zen 5) beside the weight rows streaming through it. Eight rows of
// K = 1408 (45 KB: the FFN's down projection of the 30M model) did not, and ran at 0.45x the rate
// of K = 512 (FMAs reading A from L2): 8 rows of 512 x 1408 streamed took 4.9 ms in one pass,
// 2.8 ms in two of 4 rows (2 threads). Smaller passes split a PHD step's 4 rows there, which
// made the step 5-8% slower (3 + 1 rows); bench/RESULTS.md. The AVX2 tiles reuse each activation
// vector over 3 weight rows and measured slower split (4 rows 1.6 -> 2.3 ms), so they take
// every row in one pass.
int rows_per_pass(int K) {
#if CHAINLM_FEW_ROWS_AVX2
  (void)K;
  return kMaxDecodeRows;
#else
  constexpr int kActivationBytes = 24 * 1024;
  return std::clamp(kActivationBytes / (int)(sizeof(float) * std::max(K, 1)), 1, kMaxDecodeRows);
#endif
}

// M rows (more than rows_per_pass(K), at most kMaxStreamedRows), weight rows [n0, n1): the
// few-row kernels over chunks of rows_per_pass(K) rows of A, one block of weight rows (about
// 128 KB, in L2) at a time, so the weights come from memory once and from L2 for the later
// chunks (blocks of 32 KB were 3-16% slower at 8-32 rows). Each row of C gets the bits it gets
// alone: every chunk runs the kernel a row runs alone, whose sums do not depend on the rows
// beside it.
void chunked_few_rows(int n0, int n1, int M, int K, const float* A, int lda, const float* B,
                      int ldb, float* C, int ldc, float beta) {
  constexpr int kWeightBlockBytes = 128 * 1024;
  const int block = std::max(4, (int)(kWeightBlockBytes / (sizeof(float) * std::max(K, 1))));
  const int pass = rows_per_pass(K);
  for (int b0 = n0; b0 < n1; b0 += block) {
    const int b1 = std::min(n1, b0 + block);
    for (int r0 = 0; r0 < M; r0 += pass) {
      const int m = std::min(pass, M - r0);
      kFewRows[m - 1](b0, b1, K, A + (long)r0 * lda, lda, B, ldb, C + (long)r0 * ldc, ldc, beta);
    }
  }
}

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
  openblas().sgemm(CblasRowMajor, transa ? CblasTrans : CblasNoTrans,
                   transb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace

void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (M <= rows_per_pass(K)) {
    // A few rows (decoding steps: one sequence's token, a PHD step's K copies, a server's
    // batch): bandwidth-bound, and sgemm would pack the weight first (2-3x the time of
    // streaming it once). One row goes through the same kernel rather than sgemv, whose sums
    // come out in another order: a row's result must not depend on the rows beside it.
    const FewRowsKernel f = kFewRows[M - 1];
    for_column_ranges(N, (long)M * N * K, [&](int n0, int n1) { f(n0, n1, K, A, lda, B, ldb, C, ldc, beta); });
    return;
  }
  if (M <= kMaxStreamedRows) {
    for_column_ranges(N, (long)M * N * K, [&](int n0, int n1) {
      chunked_few_rows(n0, n1, M, K, A, lda, B, ldb, C, ldc, beta);
    });
    return;
  }
  large_gemm(false, true, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

// The products with bf16 weights get their A rounded once per distinct activation (same A and
// lda: q, k and v, a Chain-of-Linear's blocks), over the most rows and columns any of them
// reads, rather than by each thread for each product as gemm_nt_bf16 would (two threads, q, k
// and v: six roundings of one input; bench/RESULTS.md, "Rounding a batched bf16 step's inputs
// once"). The same bf16 values either way, so the same bits. The buffer and the result are the
// calling thread's, shared with the region's threads and reused from call to call: a decoding
// step makes ~35 calls, and allocating in each would be a hot path's malloc for nothing.
const RoundedOperands& round_bf16_operands(const GemmNtJob* jobs, int n) {
  thread_local RoundedOperands out;
  thread_local std::vector<JobInput> sources;
  thread_local std::vector<int> source_of;
  out.of.assign(n, RoundedRows{});
  out.buffer = nullptr;
  out.size = 0;
  group_job_inputs(
      jobs, n, [](const GemmNtJob& g) { return g.B.bf16 && !g.B.quant && g.M > 0 && g.K > 0; },
      [](const GemmNtJob&) { return 0; }, sources, source_of);
  if (sources.empty()) return out;
  size_t total = 0;
  for (JobInput& s : sources) {
    s.at = total;
    total += (size_t)s.rows * s.cols;
  }
  struct JobsRounding;
  bf16_t* buf = thread_scratch<bf16_t, JobsRounding>(0, total);
  for (const JobInput& s : sources) to_bf16_rows(s.rows, s.cols, s.A, s.lda, buf + s.at, s.cols);
  for (int j = 0; j < n; ++j)
    if (source_of[j] >= 0) out.of[j] = {buf + sources[source_of[j]].at, sources[source_of[j]].cols};
  out.buffer = buf;
  out.size = total;
  return out;
}

void gemm_nt_jobs(const GemmNtJob* jobs, int n) {
  if (gemm_nt_tiles(jobs, n)) return;
  // Weight bytes x rows: the measure the quantized GEMVs split by (kThreadedWeightBytes).
  long work = 0;
  bool few = true;
  for (int j = 0; j < n; ++j) {
    const GemmNtJob& g = jobs[j];
    few = few && g.M <= kMaxDecodeRows;
    const long row_bytes = g.B.quant ? (long)quant_row_bytes(g.B.quant_type, g.K)
                                     : (long)g.K * (g.B.bf16 ? sizeof(bf16_t) : sizeof(float));
    work += (long)g.M * g.N * row_bytes;
  }
  // Quantized products' activations, quantized once (gemm_quant_rows.h) rather than by every
  // thread for every product.
  const std::vector<QuantizedRows>* quantized =
      few && n > 1 ? &prepare_quantized_jobs(jobs, n) : nullptr;
  auto prepared = [&](int j) { return quantized && (*quantized)[j].nb > 0; };
  if (n == 1 || !few || !worth_parallel(work, kThreadedWeightBytes)) {
    for (int j = 0; j < n; ++j) {
      const GemmNtJob& g = jobs[j];
      if (prepared(j))
        gemm_quant_prepared_columns(g, (*quantized)[j], 0, g.N);
      else
        gemm_nt(g.M, g.N, g.K, g.A, g.lda, g.B, g.ldb, g.C, g.ldc, g.beta);
      if (g.then) g.then(g, 0, g.N, g.then_ctx);
    }
    return;
  }
  const std::vector<RoundedRows>& rounded = round_bf16_operands(jobs, n).of;
  // Inside the region each product's share runs on its thread (worth_parallel is false there).
  // An exception may not leave an OpenMP region: one is carried out and rethrown.
  std::exception_ptr error;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    try {
      for (int j = 0; j < n; ++j) {
        const GemmNtJob& g = jobs[j];
        const int share = (t + g.turn) % nt;
        int n0 = (int)((long)g.N * share / nt), n1 = (int)((long)g.N * (share + 1) / nt);
        if (g.B.panels && !g.B.bf16 && !g.B.quant)
          panel_column_share(g.B.panel_row, g.N, share, nt, &n0, &n1);
        if (n1 <= n0) continue;
        if (prepared(j))
          gemm_quant_prepared_columns(g, (*quantized)[j], n0, n1);
        else if (rounded[j].rows)
          gemm_nt_bf16(g.M, n1 - n0, g.K, rounded[j].rows, rounded[j].ld,
                       g.B.bf16 + (long)n0 * g.ldb, g.ldb, g.C + n0, g.ldc, g.beta);
        else
          gemm_nt(g.M, n1 - n0, g.K, g.A, g.lda, g.B.rows(n0, g.ldb), g.ldb, g.C + n0, g.ldc,
                  g.beta);
        if (g.then) g.then(g, n0, n1, g.then_ctx);
      }
    } catch (...) {
#pragma omp critical(chainlm_gemm_jobs_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
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
