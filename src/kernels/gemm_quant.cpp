// Quantized GEMMs (gemm.h gemm_nt_quant): C = A · dequant(B)^T with B in Q8_0 or Q4_0 blocks
// (quant.h). As llama.cpp does, each row of A is first quantized to Q8_0 blocks, so every block
// product is an exact integer dot product of 32 int8 pairs, scaled by the two blocks' fp16
// scales and summed in fp32: C[m,n] = sum_b d_w(n,b) d_a(m,b) sum_i q_w q_a. Decoding reads
// every weight once per token, so its speed is the bytes it reads: 1.06 (Q8_0) or 0.56 (Q4_0)
// bytes per weight against 4 in fp32. The integer dot products use AVX-512 VNNI where the
// build has it, AVX2's maddubs otherwise (with the sign trick: |w| times sign(w)*a), and plain
// C++ elsewhere. Threads split the output columns (weight rows); each walks its rows in tiles
// small enough to stay in L1 while every row of A passes over them.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "core/threads.h"
#include "kernels/gemm.h"
#include "kernels/quant.h"
#include "kernels/simd.h"

namespace chainlm {

namespace {

constexpr int kRowsPerPass = 4;  // rows of A dotted with each unpacked weight block
constexpr int kTileRows = 16;    // weight rows kept hot while all rows of A pass
// From this many rows of A on, dequantizing the weights and running the fp32 GEMM backend beats
// the integer dot products (whose many-row path has no register blocking over weight rows).
constexpr int kDequantizeRows = 16;
// The dequantized weight panels: about 8 MB of floats per GEMM call.
constexpr long kPanelFloats = 2L << 20;

// A weight block's fp16 scale as a float: F16C's one instruction where the build has it (exact,
// as float_from_fp16; tests/kernels/quant_test.cpp checks the two agree on every half).
inline float scale_of(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
#if defined(__F16C__)
  return _cvtsh_ss(h);
#else
  return float_from_fp16(h);
#endif
}

// Lanes of a block's 8 x sum(q) (below): one AVX2 register of int32.
constexpr int kSumLanes = 8;

// Activations quantized for a GEMM: per row, nb blocks of 32 int8 values, and their scales as
// floats (the fp16-rounded scales of Q8_0, widened once here rather than in the inner loop).
// Also 8 times each block's sum of q, as 8 int32 lanes (all of it in lane 0): a Q4_0 weight is
// its nibble minus 8, so its dot product with a block is (nibbles . q) - 8 sum(q); the nibbles,
// being unsigned, go straight into the u8 x s8 instructions (no sign juggling), and the
// correction is one integer vector subtraction per block (no scalar dependency chain).
struct QuantizedRows {
  const int8_t* q;
  const float* d;
  const int32_t* sum8;
  int nb;
  const int8_t* q_row(int m) const { return q + (size_t)m * nb * kQuantBlock; }
  const float* d_row(int m) const { return d + (size_t)m * nb; }
  const int32_t* sum8_row(int m) const { return sum8 + (size_t)m * nb * kSumLanes; }
};

#if defined(__AVX2__)
#define CHAINLM_QUANT_AVX2 1

// The 32 signed weights of a block as int8 lanes.
inline __m256i weights_q8_0(const uint8_t* block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
}
// The 32 nibbles of a Q4_0 block (0..15, the weights plus 8) as uint8 lanes.
inline __m256i nibbles_q4_0(const uint8_t* block) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed),
                          _mm256_set1_epi8(0x0f));
}

// Eight int32 partial sums of u . a for unsigned u (<= 15: no saturation).
inline __m256i dot_u8_i8(__m256i u, __m256i a) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, a);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), _mm256_set1_epi16(1));
#endif
}

// Eight int32 partial sums of w . a over the block (|w| <= 127: no saturation in maddubs).
inline __m256i dot_i8(__m256i w, __m256i a) {
  const __m256i abs_w = _mm256_sign_epi8(w, w);
  const __m256i signed_a = _mm256_sign_epi8(a, w);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), abs_w, signed_a);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, signed_a), _mm256_set1_epi16(1));
#endif
}

#endif

