// The tile matmul of the attention passes with bf16 operands (attention_tiles.h,
// tile_gemm_bf16), for bf16 training and evaluation on CPUs with AVX512-BF16.
// One vdpbf16ps multiplies 16 pairs of bf16 and adds both products of each pair to an fp32
// lane: twice the multiply-adds of an fp32 FMA per instruction. Its operands hold two
// consecutive elements of the reduction axis in each 32-bit word, so both operands are first
// rounded into that form (round to nearest even): A as words (m, p) = (A(m, 2p), A(m, 2p+1)),
// B as rows of words (p, n) = (B[2p, n], B[2p+1, n]). Rounding both operands of a 64 x 64 x 64
// product costs ~13% of the product itself; the product then runs at 1.7x the fp32 tile's pace
// (bench/RESULTS.md, "Attention products in bf16"). An odd K is padded with a zero pair half.
#include "kernels/attention_tiles.h"

#if CHAINLM_ATTENTION_BF16

#include <algorithm>
#include <bit>

#include "core/thread_scratch.h"
#include "kernels/bf16.h"

namespace chainlm::attn {

namespace {

struct Bf16TileScratch;

inline __mmask16 lanes(int n) {
  return static_cast<__mmask16>(n >= 16 ? 0xFFFF : n <= 0 ? 0 : (1u << n) - 1);
}

// dst[j] = (bf16(r0[j]), bf16(r1[j])) as one word, the first in the low half, for j < n and
// zeros up to round16(n); no r1 (the padding of an odd K) gives zero high halves.
void pair_rows(const float* r0, const float* r1, int n, uint32_t* dst) {
  // Word j of the result takes 16-bit element j of the low half (r0) and then j of the high (r1).
  const __m512i interleave =
      _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                       21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  for (int j = 0; j < n; j += 16) {
    const __mmask16 m = lanes(n - j);
    const __m512 lo = _mm512_maskz_loadu_ps(m, r0 + j);
    const __m512 hi = r1 ? _mm512_maskz_loadu_ps(m, r1 + j) : _mm512_setzero_ps();
    const __m512i h = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    _mm512_storeu_si512(dst + j, _mm512_permutexvar_epi16(interleave, h));
  }
}

// A row of n floats as bf16, zero-padded to round32(n) (a row of words (A(2p), A(2p+1))).
void round_row(const float* src, int n, uint32_t* dst) {
  for (int j = 0; j < n; j += 32) {
    const __m512 lo = _mm512_maskz_loadu_ps(lanes(n - j), src + j);
    const __m512 hi = _mm512_maskz_loadu_ps(lanes(n - j - 16), src + j + 16);
    _mm512_storeu_si512(dst + j / 2, (__m512i)_mm512_cvtne2ps_pbh(hi, lo));
  }
}

// C[MR x 16*NV] (+)= sum over pairs p0 <= p < p1 of A's word (m, p) . B's word row p; A's word
// (m, p) is at A[m*sam + p*sap], B's rows are ldb words apart.
template <int MR, int NV>
void micro_kernel(int p0, int p1, const uint32_t* A, long sam, long sap, const uint32_t* B,
                  long ldb, float* C, long ldc, __mmask16 last, bool accumulate) {
  __m512 c[MR][NV];
  load_block(c, C, ldc, last, accumulate);
  const uint32_t* a = A + p0 * sap;
  const uint32_t* b = B + p0 * ldb;
  for (int p = p0; p < p1; ++p, a += sap, b += ldb) {
    __m512bh bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = (__m512bh)_mm512_loadu_si512(b + 16 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512bh am = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[m * sam]));
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[m][v] = _mm512_dpbf16_ps(c[m][v], am, bv[v]);
    }
  }
  store_block(c, C, ldc, last);
}

using MicroKernel = void (*)(int, int, const uint32_t*, long, long, const uint32_t*, long, float*,
                             long, __mmask16, bool);
constexpr MicroKernel kMicroKernels[kMR][4] = CHAINLM_MICRO_TABLE(micro_kernel);

}  // namespace

void tile_gemm_bf16(int M, int N, int K, const float* A, long sam, long sak, const float* B,
                    long ldb, float* C, long ldc, bool accumulate, const uint64_t* nbits,
                    const uint64_t* kbits) {
  if (M <= 0 || N <= 0) return;
  const int P = (K + 1) / 2;  // pairs along the reduction axis
  const long ldbw = round16(N);
  // A's words: rows of m when A's k are contiguous, else rows of p (A's m contiguous).
  const bool a_rows = sak == 1;
  const long lda_w = a_rows ? round16(P) : round16(M);
  const long a_words = a_rows ? static_cast<long>(M) * lda_w : static_cast<long>(P) * lda_w;
  uint32_t* Aw = chainlm::thread_scratch<uint32_t, Bf16TileScratch>(
      0, static_cast<size_t>(a_words + P * ldbw));
  uint32_t* Bw = Aw + a_words;
  if (a_rows) {
    for (int m = 0; m < M; ++m) round_row(A + m * sam, K, Aw + m * lda_w);
  } else if (sam == 1) {
    for (int p = 0; p < P; ++p)
      pair_rows(A + 2 * p * sak, 2 * p + 1 < K ? A + (2 * p + 1) * sak : nullptr, M,
                Aw + p * lda_w);
  } else {  // neither axis contiguous (no pass asks for it): element by element
    for (int p = 0; p < P; ++p)
      for (int m = 0; m < M; ++m) {
        const uint32_t lo = to_bf16(A[m * sam + 2 * p * sak]);
        const uint32_t hi = 2 * p + 1 < K ? to_bf16(A[m * sam + (2 * p + 1) * sak]) : 0;
        Aw[p * lda_w + m] = lo | hi << 16;
      }
  }
  for (int p = 0; p < P; ++p)
    pair_rows(B + 2 * p * ldb, 2 * p + 1 < K ? B + (2 * p + 1) * ldb : nullptr, N, Bw + p * ldbw);
  const long sam_w = a_rows ? lda_w : 1, sap_w = a_rows ? 1 : lda_w;

  for (int m0 = 0; m0 < M; m0 += kMR) {
    const int mr = std::min(kMR, M - m0);
    BlockRange b;
    if (!block_range(m0, mr, N, K, accumulate, nbits, kbits, &b)) continue;
    const int n_begin = b.n_begin, n_end = b.n_end;
    // A(m, k) is zero outside kbits, so a pair half outside the range adds 0 . B exactly.
    const int p_begin = b.k_begin / 2, p_end = std::min(P, (b.k_end + 1) / 2);
    for (int n0 = n_begin; n0 < n_end; n0 += 64) {
      const int nn = std::min(64, n_end - n0);
      const int nv = (nn + 15) / 16;
      kMicroKernels[mr - 1][nv - 1](p_begin, p_end, Aw + m0 * sam_w, sam_w, sap_w, Bw + n0, ldbw,
                                    C + m0 * ldc + n0, ldc, lanes(nn - 16 * (nv - 1)), accumulate);
    }
  }
}

}  // namespace chainlm::attn

#endif
