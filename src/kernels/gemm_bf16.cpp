// bf16 GEMMs (gemm.h): both operands bf16, sums in fp32. Operands given in fp32 are rounded
// into per-thread scratch first, so the result is the same on every CPU up to the order of the
// fp32 sums. Where oneDNN has bf16 kernels (AVX512-BF16, AMX) the large products run on them;
// elsewhere the rounded operands go through the fp32 backend, which computes the same products
// (a product of two bf16 values is exact in fp32). Decoding reads every weight once per token, so its speed
// is the bytes it reads: bf16 weights halve them. Few rows (decode steps, a PHD step's K
// copies): each weight row is widened to fp32 in registers (a bf16 is the top half of an fp32,
// so widening is a 16-bit shift) and dotted with every row of A, the rows ahead prefetched into
// L2, as the fp32 few-row kernel does. More rows (prefill, evaluation): panels of weight rows
// are widened into fp32 scratch and go through the fp32 GEMM backend, whose compute then
// outweighs the widening (a panel is widened once for all M rows).

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>

#include "core/thread_scratch.h"
#include "core/threads.h"
#include "kernels/bf16.h"
#include "kernels/bf16_dot_rate.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"
#include "kernels/onednn_matmul.h"
#include "kernels/simd.h"

namespace chainlm {

namespace {

constexpr int kMaxFewRows = kMaxDecodeRows;  // batch-invariant up to here (gemm.h)
// The many-row path widens weight panels of about this many floats (8 MB) per GEMM call: big
// enough that the GEMMs stay large (panels of 256 rows ran prefill at 0.6x fp32), small enough
// that an output head's widened copy does not double its memory.
constexpr long kPanelFloats = 2L << 20;

#if defined(__AVX512F__)
#define CHAINLM_BF16_VECTOR 1
constexpr int kLanes = 16;
using Vec = __m512;
inline Vec widen(const bf16_t* p) {
  return _mm512_castsi512_ps(
      _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
}
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline float sum(Vec v) { return _mm512_reduce_add_ps(v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define CHAINLM_BF16_VECTOR 1
constexpr int kLanes = 8;
using Vec = __m256;
inline Vec widen(const bf16_t* p) {
  return _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec zero() { return _mm256_setzero_ps(); }
inline float sum(Vec v) { return horizontal_sum(v); }
#endif

// C[m, n] = A[m, :K] . widen(B[n, :K]) (+ beta C[m, n]) for n in [n0, n1).
template <int M>
void few_rows_nt_bf16(int n0, int n1, int K, const float* A, int lda, const bf16_t* B, int ldb,
                      float* C, int ldc, float beta) {
  for (int n = n0; n < n1; ++n) {
    const bf16_t* w = B + (long)n * ldb;
    const bf16_t* ahead = w + 8L * ldb;  // prefetching past the end of B is harmless
    float total[M];
    int k = 0;
#if defined(CHAINLM_BF16_VECTOR)
    {
      Vec acc0[M], acc1[M];
      for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = zero();
      for (; k + 2 * kLanes <= K; k += 2 * kLanes) {
        if (k % 32 == 0) __builtin_prefetch(ahead + k, 0, 2);  // one 64-byte line per 32 weights
        const Vec w0 = widen(w + k), w1 = widen(w + k + kLanes);
        for (int m = 0; m < M; ++m) {
          const float* a = A + (long)m * lda + k;
          acc0[m] = fma(w0, load(a), acc0[m]);
          acc1[m] = fma(w1, load(a + kLanes), acc1[m]);
        }
      }
      for (int m = 0; m < M; ++m) total[m] = sum(acc0[m]) + sum(acc1[m]);
    }
#else
    for (int m = 0; m < M; ++m) total[m] = 0.0f;
#endif
    for (; k < K; ++k) {  // the tail (and everything without a vector path)
      if (k % 32 == 0) __builtin_prefetch(ahead + k, 0, 2);
      const float wk = from_bf16(w[k]);
      for (int m = 0; m < M; ++m) total[m] += A[(long)m * lda + k] * wk;
    }
    for (int m = 0; m < M; ++m) {
      float& c = C[(long)m * ldc + n];
      c = beta == 0.0f ? total[m] : total[m] + beta * c;
    }
  }
}

#if defined(__AVX512BF16__)
// The same products on AVX512-BF16 with A kept in bf16: one vdpbf16ps multiplies 32 weight/
// activation pairs and adds them into 16 fp32 lanes, where the widening kernel above spends two
// widening loads, two shifts and two FMAs, and streamed weights at ~27 GB/s against the fp32
// kernel's ~35 (decoding is these bytes). Each product of two bf16 values is exact in fp32; the
// instruction adds the pair's two products one after the other and treats subnormal inputs as
// zero, so sums differ from the widening kernel's by fp32 rounding only. Every (row, weight row)
// pair sums the same way whatever M, so decoding batches stay bit-invariant (gemm.h).
template <int M>
void few_rows_nt_bf16_dot(int n0, int n1, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb,
                          float* C, int ldc, float beta) {
  const __mmask32 tail = static_cast<__mmask32>((1ull << (K % 32)) - 1);
  for (int n = n0; n < n1; ++n) {
    const bf16_t* w = B + (long)n * ldb;
    const bf16_t* ahead = w + 8L * ldb;  // prefetching past the end of B is harmless
    __m512 acc0[M], acc1[M];
    for (int m = 0; m < M; ++m) acc0[m] = acc1[m] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 64 <= K; k += 64) {
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k), _MM_HINT_T1);
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k + 32), _MM_HINT_T1);
      const __m512bh w0 = (__m512bh)_mm512_loadu_si512(w + k);
      const __m512bh w1 = (__m512bh)_mm512_loadu_si512(w + k + 32);
      for (int m = 0; m < M; ++m) {
        const bf16_t* a = A + (long)m * lda + k;
        acc0[m] = _mm512_dpbf16_ps(acc0[m], w0, (__m512bh)_mm512_loadu_si512(a));
        acc1[m] = _mm512_dpbf16_ps(acc1[m], w1, (__m512bh)_mm512_loadu_si512(a + 32));
      }
    }
    for (; k < K; k += 32) {  // at most two blocks of 32, the last one masked
      const __mmask32 mk = K - k >= 32 ? ~__mmask32{0} : tail;
      _mm_prefetch(reinterpret_cast<const char*>(ahead + k), _MM_HINT_T1);
      const __m512bh wv = (__m512bh)_mm512_maskz_loadu_epi16(mk, w + k);
      for (int m = 0; m < M; ++m)
        acc0[m] = _mm512_dpbf16_ps(acc0[m], wv, (__m512bh)_mm512_maskz_loadu_epi16(mk, A + (long)m * lda + k));
    }
    for (int m = 0; m < M; ++m) {
      const float total = _mm512_reduce_add_ps(_mm512_add_ps(acc0[m], acc1[m]));
      float& c = C[(long)m * ldc + n];
      c = beta == 0.0f ? total : total + beta * c;
    }
  }
}

using FewRowsDotKernel = void (*)(int, int, int, const bf16_t*, int, const bf16_t*, int, float*, int,
                                  float);
constexpr FewRowsDotKernel kFewRowsDot[] = {
    &few_rows_nt_bf16_dot<1>, &few_rows_nt_bf16_dot<2>, &few_rows_nt_bf16_dot<3>,
    &few_rows_nt_bf16_dot<4>, &few_rows_nt_bf16_dot<5>, &few_rows_nt_bf16_dot<6>,
    &few_rows_nt_bf16_dot<7>, &few_rows_nt_bf16_dot<8>};
#endif

using FewRowsKernel = void (*)(int, int, int, const float*, int, const bf16_t*, int, float*, int,
                               float);
constexpr FewRowsKernel kFewRows[] = {
    &few_rows_nt_bf16<1>, &few_rows_nt_bf16<2>, &few_rows_nt_bf16<3>, &few_rows_nt_bf16<4>,
    &few_rows_nt_bf16<5>, &few_rows_nt_bf16<6>, &few_rows_nt_bf16<7>, &few_rows_nt_bf16<8>};

// Per-thread buffers, by slot.
struct GemmBf16Scratch;
template <typename T>
T* scratch(int slot, size_t n) {
  return thread_scratch<T, GemmBf16Scratch, 3>(slot, n);
}

// rows x cols of src (row stride ld) rounded to bf16, into a dense buffer of slot `slot`.
bf16_t* rounded(int slot, int rows, int cols, const float* src, int ld) {
  bf16_t* r = scratch<bf16_t>(slot, (size_t)rows * cols);
  to_bf16_rows(rows, cols, src, ld, r, cols);
  return r;
}

// rows x cols of a bf16 matrix (row stride ld) widened to a dense fp32 buffer.
float* widened(int slot, int rows, int cols, const bf16_t* src, int ld) {
  float* r = scratch<float>(slot, (size_t)rows * cols);
  parallel_for(rows, (long)rows * cols, [&](long i) { from_bf16(src + i * ld, r + i * cols, cols); });
  return r;
}

// C = beta C: a product over K = 0 (no bf16 path needs to handle empty sums).
void scale_only(int M, int N, float* C, int ldc, float beta) {
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) C[(long)m * ldc + n] = beta == 0.0f ? 0.0f : beta * C[(long)m * ldc + n];
}

