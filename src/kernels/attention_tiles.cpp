// Tile primitives of the attention kernels (attention_tiles.h): packing and transposing rows,
// the tile matmul, and the online-softmax updates of one 64 x 64 tile, forward and backward.
// The tile matmul is register-blocked AVX-512 (6 rows x 64 columns): on hot 64x64x64 blocks it
// ran at 162 GFLOP/s per core vs 149 for cblas_sgemm, and it can skip the masked-out blocks of
// partial tiles and read transposed operands in place. Without AVX-512 (or with
// CHAINLM_ATTENTION_SCALAR defined) portable loops take the place of every vector path.
#include "kernels/attention_tiles.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/thread_scratch.h"

namespace chainlm::attn {

struct AttentionTileScratch;

// A per-thread buffer that only grows, so the hot path never allocates after warm-up.
float* thread_scratch(size_t n) { return chainlm::thread_scratch<float, AttentionTileScratch>(0, n); }

void pack(const float* src, long stride, int rows, int cols, float* dst, int ld) {
#if CHAINLM_ATTENTION_AVX512
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * stride;
    prefetch_row(s + kPrefetchRows * stride, cols, 0);
    float* d = dst + static_cast<long>(r) * ld;
    for (int c = 0; c < cols; c += 16) {
      const __mmask16 m = static_cast<__mmask16>(cols - c >= 16 ? 0xFFFF : (1u << (cols - c)) - 1);
      _mm512_mask_storeu_ps(d + c, m, _mm512_maskz_loadu_ps(m, s + c));
    }
  }
#else
  for (int r = 0; r < rows; ++r)
    std::memcpy(dst + static_cast<long>(r) * ld, src + r * stride, sizeof(float) * cols);
#endif
}

void transpose(const float* src, long stride, int rows, int cols, float* dst, int ld) {
#if CHAINLM_ATTENTION_AVX512
  for (int r0 = 0; r0 < rows; r0 += 16) {
    const int nr = std::min(16, rows - r0);
    for (int c0 = 0; c0 < cols; c0 += 16) {
      const int nc = std::min(16, cols - c0);
      const __mmask16 cm = static_cast<__mmask16>(nc == 16 ? 0xFFFF : (1u << nc) - 1);
      __m512 r[16], a[16], b[16];
#pragma GCC unroll 16
      for (int i = 0; i < 16; ++i)
        r[i] =
            i < nr ? _mm512_maskz_loadu_ps(cm, src + (r0 + i) * stride + c0) : _mm512_setzero_ps();
        // 16x16 in-register transpose: interleave pairs of rows, then 64-bit pairs, then
        // 128-bit lanes. After stage 2, lane L of b[4i+j] holds column 4L+j of rows 4i..4i+3.
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
      }
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        b[4 * i + 0] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0x44);
        b[4 * i + 1] = _mm512_shuffle_ps(a[4 * i], a[4 * i + 2], 0xEE);
        b[4 * i + 2] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0x44);
        b[4 * i + 3] = _mm512_shuffle_ps(a[4 * i + 1], a[4 * i + 3], 0xEE);
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const __m512 x0 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0x88);
        const __m512 x1 = _mm512_shuffle_f32x4(b[j], b[4 + j], 0xDD);
        const __m512 y0 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0x88);
        const __m512 y1 = _mm512_shuffle_f32x4(b[8 + j], b[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(x0, y0, 0x88);
        r[4 + j] = _mm512_shuffle_f32x4(x1, y1, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(x0, y0, 0xDD);
        r[12 + j] = _mm512_shuffle_f32x4(x1, y1, 0xDD);
      }
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j)
        if (j < nc) _mm512_storeu_ps(dst + static_cast<long>(c0 + j) * ld + r0, r[j]);
    }
  }
#else
  for (int r = 0; r < rows; ++r) {
    const float* s = src + r * stride;
    for (int c = 0; c < cols; ++c) dst[static_cast<long>(c) * ld + r] = s[c];
  }
#endif
}

#if CHAINLM_ATTENTION_AVX512

