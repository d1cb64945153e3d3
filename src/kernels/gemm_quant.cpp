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

float scale_of(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return float_from_fp16(h);
}

#if defined(__AVX2__)
#define CHAINLM_QUANT_AVX2 1

// The 32 signed weights of a block as int8 lanes.
inline __m256i weights_q8_0(const uint8_t* block) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 2));
}
inline __m256i weights_q4_0(const uint8_t* block) {
  const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  const __m256i nibbles =
      _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), _mm256_set1_epi8(0x0f));
  return _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8));
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

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// C[m0+r, n] for r < R over blocks [0, nb) of weight row w and the R activation rows at a
// (row stride a_stride bytes). Vector: the build's SIMD path (when it has one), otherwise the
// portable one, which the tests also run on every machine.
template <QuantType T, int R, bool Vector>
void dot_rows(const uint8_t* w, const uint8_t* a, size_t a_stride, int nb, float* out) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18, ab = 34;
#if defined(CHAINLM_QUANT_AVX2)
  if constexpr (Vector) {
    __m256 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm256_setzero_ps();
    for (int b = 0; b < nb; ++b) {
      const uint8_t* wblock = w + b * wb;
      const __m256i qw = T == QuantType::kQ8_0 ? weights_q8_0(wblock) : weights_q4_0(wblock);
      const float dw = scale_of(wblock);
      for (int r = 0; r < R; ++r) {
        const uint8_t* ablock = a + r * a_stride + b * ab;
        const __m256i qa = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ablock + 2));
        const __m256 d = _mm256_set1_ps(dw * scale_of(ablock));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_i8(qw, qa)), d, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) out[r] = hsum(acc[r]);
    return;
  }
#endif
  for (int r = 0; r < R; ++r) out[r] = 0.0f;
  for (int b = 0; b < nb; ++b) {
    const uint8_t* wblock = w + b * wb;
    int qw[kQuantBlock];
    for (int i = 0; i < kQuantBlock; ++i)
      qw[i] = T == QuantType::kQ8_0 ? reinterpret_cast<const int8_t*>(wblock + 2)[i]
              : i < 16              ? (wblock[2 + i] & 0x0f) - 8
                                    : (wblock[2 + i - 16] >> 4) - 8;
    const float dw = scale_of(wblock);
    for (int r = 0; r < R; ++r) {
      const uint8_t* ablock = a + r * a_stride + b * ab;
      const auto* qa = reinterpret_cast<const int8_t*>(ablock + 2);
      int sum = 0;
      for (int i = 0; i < kQuantBlock; ++i) sum += qw[i] * qa[i];
      out[r] += dw * scale_of(ablock) * static_cast<float>(sum);
    }
  }
}

template <QuantType T, bool Vector>
void gemm_columns(int n0, int n1, int M, int nb, const uint8_t* Aq, size_t a_row, const uint8_t* B,
                  size_t b_row, float* C, int ldc, float beta) {
  for (int t0 = n0; t0 < n1; t0 += kTileRows) {
    const int t1 = std::min(n1, t0 + kTileRows);
    for (int m = 0; m < M; m += kRowsPerPass) {
      const int rows = std::min(kRowsPerPass, M - m);
      const uint8_t* a = Aq + m * a_row;
      for (int n = t0; n < t1; ++n) {
        const uint8_t* w = B + n * b_row;
        float out[kRowsPerPass];
        switch (rows) {
          case 4:
            dot_rows<T, 4, Vector>(w, a, a_row, nb, out);
            break;
          case 3:
            dot_rows<T, 3, Vector>(w, a, a_row, nb, out);
            break;
          case 2:
            dot_rows<T, 2, Vector>(w, a, a_row, nb, out);
            break;
          default:
            dot_rows<T, 1, Vector>(w, a, a_row, nb, out);
            break;
        }
        for (int r = 0; r < rows; ++r) {
          float& c = C[(long)(m + r) * ldc + n];
          c = beta == 0.0f ? out[r] : out[r] + beta * c;
        }
      }
    }
  }
}

template <bool Vector>
void gemm_nt_quant_impl(int M, int N, int K, const float* A, int lda, QuantType type,
                        const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  if (M == 0 || N == 0) return;
  const int nb = (int)quant_blocks(K);
  const size_t a_row = quant_row_bytes(QuantType::kQ8_0, K);
  const size_t b_row = quant_row_bytes(type, ldb);
  thread_local std::vector<uint8_t> scratch;
  if (scratch.size() < a_row * M) scratch.resize(a_row * M);
  uint8_t* Aq = scratch.data();
#pragma omp parallel for schedule(static) if ((long)M * K >= kParallelMinWork)
  for (int m = 0; m < M; ++m) quantize_activation_row(A + (long)m * lda, K, Aq + m * a_row);
  for_column_ranges(N, (long)M * N * K / 4, [&](int n0, int n1) {
    if (type == QuantType::kQ8_0)
      gemm_columns<QuantType::kQ8_0, Vector>(n0, n1, M, nb, Aq, a_row, B, b_row, C, ldc, beta);
    else
      gemm_columns<QuantType::kQ4_0, Vector>(n0, n1, M, nb, Aq, a_row, B, b_row, C, ldc, beta);
  });
}

}  // namespace

void gemm_nt_quant(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                   int ldb, float* C, int ldc, float beta) {
  gemm_nt_quant_impl<true>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

void gemm_nt_quant_portable(int M, int N, int K, const float* A, int lda, QuantType type,
                            const uint8_t* B, int ldb, float* C, int ldc, float beta) {
  gemm_nt_quant_impl<false>(M, N, K, A, lda, type, B, ldb, C, ldc, beta);
}

}  // namespace chainlm
