// Row primitives of the attention kernels (attention_tiles.h): a handful of query rows
// (decoding) go one at a time instead of through a 64 x 64 tile that would spend most of its
// vector lanes on padding. Each row reads its keys and values in place, 16 keys per step,
// with their scores summed across lanes by an in-register transpose (AVX-512), or one dot
// product per key (AVX2). Keys and values are fp32 rows or IEEE halves (a 16-bit KV cache),
// widened as they are loaded: the arithmetic after the load is the same, so a row of halves
// gives what its widened fp32 copy gives, bit for bit.
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attention_tiles.h"
#include "kernels/quant.h"

namespace chainlm::attn {

namespace {

// Only the scalar tails use these: an AVX-512 build has none, and clang's -Wunused-function
// (an error in the fuzz build) would flag them there.
[[maybe_unused]] inline float widen(float x) { return x; }
[[maybe_unused]] inline float widen(uint16_t h) { return float_from_fp16(h); }

// Prefetches a row of n elements, one request per cache line.
template <typename T>
inline void prefetch_elements(const T* row, int n) {
  for (int c = 0; c < n; c += 64 / static_cast<int>(sizeof(T))) __builtin_prefetch(row + c, 0);
}

#if CHAINLM_ATTENTION_AVX512
// Elements [0, 16) of p where mask m has a bit (zeros elsewhere), as fp32.
inline __m512 load16(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load16(const uint16_t* p, __mmask16 m) {
#if defined(__AVX512BW__) && defined(__AVX512VL__)
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
#else
  alignas(32) uint16_t t[16] = {};
  for (int i = 0; i < 16; ++i)
    if ((m >> i) & 1) t[i] = p[i];
  return _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(t)));
#endif
}
#elif CHAINLM_ATTENTION_AVX2
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  alignas(32) float t[8];
  for (int i = 0; i < 8; ++i) t[i] = float_from_fp16(p[i]);
  return _mm256_load_ps(t);
#endif
}
#endif

// a . b over n elements, b's widened as they are loaded: the one loop of dot() for either type.
template <typename T>
float dot_widened(const float* a, const T* b, int n) {
#if CHAINLM_ATTENTION_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int d = 0; d < n; d += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - d >= 16 ? 0xFFFF : (1u << (n - d)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), load16(b + d, m), acc);
  }
  return _mm512_reduce_add_ps(acc);
#elif CHAINLM_ATTENTION_AVX2
  // Two accumulators: two FMA chains in flight (a decode row is one head, 64 to 128 floats).
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  int d = 0;
  for (; d + 16 <= n; d += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), load8(b + d), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d + 8), load8(b + d + 8), acc1);
  }
  if (d + 8 <= n) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + d), load8(b + d), acc0);
    d += 8;
  }
  float acc = horizontal_sum(_mm256_add_ps(acc0, acc1));
  for (; d < n; ++d) acc = std::fma(a[d], widen(b[d]), acc);  // contracted alike for either type
  return acc;
#else
  float acc = 0.0f;
  for (int d = 0; d < n; ++d) acc += a[d] * widen(b[d]);
  return acc;
#endif
}

}  // namespace

float dot(const float* a, const float* b, int n) { return dot_widened(a, b, n); }

#if CHAINLM_ATTENTION_AVX2
namespace {

// dot_widened of q with 8 keys whose size is a multiple of 8, four keys at a time (eight
// accumulators and q's two registers fit the 16), and the 8 horizontal sums at once
// (horizontal_sums8, each lane the bits of horizontal_sum): the very bits of dot_widened per key,
// without a dependent chain of shuffles after every key. A decoding step's scores on AVX2 CPUs
// took one such chain per key.
template <typename T>
void dots8(const float* q, const T* k, long stride, int hd, float* out) {
  __m256 sums[8];
  for (int g = 0; g < 8; g += 4) {
    __m256 a0[4], a1[4];
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) a0[j] = a1[j] = _mm256_setzero_ps();
    int d = 0;
    for (; d + 16 <= hd; d += 16) {
      const __m256 q0 = _mm256_loadu_ps(q + d), q1 = _mm256_loadu_ps(q + d + 8);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
        const T* key = k + (g + j) * stride + d;
        a0[j] = _mm256_fmadd_ps(q0, load8(key), a0[j]);
        a1[j] = _mm256_fmadd_ps(q1, load8(key + 8), a1[j]);
      }
    }
    if (d + 8 <= hd) {
      const __m256 q0 = _mm256_loadu_ps(q + d);
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j)
        a0[j] = _mm256_fmadd_ps(q0, load8(k + (g + j) * stride + d), a0[j]);
    }
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j) sums[g + j] = _mm256_add_ps(a0[j], a1[j]);
  }
  horizontal_sums8(sums, out);
}