namespace {

// C[MR x 16*NV] (+)= sum_{k0<=k<k1} A(m, k) B[k, :]; the last vector is limited to `last` lanes.
template <int MR, int NV>
void micro_kernel(int k0, int k1, const float* A, long sam, long sak, const float* B, long ldb,
                  float* C, long ldc, __mmask16 last, bool accumulate) {
  __m512 c[MR][NV];
  load_block(c, C, ldc, last, accumulate);
  const float* a[MR];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m) a[m] = A + m * sam + k0 * sak;
  const float* b = B + k0 * ldb;
  for (int k = k0; k < k1; ++k, b += ldb) {
    __m512 bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      bv[v] = v == NV - 1 ? _mm512_maskz_loadu_ps(last, b + 16 * v) : _mm512_loadu_ps(b + 16 * v);
#pragma GCC unroll 8
    for (int m = 0; m < MR; ++m) {
      const __m512 am = _mm512_set1_ps(*a[m]);
      a[m] += sak;
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[m][v] = _mm512_fmadd_ps(am, bv[v], c[m][v]);
    }
  }
  store_block(c, C, ldc, last);
}

using MicroKernel = void (*)(int, int, const float*, long, long, const float*, long, float*, long,
                             __mmask16, bool);
constexpr MicroKernel kMicroKernels[kMR][4] = CHAINLM_MICRO_TABLE(micro_kernel);

}  // namespace

#endif

void tile_gemm(int M, int N, int K, const float* A, long sam, long sak, const float* B, long ldb,
               float* C, long ldc, bool accumulate, const uint64_t* nbits, const uint64_t* kbits) {
  for (int m0 = 0; m0 < M; m0 += kMR) {
    const int mr = std::min(kMR, M - m0);
    BlockRange b;
    if (!block_range(m0, mr, N, K, accumulate, nbits, kbits, &b)) continue;
    const int n_begin = b.n_begin, n_end = b.n_end, k_begin = b.k_begin, k_end = b.k_end;
#if CHAINLM_ATTENTION_AVX512
    for (int n0 = n_begin; n0 < n_end; n0 += 64) {
      const int nn = std::min(64, n_end - n0);
      const int nv = (nn + 15) / 16;
      const int rem = nn - 16 * (nv - 1);
      const __mmask16 last = static_cast<__mmask16>(rem == 16 ? 0xFFFF : (1u << rem) - 1);
      kMicroKernels[mr - 1][nv - 1](k_begin, k_end, A + m0 * sam, sam, sak, B + n0, ldb,
                                    C + m0 * ldc + n0, ldc, last, accumulate);
    }
#else
    for (int r = 0; r < mr; ++r) {
      float* c = C + (m0 + r) * ldc;
      if (!accumulate)
        for (int n = n_begin; n < n_end; ++n) c[n] = 0.0f;
      const float* a = A + (m0 + r) * sam;
      for (int k = k_begin; k < k_end; ++k) {
        const float ak = a[k * sak];
        const float* b = B + k * ldb;
        for (int n = n_begin; n < n_end; ++n) c[n] += ak * b[n];
      }
    }
#endif
  }
}

bool softmax_update(float* St, int nk, int nq, const uint64_t* bits, float c, float* m2, float* l,
                    float* alpha) {
  bool moved = false;
#if CHAINLM_ATTENTION_AVX512
  const __m512 vc = _mm512_set1_ps(c);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  for (int v = 0; v < (nq + 15) / 16; ++v) {
    __m512 mx4[4] = {neg_inf, neg_inf, neg_inf, neg_inf};  // 4 chains hide max latency
    for (int j = 0; j < nk; ++j)
      mx4[j & 3] = _mm512_mask_max_ps(mx4[j & 3], lane_mask(bits[j], v), mx4[j & 3],
                                      _mm512_load_ps(St + j * kTile + 16 * v));
    const __m512 mx = _mm512_max_ps(_mm512_max_ps(mx4[0], mx4[1]), _mm512_max_ps(mx4[2], mx4[3]));
    const __m512 m_old = _mm512_load_ps(m2 + 16 * v);
    const __m512 m_new = _mm512_max_ps(m_old, _mm512_mul_ps(mx, vc));
    // A query that has seen no allowed key yet keeps m = -inf; subtract 0 instead.
    const __m512 m_use = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(m_new, neg_inf, _CMP_EQ_OQ), m_new,
                                              _mm512_setzero_ps());
    const __m512 a = exp2_ps(_mm512_sub_ps(m_old, m_use));
    __m512 sum = _mm512_setzero_ps();
    for (int j = 0; j < nk; ++j) {
      float* s = St + j * kTile + 16 * v;
      const __m512 p = _mm512_maskz_mov_ps(lane_mask(bits[j], v),
                                           exp2_ps(_mm512_fmsub_ps(_mm512_load_ps(s), vc, m_use)));
      _mm512_store_ps(s, p);
      sum = _mm512_add_ps(sum, p);
    }
    _mm512_store_ps(l + 16 * v, _mm512_fmadd_ps(_mm512_load_ps(l + 16 * v), a, sum));
    _mm512_store_ps(m2 + 16 * v, m_new);
    _mm512_store_ps(alpha + 16 * v, a);
    moved |= _mm512_cmp_ps_mask(m_new, m_old, _CMP_NEQ_UQ) != 0;
  }