std::atomic<int> g_path{static_cast<int>(Bf16GemmPath::Auto)};

Bf16GemmPath path() {
  return static_cast<Bf16GemmPath>(g_path.load(std::memory_order_relaxed));
}

#if defined(__AVX512BF16__)
// The few-row kernels' choice: bf16 dot products wherever the CPU has them (decoding reads
// every weight once, so the bytes read decide, not the arithmetic rate).
bool few_rows_on_dot_products() {
  return has_bf16_instructions() && path() != Bf16GemmPath::Emulated;
}
#endif

}  // namespace

bool has_bf16_instructions() {
  static const bool has = [] {
    const std::string isa = onednn_isa();
    return isa.find("bf16") != std::string::npos || isa.find("amx") != std::string::npos;
  }();
  return has;
}

bool bf16_gemm_native() {
  static const bool native = [] {
    if (!has_bf16_instructions()) return false;
    const std::string isa = onednn_isa();
    const bool amx = isa.find("amx") != std::string::npos;
    return bf16_large_gemm_native(isa.c_str(), amx ? 0.0 : bf16_dot_flops_ratio());
  }();
  switch (path()) {
    case Bf16GemmPath::Emulated:
      return false;
    case Bf16GemmPath::Instructions:
      return has_bf16_instructions();
    case Bf16GemmPath::Auto:
      break;
  }
  return native;
}