// Columns [d0, d0 + 8 NV) of sum_j p[j] v_j, keys in order; a zero weight adds nothing.
template <int NV, typename T>
void weighted_columns_avx2(const float* p, long n, const T* vg, long stride, int d0, float* out) {
  __m256 acc[NV];
#pragma GCC unroll 8
  for (int x = 0; x < NV; ++x) acc[x] = _mm256_setzero_ps();
  for (long j = 0; j < n; ++j) {
    if (p[j] == 0.0f) continue;
    const __m256 pj = _mm256_set1_ps(p[j]);
    const T* vrow = vg + j * stride + d0;
#pragma GCC unroll 8
    for (int x = 0; x < NV; ++x) acc[x] = _mm256_fmadd_ps(pj, load8(vrow + 8 * x), acc[x]);
  }
#pragma GCC unroll 8
  for (int x = 0; x < NV; ++x) _mm256_storeu_ps(out + d0 + 8 * x, acc[x]);
}

}  // namespace
#endif

#if CHAINLM_ATTENTION_AVX512
namespace {

// row_scores16's sums with the head size known at compile time (NC blocks of 16 floats; 0: any
// size, the last block masked) and, with Full, all 16 keys present: the loops unroll without
// a test per key or block. Every variant sums each key's products the same way (16-float blocks
// in order into one accumulator, then the same lane tree), so they give the same bits.
template <int NC, bool Full, typename T>
float row_scores16_k(const float* qrow, const T* kg, long stride, int n, int hd, uint32_t allowed, float* out) {
  const int nc = NC > 0 ? NC : (hd + 15) / 16;
  __m512 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    acc[j] = _mm512_setzero_ps();
    prefetch_elements(kg + (16 + j) * stride, hd);  // the next call's keys
  }
#pragma GCC unroll 8
  for (int c = 0; c < nc; ++c) {
    const int d = 16 * c;
    const __mmask16 m = static_cast<__mmask16>(NC > 0 || hd - d >= 16 ? 0xFFFF : (1u << (hd - d)) - 1);
    const __m512 qv = _mm512_maskz_loadu_ps(m, qrow + d);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j)
      if (Full || j < n) acc[j] = _mm512_fmadd_ps(qv, load16(kg + j * stride + d, m), acc[j]);
  }
  // Sum each accumulator's lanes, all 16 at once: add interleaved pairs, then 64-bit
  // pairs, then 128-bit lanes; lane j of the result is the sum of acc[j].
  __m512 t[8], u[4];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i)
    t[i] = _mm512_add_ps(_mm512_unpacklo_ps(acc[2 * i], acc[2 * i + 1]),
                         _mm512_unpackhi_ps(acc[2 * i], acc[2 * i + 1]));
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i)
    u[i] = _mm512_add_ps(_mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(t[2 * i], t[2 * i + 1], 0xEE));
  const __m512 v01 =
      _mm512_add_ps(_mm512_shuffle_f32x4(u[0], u[1], 0x88), _mm512_shuffle_f32x4(u[0], u[1], 0xDD));
  const __m512 v23 =
      _mm512_add_ps(_mm512_shuffle_f32x4(u[2], u[3], 0x88), _mm512_shuffle_f32x4(u[2], u[3], 0xDD));
  const __mmask16 m = static_cast<__mmask16>(allowed & (Full ? 0xFFFFu : (1u << n) - 1));
  const __m512 sc = _mm512_mask_blend_ps(
      m, _mm512_set1_ps(kNegInf),
      _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, 0x88), _mm512_shuffle_f32x4(v01, v23, 0xDD)));
  _mm512_storeu_ps(out, sc);
  return _mm512_reduce_max_ps(sc);
}