#else
  for (int i = 0; i < nq; ++i) {
    float mx = kNegInf;
    for (int j = 0; j < nk; ++j)
      if ((bits[j] >> i) & 1) mx = std::max(mx, St[j * kTile + i]);
    const float m_new = std::max(m2[i], mx * c);
    const float m_use = m_new == kNegInf ? 0.0f : m_new;
    const float a = std::exp2(m2[i] - m_use);
    float sum = 0.0f;
    for (int j = 0; j < nk; ++j) {
      float& s = St[j * kTile + i];
      s = ((bits[j] >> i) & 1) ? std::exp2(s * c - m_use) : 0.0f;
      sum += s;
    }
    l[i] = l[i] * a + sum;
    moved |= m2[i] != m_new;
    m2[i] = m_new;
    alpha[i] = a;
  }
#endif
  return moved;
}

void probabilities(float* S, int nq, int nk, const uint64_t* bits, float c, const float* L2) {
#if CHAINLM_ATTENTION_AVX512
  const __m512 vc = _mm512_set1_ps(c);
  const int nv = (nk + 15) / 16;
  for (int i = 0; i < nq; ++i) {
    const __m512 li = _mm512_set1_ps(L2[i]);
    for (int v = 0; v < nv; ++v) {
      float* s = S + i * kTile + 16 * v;
      _mm512_store_ps(s, _mm512_maskz_mov_ps(lane_mask(bits[i], v),
                                             exp2_ps(_mm512_fmsub_ps(_mm512_load_ps(s), vc, li))));
    }
  }
#else
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < nk; ++j) {
      float& s = S[i * kTile + j];
      s = ((bits[i] >> j) & 1) ? std::exp2(s * c - L2[i]) : 0.0f;
    }
#endif
}

void softmax_grad(const float* P, float* dP, int nq, int nk, const uint64_t* bits, const float* D,
                  float scale) {
#if CHAINLM_ATTENTION_AVX512
  const __m512 vs = _mm512_set1_ps(scale);
  const int nv = (nk + 15) / 16;
  for (int i = 0; i < nq; ++i) {
    const __m512 di = _mm512_set1_ps(D[i]);
    for (int v = 0; v < nv; ++v) {
      const int at = i * kTile + 16 * v;
      const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(_mm512_load_ps(P + at), vs),
                                      _mm512_sub_ps(_mm512_load_ps(dP + at), di));
      _mm512_store_ps(dP + at, _mm512_maskz_mov_ps(lane_mask(bits[i], v), ds));
    }
  }
#else
  for (int i = 0; i < nq; ++i)
    for (int j = 0; j < nk; ++j) {
      const int at = i * kTile + j;
      dP[at] = ((bits[i] >> j) & 1) ? scale * P[at] * (dP[at] - D[i]) : 0.0f;
    }
#endif
}

void add_rows(float* dst, long stride, const float* src, int ld, long rows, int cols) {
  for (long r = 0; r < rows; ++r) {
    float* d = dst + r * stride;
    const float* a = src + r * ld;
    prefetch_row(d + kPrefetchRows * stride, cols, 1);
    for (int c = 0; c < cols; ++c) d[c] += a[c];
  }
}

}  // namespace chainlm::attn