void set_bf16_gemm_path(Bf16GemmPath p) {
  g_path.store(static_cast<int>(p));
}

void gemm_nt_bf16(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  gemm_nt_bf16(M, N, K, rounded(0, M, K, A, lda), K, B, ldb, C, ldc, beta);
}

void gemm_nt_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  if (M > kMaxFewRows && bf16_gemm_native()) {
    onednn_bf16_gemm(false, true, M, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
#if defined(__AVX512BF16__)
  if (M <= kMaxFewRows && few_rows_on_dot_products()) {
    const FewRowsDotKernel f = kFewRowsDot[M - 1];
    for_column_ranges(N, (long)M * N * K, [&](int n0, int n1) { f(n0, n1, K, A, lda, B, ldb, C, ldc, beta); });
    return;
  }
#endif
  // On the fp32 kernels: A widened (exactly) once, then few rows through the bf16-weight kernel,
  // more through panels of widened weight rows.
  const float* a = widened(0, M, K, A, lda);
  if (M <= kMaxFewRows) {
    const FewRowsKernel f = kFewRows[M - 1];
    for_column_ranges(N, (long)M * N * K, [&](int n0, int n1) { f(n0, n1, K, a, K, B, ldb, C, ldc, beta); });
    return;
  }
  gemm_nt_bf16_widened(M, N, K, a, K, B, ldb, C, ldc, beta);
}

void gemm_nt_bf16_widened(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb,
                          float* C, int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  const int panel_rows = (int)std::max<long>(64, kPanelFloats / K);
  for (int n0 = 0; n0 < N; n0 += panel_rows) {
    const int rows = std::min(panel_rows, N - n0);
    gemm_nt(M, rows, K, A, lda, widened(1, rows, K, B + (long)n0 * ldb, ldb), K, C + n0, ldc, beta);
  }
}

void gemm_nn_bf16(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  gemm_nn_bf16(M, N, K, rounded(2, M, K, A, lda), K, B, ldb, C, ldc, beta);
}

void gemm_nn_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  if (bf16_gemm_native()) {
    onednn_bf16_gemm(false, false, M, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  gemm_nn(M, N, K, widened(0, M, K, A, lda), K, widened(1, K, N, B, ldb), N, C, ldc, beta);
}

void gemm_tn_bf16(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  gemm_tn_bf16(M, N, K, rounded(2, K, M, A, lda), M, rounded(1, K, N, B, ldb), N, C, ldc, beta);
}

void gemm_tn_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta) {
  if (M == 0 || N == 0) return;
  if (K == 0) return scale_only(M, N, C, ldc, beta);
  if (bf16_gemm_native()) {
    onednn_bf16_gemm(true, false, M, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  gemm_tn(M, N, K, widened(0, K, M, A, lda), M, widened(1, K, N, B, ldb), N, C, ldc, beta);
}

}  // namespace chainlm