// C[m+r, n] for r < R: weight row w (nb blocks) against activation rows m..m+R-1. Vector: the
// build's SIMD path (when it has one), otherwise the portable one, which the tests also run on
// every machine.
template <QuantType T, int R, bool Vector>
void dot_rows(const uint8_t* w, const QuantizedRows& a, int m, float* out) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18;
  const int nb = a.nb;
  const int8_t* aq[R];
  const float* ad[R];
  for (int r = 0; r < R; ++r) {
    aq[r] = a.q_row(m + r);
    ad[r] = a.d_row(m + r);
  }
#if defined(CHAINLM_QUANT_AVX2)
  if constexpr (Vector) {
    // Two accumulators per row (even and odd blocks) keep two FMA chains in flight.
    __m256 acc0[R], acc1[R];
    const int32_t* s8[R];
    for (int r = 0; r < R; ++r) {
      acc0[r] = acc1[r] = _mm256_setzero_ps();
      s8[r] = a.sum8_row(m + r);
    }
    auto block = [&](int b, __m256* acc) {
      const uint8_t* wblock = w + b * wb;
      const float dw = scale_of(wblock);
      if constexpr (T == QuantType::kQ8_0) {
        const __m256i qw = weights_q8_0(wblock);
        for (int r = 0; r < R; ++r) {
          const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq[r] + b * kQuantBlock));
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8(qw, qa)), _mm256_set1_ps(dw * ad[r][b]), acc[r]);
        }
      } else {
        const __m256i nib = nibbles_q4_0(wblock);
        for (int r = 0; r < R; ++r) {
          const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq[r] + b * kQuantBlock));
          const __m256i sum8 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s8[r] + b * kSumLanes));
          const __m256i dot = _mm256_sub_epi32(dot_u8_i8(nib, qa), sum8);
          acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(dw * ad[r][b]), acc[r]);
        }
      }
    };
    int b = 0;
    for (; b + 2 <= nb; b += 2) {
      __builtin_prefetch(w + (b + 8) * wb, 0, 3);
      block(b, acc0);
      block(b + 1, acc1);
    }
    if (b < nb) block(b, acc0);
    for (int r = 0; r < R; ++r) out[r] = horizontal_sum(_mm256_add_ps(acc0[r], acc1[r]));
    return;
  }
#endif
  for (int r = 0; r < R; ++r) out[r] = 0.0f;
  for (int b = 0; b < nb; ++b) {
    const uint8_t* wblock = w + b * wb;
    int qw[kQuantBlock];
    for (int i = 0; i < kQuantBlock; ++i)
      qw[i] = T == QuantType::kQ8_0 ? reinterpret_cast<const int8_t*>(wblock + 2)[i]
              : i < 16             ? (wblock[2 + i] & 0x0f) - 8
                                   : (wblock[2 + i - 16] >> 4) - 8;
    const float dw = scale_of(wblock);
    for (int r = 0; r < R; ++r) {
      const int8_t* qa = aq[r] + b * kQuantBlock;
      int sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) sum += qw[i] * qa[i];
      out[r] += dw * ad[r][b] * static_cast<float>(sum);
    }
  }
}

template <QuantType T, bool Vector>
void gemm_columns(int n0, int n1, int M, const QuantizedRows& a, const uint8_t* B, size_t b_row,
                  float* C, int ldc, float beta) {
  for (int t0 = n0; t0 < n1; t0 += kTileRows) {
    const int t1 = std::min(n1, t0 + kTileRows);
    for (int m = 0; m < M; m += kRowsPerPass) {
      const int rows = std::min(kRowsPerPass, M - m);
      for (int n = t0; n < t1; ++n) {
        const uint8_t* w = B + n * b_row;
        float out[kRowsPerPass];
        switch (rows) {
          case 4: dot_rows<T, 4, Vector>(w, a, m, out); break;
          case 3: dot_rows<T, 3, Vector>(w, a, m, out); break;
          case 2: dot_rows<T, 2, Vector>(w, a, m, out); break;
          default: dot_rows<T, 1, Vector>(w, a, m, out); break;
        }
        for (int r = 0; r < rows; ++r) {
          float& c = C[(long)(m + r) * ldc + n];
          c = beta == 0.0f ? out[r] : out[r] + beta * c;
        }
      }
    }
  }
}