// Columns [d0, d0 + 16*NV) (the last block masked by `last`) of sum_j p[r][j] * v_j for Q rows
// that share the value rows: each value row loaded once for all Q. Even and odd keys go into
// two accumulators added at the end, so two FMA chains per column block are in flight where one
// chain waited on the last FMA's latency for every key. A zero weight adds nothing (not 0 * v).
// row_weighted_sum is this with Q = 1: every row gets the same bits whatever Q.
template <int Q, int NV, typename T>
[[gnu::always_inline]] inline void weighted_key(const float* const* p, long j, const T* vg, long stride, int d0,
                                                int cols, __mmask16 last, __m512 (&acc)[Q][NV]) {
  const T* vrow = vg + j * stride + d0;
  prefetch_elements(vrow + kPrefetchRows * stride, cols);
  __m512 v[NV];
#pragma GCC unroll 4
  for (int x = 0; x < NV; ++x) v[x] = load16(vrow + 16 * x, x == NV - 1 ? last : 0xFFFF);
#pragma GCC unroll 2
  for (int r = 0; r < Q; ++r) {
    if (p[r][j] == 0.0f) continue;
    const __m512 pj = _mm512_set1_ps(p[r][j]);
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x) acc[r][x] = _mm512_fmadd_ps(pj, v[x], acc[r][x]);
  }
}

template <int Q, int NV, typename T>
void weighted_sum_block(const float* const* p, long n, const T* vg, long stride, int d0, int cols,
                        __mmask16 last, float* const* out) {
  __m512 even[Q][NV], odd[Q][NV];
#pragma GCC unroll 2
  for (int r = 0; r < Q; ++r)
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x) even[r][x] = odd[r][x] = _mm512_setzero_ps();
  long j = 0;
  for (; j + 1 < n; j += 2) {
    weighted_key<Q, NV>(p, j, vg, stride, d0, cols, last, even);
    weighted_key<Q, NV>(p, j + 1, vg, stride, d0, cols, last, odd);
  }
  if (j < n) weighted_key<Q, NV>(p, j, vg, stride, d0, cols, last, even);
#pragma GCC unroll 2
  for (int r = 0; r < Q; ++r)
#pragma GCC unroll 4
    for (int x = 0; x < NV; ++x)
      _mm512_mask_storeu_ps(out[r] + d0 + 16 * x, x == NV - 1 ? last : 0xFFFF,
                            _mm512_add_ps(even[r][x], odd[r][x]));
}

// Every column of Q rows' weighted sums, 64 columns (four registers per accumulator) at a time.
template <int Q, typename T>
void weighted_sums(const float* const* p, long n, const T* vg, long stride, int hd, float* const* out) {
  for (int d0 = 0; d0 < hd; d0 += 64) {
    const int cols = std::min(64, hd - d0), nv = (cols + 15) / 16, rem = cols - 16 * (nv - 1);
    const __mmask16 last = static_cast<__mmask16>(rem == 16 ? 0xFFFF : (1u << rem) - 1);
    switch (nv) {
      case 1:
        weighted_sum_block<Q, 1>(p, n, vg, stride, d0, cols, last, out);
        break;
      case 2:
        weighted_sum_block<Q, 2>(p, n, vg, stride, d0, cols, last, out);
        break;
      case 3:
        weighted_sum_block<Q, 3>(p, n, vg, stride, d0, cols, last, out);
        break;
      default:
        weighted_sum_block<Q, 4>(p, n, vg, stride, d0, cols, last, out);
        break;
    }
  }
}

template <int NC, typename T>
float row_scores16_n(const float* qrow, const T* kg, long stride, int n, int hd, uint32_t allowed, float* out) {
  return n >= 16 ? row_scores16_k<NC, true>(qrow, kg, stride, 16, hd, allowed, out)
                 : row_scores16_k<NC, false>(qrow, kg, stride, n, hd, allowed, out);
}

}  // namespace
#endif

template <typename T>
float row_scores16(const float* qrow, const T* kg, long stride, int n, int hd, uint32_t allowed, float* out) {
#if CHAINLM_ATTENTION_AVX512
  // The head sizes of the models seen (64, 128; 32 for small ones) unrolled, any other through
  // the general loop.
  switch (hd) {
    case 32:
      return row_scores16_n<2>(qrow, kg, stride, n, hd, allowed, out);
    case 64:
      return row_scores16_n<4>(qrow, kg, stride, n, hd, allowed, out);
    case 128:
      return row_scores16_n<8>(qrow, kg, stride, n, hd, allowed, out);
    default:
      return row_scores16_n<0>(qrow, kg, stride, n, hd, allowed, out);
  }
#else
  int j0 = 0;
#if CHAINLM_ATTENTION_AVX2
  // Eight present keys at a time (dots8); a head size not a multiple of 8, whose sums end in
  // scalar products, and the keys past the last eight one by one.
  if (hd % 8 == 0)
    for (; j0 + 8 <= n; j0 += 8) dots8(qrow, kg + j0 * stride, stride, hd, out + j0);
#endif
  for (int j = j0; j < 16 && j < n; ++j) out[j] = dot_widened(qrow, kg + j * stride, hd);
  float mx = kNegInf;
  for (int j = 0; j < 16; ++j) {
    if (j >= n || !((allowed >> j) & 1)) out[j] = kNegInf;
    mx = std::max(mx, out[j]);
  }
  return mx;
#endif
}