// One row of activations as Q8_0 (quant.h's rule: d = max|x| / 127 rounded to fp16, q =
// round(x / d) half away from zero), zero-padded to whole blocks.
void quantize_activations(const float* x, int K, int nb, int8_t* q, float* d, int32_t* sum8) {
  for (int b = 0; b < nb; ++b) {
    const int begin = b * kQuantBlock, n = std::min(kQuantBlock, K - begin);
    float amax = 0.0f;
    for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(x[begin + i]));
    const float scale = amax / 127.0f, inv = scale != 0.0f ? 1.0f / scale : 0.0f;
    d[b] = float_from_fp16(fp16_from_float(scale));
    int8_t* qb = q + (size_t)b * kQuantBlock;
    int sum = 0;
    for (int i = 0; i < n; ++i) {
      qb[i] = static_cast<int8_t>(std::round(x[begin + i] * inv));
      sum += qb[i];
    }
    for (int i = n; i < kQuantBlock; ++i) qb[i] = 0;
    int32_t* lanes = sum8 + (size_t)b * kSumLanes;
    lanes[0] = 8 * sum;
    std::fill(lanes + 1, lanes + kSumLanes, 0);
  }
}

template <bool Vector>
void gemm_nt_quant_impl(int M, int N, int K, const float* A, int lda, QuantType type,
                        const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  if (M == 0 || N == 0) return;
  const int nb = (int)quant_blocks(K);
  const size_t b_row = quant_row_bytes(type, ldb);
  thread_local std::vector<int8_t> q_scratch;
  thread_local std::vector<float> d_scratch;
  thread_local std::vector<int32_t> s_scratch;
  if (q_scratch.size() < (size_t)M * nb * kQuantBlock) q_scratch.resize((size_t)M * nb * kQuantBlock);
  if (d_scratch.size() < (size_t)M * nb) d_scratch.resize((size_t)M * nb);
  if (s_scratch.size() < (size_t)M * nb * kSumLanes) s_scratch.resize((size_t)M * nb * kSumLanes);
  // Pointers taken here: inside the parallel region the thread_local names would be each
  // thread's own (empty) buffers.
  int8_t* q = q_scratch.data();
  float* d = d_scratch.data();
  int32_t* sums = s_scratch.data();
  const QuantizedRows a{q, d, sums, nb};
#pragma omp parallel for schedule(static) if ((long)M * K >= kParallelMinWork)
  for (int m = 0; m < M; ++m)
    quantize_activations(A + (long)m * lda, K, nb, q + (size_t)m * nb * kQuantBlock, d + (size_t)m * nb,
                         sums + (size_t)m * nb * kSumLanes);
  for_column_ranges(N, (long)M * N * K / 4, [&](int n0, int n1) {
    if (type == QuantType::kQ8_0)
      gemm_columns<QuantType::kQ8_0, Vector>(n0, n1, M, a, B, b_row, C, ldc, beta);
    else
      gemm_columns<QuantType::kQ4_0, Vector>(n0, n1, M, a, B, b_row, C, ldc, beta);
  });
}

}  // namespace

bool gemm_quant_dequantizes(int M) { return M >= kDequantizeRows; }

void gemm_nt_quant(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                   int ldb, float* C, int ldc, float beta) {
  if (!gemm_quant_dequantizes(M)) return gemm_nt_quant_impl<true>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
  // Many rows (prefill, evaluation): panels of weight rows dequantized to fp32 go through the
  // fp32 GEMM backend, whose register-blocked kernels then do the work; a panel is dequantized
  // once for all M rows. (llama.cpp's BLAS path does the same for large batches.)
  if (N == 0) return;
  const size_t b_row = quant_row_bytes(type, ldb);
  const int panel_rows = (int)std::max<long>(64, kPanelFloats / std::max(K, 1));
  thread_local std::vector<float> panel;
  for (int n0 = 0; n0 < N; n0 += panel_rows) {
    const int rows = std::min(panel_rows, N - n0);
    if (panel.size() < (size_t)rows * K) panel.resize((size_t)rows * K);
    float* p = panel.data();  // taken here: in the region each thread has its own thread_local
#pragma omp parallel for schedule(static) if ((long)rows * K >= kParallelMinWork)
    for (int r = 0; r < rows; ++r) dequantize_row(type, B + (size_t)(n0 + r) * b_row, K, p + (size_t)r * K);
    gemm_nt(M, rows, K, A, lda, p, K, C + n0, ldc, beta);
  }
}

void gemm_nt_quant_portable(int M, int N, int K, const float* A, int lda, QuantType type,
                            const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  gemm_nt_quant_impl<false>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

}  // namespace chainlm