float row_probabilities(float* sc, long n, float c, float m2) {
#if CHAINLM_ATTENTION_AVX512
  const __m512 vc = _mm512_set1_ps(c), vm = _mm512_set1_ps(m2);
  const __m512 neg_inf = _mm512_set1_ps(kNegInf);
  __m512 sum = _mm512_setzero_ps();
  for (long j = 0; j < n; j += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
    const __m512 x = _mm512_maskz_loadu_ps(m, sc + j);
    const __mmask16 live = m & _mm512_cmp_ps_mask(x, neg_inf, _CMP_NEQ_OQ);
    const __m512 p = _mm512_maskz_mov_ps(live, exp2_ps(_mm512_fmsub_ps(x, vc, vm)));
    _mm512_mask_storeu_ps(sc + j, m, p);
    sum = _mm512_add_ps(sum, p);
  }
  return _mm512_reduce_add_ps(sum);
#else
  float sum = 0.0f;
  for (long j = 0; j < n; ++j) sum += (sc[j] = sc[j] == kNegInf ? 0.0f : std::exp2(sc[j] * c - m2));
  return sum;
#endif
}

template <typename T>
void row_weighted_sum(const float* p, long n, const T* vg, long stride, int hd, float* out) {
#if CHAINLM_ATTENTION_AVX512
  weighted_sums<1>(&p, n, vg, stride, hd, &out);
#elif CHAINLM_ATTENTION_AVX2
  // 64 columns (eight registers) at a time over every value row: eight FMA chains in flight,
  // where four (32 columns) waited on the FMA's latency for every key. Each column still sums
  // its keys in order, one FMA at a time: the same bits. The last columns of a head whose size
  // is not a multiple of 8 go one by one.
  int d0 = 0;
  for (; d0 + 64 <= hd; d0 += 64) weighted_columns_avx2<8>(p, n, vg, stride, d0, out);
  using Columns = void (*)(const float*, long, const T*, long, int, float*);
  static constexpr Columns kRest[8] = {nullptr,
                                       weighted_columns_avx2<1, T>,
                                       weighted_columns_avx2<2, T>,
                                       weighted_columns_avx2<3, T>,
                                       weighted_columns_avx2<4, T>,
                                       weighted_columns_avx2<5, T>,
                                       weighted_columns_avx2<6, T>,
                                       weighted_columns_avx2<7, T>};
  if (const int rest = (hd - d0) / 8; rest > 0) kRest[rest](p, n, vg, stride, d0, out);
  d0 += (hd - d0) / 8 * 8;
  if (d0 < hd) {
    // Explicit fused multiply-adds, zero weights skipped, as the vector columns: the same bits
    // at any optimization level (-O1, the sanitizer build's, did not contract `+= p * v`).
    std::fill(out + d0, out + hd, 0.0f);
    for (long j = 0; j < n; ++j) {
      if (p[j] == 0.0f) continue;
      for (int d = d0; d < hd; ++d) out[d] = std::fma(p[j], widen(vg[j * stride + d]), out[d]);
    }
  }
#else
  std::fill(out, out + hd, 0.0f);
  for (long j = 0; j < n; ++j)
    for (int d = 0; d < hd; ++d) out[d] += p[j] * widen(vg[j * stride + d]);
#endif
}

#if CHAINLM_ATTENTION_AVX512
namespace {

// Scores of Q query rows against four keys (rows kg + j*stride, j < n <= 4, the rest 0), with
// each (query, key) sum formed as row_scores16 forms it: 16-float blocks in order into one
// accumulator, then the same lane tree (pairs of lanes 2 apart, then 1 apart, within each
// 128-bit lane, then 128-bit lanes 1 apart, then 2 apart). out[q][j] for j < 4.
template <int Q, typename T>
[[gnu::always_inline]] inline void four_key_scores(const float* const* q, const T* kg, long stride,
                                                   int n, int hd, float* const* out, int j0) {
  __m512 acc[4][Q];
#pragma GCC unroll 4
  for (int j = 0; j < 4; ++j)
    for (int r = 0; r < Q; ++r) acc[j][r] = _mm512_setzero_ps();
  for (int d = 0; d < hd; d += 16) {
    const __mmask16 m = static_cast<__mmask16>(hd - d >= 16 ? 0xFFFF : (1u << (hd - d)) - 1);
    __m512 qv[Q];
    for (int r = 0; r < Q; ++r) qv[r] = _mm512_maskz_loadu_ps(m, q[r] + d);
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      if (j < n) {
        const __m512 kv = load16(kg + j * stride + d, m);
        for (int r = 0; r < Q; ++r) acc[j][r] = _mm512_fmadd_ps(qv[r], kv, acc[j][r]);
      }
  }
  for (int r = 0; r < Q; ++r) {
    const __m512 t0 = _mm512_add_ps(_mm512_unpacklo_ps(acc[0][r], acc[1][r]),
                                    _mm512_unpackhi_ps(acc[0][r], acc[1][r]));
    const __m512 t1 = _mm512_add_ps(_mm512_unpacklo_ps(acc[2][r], acc[3][r]),
                                    _mm512_unpackhi_ps(acc[2][r], acc[3][r]));
    const __m512 u =
        _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x44), _mm512_shuffle_ps(t0, t1, 0xEE));
    const __m512 v =
        _mm512_add_ps(_mm512_shuffle_f32x4(u, u, 0x88), _mm512_shuffle_f32x4(u, u, 0xDD));
    _mm_storeu_ps(out[r] + j0, _mm_add_ps(_mm512_castps512_ps128(v), _mm512_extractf32x4_ps(v, 1)));
  }
}

template <int Q, typename T>
void rows_scores16_q(const float* const* q, const T* kg, long stride, int n, int hd,
                     float* const* out, float* mx) {
  for (int j = 0; j < 16; ++j)
    prefetch_elements(kg + (16 + j) * stride, hd);  // the next call's keys
  for (int j0 = 0; j0 < 16; j0 += 4)
    four_key_scores<Q>(q, kg + j0 * stride, stride, std::max(0, std::min(4, n - j0)), hd, out, j0);
  for (int r = 0; r < Q; ++r) {
    float m = mx[r];
    for (int j = 0; j < 16; ++j) {
      if (j >= n) out[r][j] = kNegInf;
      m = std::max(m, out[r][j]);
    }
    mx[r] = m;
  }
}

}  // namespace
#endif

template <typename T>
void rows_scores16(const float* const* q, int nq, const T* kg, long stride, int n, int hd,
                   float* const* out, float* mx) {
#if CHAINLM_ATTENTION_AVX512
  switch (nq) {
    case 1:
      return rows_scores16_q<1>(q, kg, stride, n, hd, out, mx);
    case 2:
      return rows_scores16_q<2>(q, kg, stride, n, hd, out, mx);
    case 3:
      return rows_scores16_q<3>(q, kg, stride, n, hd, out, mx);
    case 4:
      return rows_scores16_q<4>(q, kg, stride, n, hd, out, mx);
    default:
      break;
  }
#endif
  const uint32_t all = n >= 16 ? 0xFFFFu : (1u << n) - 1;
  for (int r = 0; r < nq; ++r)
    mx[r] = std::max(mx[r], row_scores16(q[r], kg, stride, n, hd, all, out[r]));
}

template <typename T>
void rows_weighted_sum(const float* const* p, int nq, long n, const T* vg, long stride, int hd,
                       float* const* out) {
#if CHAINLM_ATTENTION_AVX512
  // Two rows at a time: with two accumulators per row, a third row's would not fit in registers.
  int r = 0;
  for (; r + 1 < nq; r += 2) weighted_sums<2>(p + r, n, vg, stride, hd, out + r);
  if (r < nq) weighted_sums<1>(p + r, n, vg, stride, hd, out + r);
#else
  for (int r = 0; r < nq; ++r) row_weighted_sum(p[r], n, vg, stride, hd, out[r]);
#endif
}

template float row_scores16(const float*, const float*, long, int, int, uint32_t, float*);
template float row_scores16(const float*, const uint16_t*, long, int, int, uint32_t, float*);
template void row_weighted_sum(const float*, long, const float*, long, int, float*);
template void row_weighted_sum(const float*, long, const uint16_t*, long, int, float*);
template void rows_scores16(const float* const*, int, const float*, long, int, int, float* const*,
                            float*);
template void rows_scores16(const float* const*, int, const uint16_t*, long, int, int,
                            float* const*, float*);
template void rows_weighted_sum(const float* const*, int, long, const float*, long, int,
                                float* const*);
template void rows_weighted_sum(const float* const*, int, long, const uint16_t*, long, int,
                                float* const*);

}  // namespace chainlm::attn
