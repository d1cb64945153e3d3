// Masked multi-head attention with grouped KV heads, forward and backward, flash-style.
//
// q, dq are (B, Tq, q_stride); k, v, dk, dv are (B, Tk, kv_stride); o, dout are (B, Tq, o_stride);
// lse is (B, H, Tq). Query head h of a row is the hd floats at h*hd; it reads KV head
// g = kv_head_of[h] of the key rows (floats at g*hd). Query row i sits at position
// q_offset + i, key row j at position j; the mask rules on these positions.
//
// Both passes walk 64 x 64 tiles of the (query, key) plane and never keep a score matrix:
// - forward, one work item per (b, h) (or per (b, h, every n-th query tile) when that
//   leaves too few items for the threads): pack the head's K, V rows, then per query tile
//   and per key tile the mask does not exclude: St = K_tile . Q_tile^T (keys x queries,
//   so the softmax statistics of the 64 queries are vertical vector ops), online softmax
//   update of the running max m, sum l and output accumulator O; finally o = O / l and
//   lse = m + log(l). Up to 4 query rows (decoding) go row by row instead.
// - backward, one work item per (b, KV head g) so dk/dv of g have a single writer; per
//   query head h of g, per key tile, per query tile:
//     P = exp(scale q.k - lse), dV += P^T dO, dP = dO V^T, dS = scale P (dP - D),
//     dQ += dS K, dK += dS^T Q        with D_i = dO_i . o_i precomputed per row,
//   all on packed copies, with dQ, dK, dV added into dq, dk, dv once at the end.
// Partial (diagonal) tiles carry 64-bit allowed-masks per row and column; the tile
// matmuls use them to skip the blocks that are masked out and the softmax zeroes them.
// The tile matmuls are register-blocked AVX-512 (6 rows x 64 columns): on hot 64x64x64
// blocks they ran at 162 GFLOP/s per core vs 149 for cblas_sgemm, and they can skip the
// masked-out blocks of partial tiles and read transposed operands in place. Without
// AVX-512 (or with CHAINLM_ATTENTION_SCALAR defined) portable loops take their place.
// The PHD masks (SPEC B2) run the same tile primitives over compact views of the originals
// and the hidden-token stream ("PHD masks on compact key views" below).
#include "kernels/attention.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"

#if defined(__AVX512F__) && !defined(CHAINLM_ATTENTION_SCALAR)
#define CHAINLM_ATTENTION_AVX512 1
// GCC 12 reports its own _mm512_undefined_ps() pass-through operands as (maybe-)uninitialized.
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

namespace chainlm {

// ------------------------------------------------------------------------------------
// Mask rules
// ------------------------------------------------------------------------------------

namespace {

inline uint64_t low_bits(int64_t n) {
  return n <= 0 ? 0 : n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
}

}  // namespace

AttentionMask AttentionMask::phd(int repeat, int window, int chunk) {
  AttentionMask m;
  if (repeat <= 1) return m;  // K = 1 is the ordinary causal model (SPEC B1)
  m.kind = window == 0 ? Kind::Phd : chunk == 0 ? Kind::PhdSwa : Kind::PhdCswa;
  m.repeat = repeat;
  m.window = window;
  m.chunk = chunk;
  return m;
}

void AttentionMask::phd_hidden_interval(int64_t n, int64_t j, int64_t* lo, int64_t* hi) const {
  const int64_t K1 = repeat - 1;
  if (j <= 0) {  // an original attends no hidden token
    *lo = *hi = n * K1;
    return;
  }
  const int64_t hq = n * K1 + j - 1;  // h(n, j)
  int64_t w0 = kind == Kind::Phd ? hq : hq - window;
  if (kind == Kind::PhdCswa) w0 = std::max<int64_t>(w0, n / chunk * chunk * K1);
  // The window and the own position's copies 1..j (which start at n*(K-1)) are both
  // intervals ending at hq, so their union is one interval.
  *lo = std::max<int64_t>(0, std::min(n * K1, w0));
  *hi = hq + 1;
}

bool AttentionMask::allowed(int64_t qpos, int64_t kpos) const {
  switch (kind) {
    case Kind::Causal:
      return kpos <= qpos;
    case Kind::Phd:
    case Kind::PhdSwa:
    case Kind::PhdCswa: {
      // SPEC B2 as written: query = copy j of position n, key = copy i of position m.
      const int64_t K = repeat, n = qpos / K, j = qpos % K, m = kpos / K, i = kpos % K;
      if ((i == 0 && m < n) || (m == n && i <= j)) return true;
      if (kind == Kind::Phd || i == 0 || j == 0) return false;
      const int64_t d = (n * (K - 1) + j - 1) - (m * (K - 1) + i - 1);
      if (!(d > 0 && d <= window)) return false;
      return kind == Kind::PhdSwa || m / chunk == n / chunk;
    }
  }
  return false;
}

AttentionMask::Cover AttentionMask::cover(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const {
  if (q0 >= q1 || k0 >= k1) return Cover::Empty;
  switch (kind) {
    case Kind::Causal:
      if (k0 > q1 - 1) return Cover::Empty;
      if (k1 - 1 <= q0) return Cover::Full;
      return Cover::Partial;
    case Kind::Phd:
    case Kind::PhdSwa:
    case Kind::PhdCswa: {
      if (k0 > q1 - 1) return Cover::Empty;  // every PHD mask lies inside the causal one
      // The reference rule pair by pair (the kernels use a compact view instead).
      bool any = false, all = true;
      for (int64_t qp = q0; qp < q1; ++qp)
        for (int64_t kp = k0; kp < k1; ++kp) {
          const bool a = allowed(qp, kp);
          any |= a;
          all &= a;
        }
      return !any ? Cover::Empty : all ? Cover::Full : Cover::Partial;
    }
  }
  return Cover::Partial;
}

void AttentionMask::key_bounds(int64_t q0, int64_t q1, int64_t kv_len, int64_t* k_begin,
                               int64_t* k_end) const {
  *k_begin = 0;
  *k_end = kv_len;
  switch (kind) {
    case Kind::Causal:
    case Kind::Phd:  // PHD masks allow a subset of the causal pairs
    case Kind::PhdSwa:
    case Kind::PhdCswa:
      *k_end = std::clamp<int64_t>(q1, 0, kv_len);
      break;
  }
  (void)q0;
}

void AttentionMask::query_bounds(int64_t k0, int64_t k1, int64_t* q_begin, int64_t* q_end) const {
  *q_begin = std::numeric_limits<int64_t>::min();
  *q_end = std::numeric_limits<int64_t>::max();
  switch (kind) {
    case Kind::Causal:
    case Kind::Phd:
    case Kind::PhdSwa:
    case Kind::PhdCswa:
      *q_begin = k0;
      break;
  }
  (void)k1;
}

uint64_t AttentionMask::key_bits(int64_t qpos, int64_t k0, int nk) const {
  switch (kind) {
    case Kind::Causal:
      return low_bits(std::min<int64_t>(qpos - k0 + 1, nk));
    case Kind::Phd:
    case Kind::PhdSwa:
    case Kind::PhdCswa:
      break;
  }
  uint64_t bits = 0;  // generic rule for kinds without a closed form
  for (int j = 0; j < nk; ++j)
    if (allowed(qpos, k0 + j)) bits |= uint64_t{1} << j;
  return bits;
}

uint64_t AttentionMask::query_bits(int64_t kpos, int64_t q0, int nq) const {
  switch (kind) {
    case Kind::Causal:
      return low_bits(nq) & ~low_bits(kpos - q0);
    case Kind::Phd:
    case Kind::PhdSwa:
    case Kind::PhdCswa:
      break;
  }
  uint64_t bits = 0;
  for (int i = 0; i < nq; ++i)
    if (allowed(q0 + i, kpos)) bits |= uint64_t{1} << i;
  return bits;
}

namespace {

// ------------------------------------------------------------------------------------
// Scratch and small helpers
// ------------------------------------------------------------------------------------

constexpr int kTile = 64;  // query and key tile size; the row masks are uint64_t
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A per-thread buffer that only grows, so the hot path never allocates after warm-up.
class Scratch {
 public:
  ~Scratch() { std::free(data_); }
  float* get(size_t n) {
    if (n > capacity_) {
      std::free(data_);
      capacity_ = std::max(n, capacity_ * 2);
      data_ = static_cast<float*>(std::aligned_alloc(64, round_up(capacity_ * sizeof(float))));
      CHAINLM_CHECK(data_ != nullptr, "attention: out of memory for scratch");
    }
    return data_;
  }

 private:
  static size_t round_up(size_t bytes) { return (bytes + 63) / 64 * 64; }
  float* data_ = nullptr;
  size_t capacity_ = 0;
};

float* thread_scratch(size_t n) {
  thread_local Scratch scratch;
  return scratch.get(n);
}

inline int round16(int n) {
  return (n + 15) / 16 * 16;
}

inline int kv_head(const AttentionShape& s, int h) {
  return s.kv_head_of ? s.kv_head_of[h] : h;
}

// Rows of (B, T, heads*hd) tensors are a few KB apart, a stride the hardware prefetchers
// do not follow (they stay within 4 KB pages), so row loops prefetch a few rows ahead.
// Prefetching past the end of an array is harmless (prefetches never fault).
constexpr int kPrefetchRows = 12;
inline void prefetch_row(const float* row, int cols, int write) {
  for (int c = 0; c < cols; c += 16) {
    if (write)
      __builtin_prefetch(row + c, 1);
    else
      __builtin_prefetch(row + c, 0);
  }
}

// dst[r*ld + c] = src[r*stride + c] for r < rows, c < cols. Tiles are packed before they are
// reused as a matmul's B operand: rows a multiple of 4 KB apart alias to the same few L1
// sets, so a strided 64-row tile would not stay in L1.
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

// dst[c*ld + r] = src[r*stride + c] for r < rows, c < cols (rows <= ld). With AVX-512, dst
// columns [rows, round16(rows)) may be written (with zeros) too.
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

float dot(const float* a, const float* b, int n) {
#if CHAINLM_ATTENTION_AVX512
  __m512 acc = _mm512_setzero_ps();
  for (int d = 0; d < n; d += 16) {
    const __mmask16 m = static_cast<__mmask16>(n - d >= 16 ? 0xFFFF : (1u << (n - d)) - 1);
    acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + d), _mm512_maskz_loadu_ps(m, b + d), acc);
  }
  return _mm512_reduce_add_ps(acc);
#else
  float acc = 0.0f;
  for (int d = 0; d < n; ++d) acc += a[d] * b[d];
  return acc;
#endif
}

// ------------------------------------------------------------------------------------
// Tile primitives: matmul, forward softmax update, backward softmax gradient
// ------------------------------------------------------------------------------------

#if CHAINLM_ATTENTION_AVX512

constexpr int kMR = 6;  // rows per register block: 6 x 4 zmm accumulators

inline __m512 exp2_ps(__m512 x) {
  // 2^x = 2^n * 2^f, n = round(x), |f| <= 1/2, 2^f from the Cephes exp2f polynomial.
  // Clamping keeps results normal (>= 2^-126); masked entries are zeroed explicitly.
  x = _mm512_max_ps(x, _mm512_set1_ps(-126.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);
  __m512 p = _mm512_set1_ps(1.535336188319500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339887440266574e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618437357674640e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550332471162809e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402264791363012e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931472028550421e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

inline __mmask16 lane_mask(uint64_t bits, int v) {
  return static_cast<__mmask16>(bits >> (16 * v));
}

// C[MR x 16*NV] (+)= sum_{k0<=k<k1} A(m, k) B[k, :]; the last vector is limited to `last` lanes.
template <int MR, int NV>
void micro_kernel(int k0, int k1, const float* A, long sam, long sak, const float* B, long ldb,
                  float* C, long ldc, __mmask16 last, bool accumulate) {
  __m512 c[MR][NV];
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      c[m][v] = accumulate
                    ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, C + m * ldc + 16 * v)
                    : _mm512_setzero_ps();
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
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (v == NV - 1)
        _mm512_mask_storeu_ps(C + m * ldc + 16 * v, last, c[m][v]);
      else
        _mm512_storeu_ps(C + m * ldc + 16 * v, c[m][v]);
    }
}

using MicroKernel = void (*)(int, int, const float*, long, long, const float*, long, float*, long,
                             __mmask16, bool);
#define CHAINLM_MICRO_ROW(MR) \
  { &micro_kernel<MR, 1>, &micro_kernel<MR, 2>, &micro_kernel<MR, 3>, &micro_kernel<MR, 4> }
constexpr MicroKernel kMicroKernels[kMR][4] = {CHAINLM_MICRO_ROW(1), CHAINLM_MICRO_ROW(2),
                                               CHAINLM_MICRO_ROW(3), CHAINLM_MICRO_ROW(4),
                                               CHAINLM_MICRO_ROW(5), CHAINLM_MICRO_ROW(6)};
#undef CHAINLM_MICRO_ROW

#else  // portable fallback

constexpr int kMR = 6;

#endif

// C (M x N) (+)= A (M x K) . B (K x N), with A(m, k) = A[m*sam + k*sak], B and C row-major.
// Optional per-row trimming (tile masks, so N <= 64 resp. K <= 64 when given): nbits[m] are
// the columns row m needs (the others may be left unwritten), kbits[m] the k where A(m, k)
// may be nonzero. Rows are trimmed in register blocks, by the union of their masks.
void tile_gemm(int M, int N, int K, const float* A, long sam, long sak, const float* B, long ldb,
               float* C, long ldc, bool accumulate, const uint64_t* nbits, const uint64_t* kbits) {
  for (int m0 = 0; m0 < M; m0 += kMR) {
    const int mr = std::min(kMR, M - m0);
    int n_begin = 0, n_end = N, k_begin = 0, k_end = K;
    if (nbits) {
      uint64_t u = 0;
      for (int r = 0; r < mr; ++r) u |= nbits[m0 + r];
      if (u == 0) continue;
      n_begin = std::countr_zero(u) & ~15;
      n_end = 64 - std::countl_zero(u);
    }
    if (kbits) {
      uint64_t u = 0;
      for (int r = 0; r < mr; ++r) u |= kbits[m0 + r];
      if (u == 0) {
        k_begin = k_end = 0;
        if (accumulate) continue;
      } else {
        k_begin = std::countr_zero(u);
        k_end = 64 - std::countl_zero(u);
      }
    }
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

// Forward online-softmax update for one tile. St is (nk keys) x (kTile query lanes) scores;
// bits[j] are the queries key row j may serve. Updates, per query lane i < nq, the running
// max m2 (log2 units, scaled scores), the sum l, writes the rescale factor alpha for the
// output accumulator, and overwrites St with the unnormalized probabilities. Returns
// whether any alpha differs from 1 (the running max moved).
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

// Backward: S (nq x kTile) scores -> P = exp2(c S - L2_i) where allowed (bits[i]), else 0.
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

// Backward: dP (nq x kTile) -> dS = scale * P * (dP - D_i) where allowed, else 0.
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

// ------------------------------------------------------------------------------------
// Forward
// ------------------------------------------------------------------------------------

void check_shape(const AttentionShape& s) {
  CHAINLM_CHECK(s.batch >= 0 && s.q_len >= 0 && s.kv_len >= 0 && s.n_heads >= 0,
                "attention: negative batch (", s.batch, "), q_len (", s.q_len, "), kv_len (",
                s.kv_len, ") or n_heads (", s.n_heads, ")");
  CHAINLM_CHECK(s.head_dim > 0, "attention: head_dim must be positive, got ", s.head_dim);
  CHAINLM_CHECK(s.q_offset >= 0, "attention: q_offset must be >= 0, got ", s.q_offset);
  CHAINLM_CHECK(s.scale > 0.0f && std::isfinite(s.scale),
                "attention: scale must be positive and finite, got ", s.scale);
  const long width = static_cast<long>(s.n_heads) * s.head_dim;
  CHAINLM_CHECK(s.q_stride >= width && s.o_stride >= width, "attention: q_stride (", s.q_stride,
                ") and o_stride (", s.o_stride, ") must be >= n_heads*head_dim = ", width);
  if (s.mask.is_phd())
    CHAINLM_CHECK(s.mask.repeat >= 2 && s.mask.window >= 0 &&
                      (s.mask.kind != AttentionMask::Kind::PhdCswa || s.mask.chunk > 0),
                  "attention: a PHD mask needs repeat >= 2, window >= 0 and (CSWA) chunk > 0; got ",
                  s.mask.repeat, ", ", s.mask.window, ", ", s.mask.chunk);
  for (int h = 0; h < s.n_heads; ++h) {
    const int g = kv_head(s, h);
    CHAINLM_CHECK(g >= 0 && static_cast<long>(g + 1) * s.head_dim <= s.kv_stride,
                  "attention: query head ", h, " maps to KV head ", g,
                  ", outside rows of kv_stride ", s.kv_stride, " (head_dim ", s.head_dim, ")");
  }
}

// dst[r*stride + c] += src[r*ld + c] for r < rows, c < cols.
void add_rows(float* dst, long stride, const float* src, int ld, long rows, int cols) {
  for (long r = 0; r < rows; ++r) {
    float* d = dst + r * stride;
    const float* a = src + r * ld;
    prefetch_row(d + kPrefetchRows * stride, cols, 1);
    for (int c = 0; c < cols; ++c) d[c] += a[c];
  }
}

// Where a forward work item reads its KV head's rows: key row j is at k + (j - first)*stride.
struct KvRows {
  const float* k;
  const float* v;
  long stride;
  long first;
  bool packed;  // contiguous rows (no L1 set aliasing): usable directly as a matmul B operand
};

size_t forward_tile_floats(int hd) {
  return static_cast<size_t>(kTile) * (hd + kTile + 2 * round16(hd) + 3 * 16);
}

// Scratch of one forward query tile (forward_tile_floats): the transposed Q tile, the scores,
// the output accumulator, a V tile and the running softmax statistics.
struct ForwardTileScratch {
  float *Qt, *St, *O, *Vp, *m2, *l, *alpha;
  ForwardTileScratch(float* scratch, int hd) {
    const int ldh = round16(hd);
    Qt = scratch;                             // hd x kTile, Q tile transposed
    St = Qt + static_cast<long>(hd) * kTile;  // kTile x kTile, keys x queries
    O = St + kTile * kTile;                   // nq x ldh output accumulator
    Vp = O + kTile * ldh;                     // nk x ldh, V tile packed (if kv is not)
    m2 = Vp + kTile * ldh;                    // running max, log2 units
    l = m2 + kTile;                           // running sum
    alpha = l + kTile;                        // per-tile rescale of O
  }
};

// One key tile of the online softmax for nq query lanes: St = K_tile . Q_tile^T, update of the
// running statistics, O = alpha O + P V. key_rows[j] are the queries key j may serve (all of
// them when !partial), query_rows[i] the keys query i may attend (read only when partial).
void forward_key_tile(int nq, int nk, int hd, const float* kj, const float* vj, long stride,
                      bool packed, bool partial, const uint64_t* key_rows,
                      const uint64_t* query_rows, float c, const ForwardTileScratch& t) {
  const int ldh = round16(hd);
  tile_gemm(nk, nq, hd, kj, stride, 1, t.Qt, kTile, t.St, kTile, false,
            partial ? key_rows : nullptr, nullptr);
  if (softmax_update(t.St, nk, nq, key_rows, c, t.m2, t.l, t.alpha)) {
    for (int i = 0; i < nq; ++i) {
      const float a = t.alpha[i];
      float* orow = t.O + i * ldh;
      for (int d = 0; d < hd; ++d) orow[d] *= a;
    }
  }
  long ldv = stride;
  if (!packed && nq > kMR) {  // V is reused by every register block of query rows
    pack(vj, stride, nk, hd, t.Vp, ldh);
    vj = t.Vp;
    ldv = ldh;
  }
  tile_gemm(nq, hd, nk, t.St, 1, kTile, vj, ldv, t.O, ldh, true, nullptr,
            partial ? query_rows : nullptr);
}

// Query rows [i0, i0 + nq) of head h in sequence b: the online-softmax pass over key tiles.
void forward_tile(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                  const KvRows& kv, float* o, float* lse, float* scratch) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;
  const ForwardTileScratch t(scratch, hd);
  float *Qt = t.Qt, *O = t.O, *m2 = t.m2, *l = t.l;

  transpose(q + (b * Tq + i0) * s.q_stride + static_cast<long>(h) * hd, s.q_stride, nq, hd, Qt,
            kTile);
  std::memset(O, 0, sizeof(float) * nq * ldh);
  // The output rows are written at the end; fetch them (into L2) while the tile computes.
  for (int i = 0; i < nq; ++i)
    for (int d = 0; d < hd; d += 16)
      __builtin_prefetch(o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd + d, 1, 2);
  std::fill(m2, m2 + kTile, kNegInf);
  std::fill(l, l + kTile, 0.0f);

  uint64_t key_rows[kTile];    // per key row of the tile: the queries it may serve
  uint64_t query_rows[kTile];  // per query row: the keys it may attend
  const int64_t qp0 = static_cast<int64_t>(s.q_offset) + i0;
  int64_t kb, ke;
  s.mask.key_bounds(qp0, qp0 + nq, Tk, &kb, &ke);
  for (int64_t j0 = std::max<int64_t>(kb, 0); j0 < ke; j0 += kTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kTile, ke - j0));
    const auto cover = s.mask.cover(qp0, qp0 + nq, j0, j0 + nk);
    if (cover == AttentionMask::Cover::Empty) continue;
    const bool partial = cover == AttentionMask::Cover::Partial;
    if (partial) {
      for (int j = 0; j < nk; ++j) key_rows[j] = s.mask.query_bits(j0 + j, qp0, nq);
      for (int i = 0; i < nq; ++i) query_rows[i] = s.mask.key_bits(qp0 + i, j0, nk);
    } else {
      std::fill(key_rows, key_rows + nk, low_bits(nq));
    }
    forward_key_tile(nq, nk, hd, kv.k + (j0 - kv.first) * kv.stride,
                     kv.v + (j0 - kv.first) * kv.stride, kv.stride, kv.packed, partial, key_rows,
                     query_rows, c, t);
  }

  for (int i = 0; i < nq; ++i) {
    float* orow = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd;
    const float* acc = O + i * ldh;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    for (int d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
    lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + i] =
        l[i] > 0.0f ? (m2[i] + std::log2(l[i])) * kLn2 : kNegInf;
  }
}

// Up to this many query rows (decoding) take the row-at-a-time path below: a 64 x 64 tile
// with a handful of query lanes would spend most of its vector lanes on padding.
constexpr int kFewRows = 4;

// Scores of one query row against keys [0, n) of kg (n <= 16): out[j] = q . k_j where bit j
// of `allowed` is set, else -inf. Returns max_j out[j].
float row_scores16(const float* qrow, const float* kg, long stride, int n, int hd, uint32_t allowed,
                   float* out) {
#if CHAINLM_ATTENTION_AVX512
  __m512 acc[16];
#pragma GCC unroll 16
  for (int j = 0; j < 16; ++j) {
    acc[j] = _mm512_setzero_ps();
    prefetch_row(kg + (16 + j) * stride, hd, 0);  // the next call's keys
  }
  for (int d = 0; d < hd; d += 16) {
    const __mmask16 m = static_cast<__mmask16>(hd - d >= 16 ? 0xFFFF : (1u << (hd - d)) - 1);
    const __m512 qv = _mm512_maskz_loadu_ps(m, qrow + d);
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j)
      if (j < n)
        acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, kg + j * stride + d), acc[j]);
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
  const __mmask16 m = static_cast<__mmask16>(allowed & ((1u << n) - 1));
  const __m512 sc = _mm512_mask_blend_ps(
      m, _mm512_set1_ps(kNegInf),
      _mm512_add_ps(_mm512_shuffle_f32x4(v01, v23, 0x88), _mm512_shuffle_f32x4(v01, v23, 0xDD)));
  _mm512_storeu_ps(out, sc);
  return _mm512_reduce_max_ps(sc);
#else
  float mx = kNegInf;
  for (int j = 0; j < 16; ++j) {
    out[j] = j < n && ((allowed >> j) & 1) ? dot(qrow, kg + j * stride, hd) : kNegInf;
    mx = std::max(mx, out[j]);
  }
  return mx;
#endif
}

// p_j = exp2(c*s_j - m2) in place (s_j = -inf gives 0); returns sum_j p_j.
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

// out[0..hd) = sum_j p[j] * v_j over rows v_j = vg + j*stride, j < n.
void row_weighted_sum(const float* p, long n, const float* vg, long stride, int hd, float* out) {
#if CHAINLM_ATTENTION_AVX512
  for (int d0 = 0; d0 < hd; d0 += 64) {
    const int nv = (std::min(64, hd - d0) + 15) / 16;
    const int rem = std::min(64, hd - d0) - 16 * (nv - 1);
    const __mmask16 last = static_cast<__mmask16>(rem == 16 ? 0xFFFF : (1u << rem) - 1);
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    for (long j = 0; j < n; ++j) {
      if (p[j] == 0.0f) continue;
      const __m512 pj = _mm512_set1_ps(p[j]);
      const float* vrow = vg + j * stride + d0;
      prefetch_row(vrow + kPrefetchRows * stride, std::min(64, hd - d0), 0);
#pragma GCC unroll 4
      for (int x = 0; x < 4; ++x)
        if (x < nv)
          acc[x] = _mm512_fmadd_ps(
              pj, _mm512_maskz_loadu_ps(x == nv - 1 ? last : 0xFFFF, vrow + 16 * x), acc[x]);
    }
#pragma GCC unroll 4
    for (int x = 0; x < 4; ++x)
      if (x < nv) _mm512_mask_storeu_ps(out + d0 + 16 * x, x == nv - 1 ? last : 0xFFFF, acc[x]);
  }
#else
  std::fill(out, out + hd, 0.0f);
  for (long j = 0; j < n; ++j)
    for (int d = 0; d < hd; ++d) out[d] += p[j] * vg[j * stride + d];
#endif
}

// Query rows [i0, i0 + nq) of head h, one at a time: all scores of the row, softmax, p.V.
void forward_rows(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                  const float* k, const float* v, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd), g = kv_head(s, h);
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;
  const float* kg = k + b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  const float* vg = v + b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  for (int i = 0; i < nq; ++i) {
    const int64_t qpos = static_cast<int64_t>(s.q_offset) + i0 + i;
    const float* qrow = q + (b * Tq + i0 + i) * s.q_stride + static_cast<long>(h) * hd;
    float* orow = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd;
    float& row_lse = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + i];
    int64_t kb, ke;
    s.mask.key_bounds(qpos, qpos + 1, Tk, &kb, &ke);
    kb = std::max<int64_t>(kb, 0);
    const long n = std::max<int64_t>(ke - kb, 0);
    float* acc = thread_scratch(ldh + round16(static_cast<int>(n)) + 16);  // ldh + scores
    float* sc = acc + ldh;

    float mx = kNegInf;
    for (long j0 = 0; j0 < n; j0 += 64) {
      const int nk = static_cast<int>(std::min<long>(64, n - j0));
      const auto cover = s.mask.cover(qpos, qpos + 1, kb + j0, kb + j0 + nk);
      const uint64_t bits = cover == AttentionMask::Cover::Full ? low_bits(nk)
                            : cover == AttentionMask::Cover::Empty
                                ? 0
                                : s.mask.key_bits(qpos, kb + j0, nk);
      for (int j = 0; j < nk; j += 16) {
        float* out = sc + j0 + j;
        const uint32_t allowed = static_cast<uint32_t>((bits >> j) & 0xFFFF);
        if (allowed == 0) {
          std::fill(out, out + 16, kNegInf);
          continue;
        }
        mx = std::max(mx, row_scores16(qrow, kg + (kb + j0 + j) * s.kv_stride, s.kv_stride,
                                       std::min(16, nk - j), hd, allowed, out));
      }
    }
    if (mx == kNegInf) {  // nothing to attend
      std::fill(orow, orow + hd, 0.0f);
      row_lse = kNegInf;
      continue;
    }
    const float m2 = mx * c;
    const float sum = row_probabilities(sc, n, c, m2);
    row_weighted_sum(sc, n, vg + kb * s.kv_stride, s.kv_stride, hd, acc);
    const float inv = 1.0f / sum;
    for (int d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
    row_lse = (m2 + std::log2(sum)) * kLn2;
  }
}

// One work item: query tiles t0, t0 + step, ... of head h in sequence b. An item with
// several tiles first packs the key/value rows they need into contiguous scratch.
void forward_item(const AttentionShape& s, int b, int h, int t0, int step, const float* q,
                  const float* k, const float* v, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd), g = kv_head(s, h);
  const long Tk = s.kv_len;
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  const size_t tile_floats = forward_tile_floats(hd);
  const float* kg = k + b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  const float* vg = v + b * Tk * s.kv_stride + static_cast<long>(g) * hd;

  if (q_tiles - t0 <= step && s.q_len - t0 * kTile <= kFewRows) {
    forward_rows(s, b, h, t0 * kTile, s.q_len - t0 * kTile, q, k, v, o, lse);
    return;
  }
  KvRows kv{kg, vg, s.kv_stride, 0, false};
  float* scratch;
  if ((q_tiles - t0 + step - 1) / step > 1) {
    int64_t lo = Tk, hi = 0;
    for (int t = t0; t < q_tiles; t += step) {
      const int64_t qp0 = static_cast<int64_t>(s.q_offset) + t * kTile;
      int64_t kb, ke;
      s.mask.key_bounds(qp0, qp0 + std::min(kTile, s.q_len - t * kTile), Tk, &kb, &ke);
      lo = std::min(lo, std::max<int64_t>(kb, 0));
      hi = std::max(hi, ke);
    }
    const long rows = std::max<int64_t>(hi - lo, 0);
    scratch = thread_scratch(tile_floats + 2 * rows * ldh);
    float* kp = scratch + tile_floats;
    float* vp = kp + rows * ldh;
    pack(kg + lo * s.kv_stride, s.kv_stride, static_cast<int>(rows), hd, kp, ldh);
    pack(vg + lo * s.kv_stride, s.kv_stride, static_cast<int>(rows), hd, vp, ldh);
    kv = KvRows{kp, vp, ldh, static_cast<long>(lo), true};
  } else {
    scratch = thread_scratch(tile_floats);
  }
  for (int t = t0; t < q_tiles; t += step)
    forward_tile(s, b, h, t * kTile, std::min(kTile, s.q_len - t * kTile), q, kv, o, lse, scratch);
}

// ------------------------------------------------------------------------------------
// Backward
// ------------------------------------------------------------------------------------

size_t backward_scratch_floats(int hd, long q_len, long kv_len) {
  const size_t ldh = round16(hd);
  return ldh * (4 * kv_len + 3 * q_len) + static_cast<size_t>(kTile) * (2 * hd + 2 * kTile) +
         2 * static_cast<size_t>(round16(static_cast<int>(q_len)));
}

// One (query tile, key tile) pair of the backward, on packed rows of stride round16(hd):
//   P = exp2(c q.k - L2), dV += P^T dO, dS = scale P (dO V^T - D), dQ += dS K, dK += dS^T Q.
// Kt, Vt are the key tile's K and V transposed (hd x kTile); P, dS are kTile x kTile scratch.
// query_rows[i] are the keys query i may attend (all nk of them when !partial), key_rows[j]
// the queries key j serves (read only when partial).
void backward_tile_pair(int nq, int nk, int hd, const float* Qi, const float* dOi, const float* Kj,
                        const float* Kt, const float* Vt, float* dQi, float* dKj, float* dVj,
                        float* P, float* dS, bool partial, const uint64_t* query_rows,
                        const uint64_t* key_rows, float c, const float* L2i, const float* Di,
                        float scale) {
  const int ldh = round16(hd);
  const uint64_t* qtrim = partial ? query_rows : nullptr;
  const uint64_t* ktrim = partial ? key_rows : nullptr;
  tile_gemm(nq, nk, hd, Qi, ldh, 1, Kt, kTile, P, kTile, false, qtrim, nullptr);
  probabilities(P, nq, nk, query_rows, c, L2i);
  tile_gemm(nk, hd, nq, P, 1, kTile, dOi, ldh, dVj, ldh, true, nullptr, ktrim);
  tile_gemm(nq, nk, hd, dOi, ldh, 1, Vt, kTile, dS, kTile, false, qtrim, nullptr);
  softmax_grad(P, dS, nq, nk, query_rows, Di, scale);
  tile_gemm(nq, hd, nk, dS, kTile, 1, Kj, ldh, dQi, ldh, true, nullptr, qtrim);
  tile_gemm(nk, hd, nq, dS, 1, kTile, Qi, ldh, dKj, ldh, true, nullptr, ktrim);
}

// One work item: KV head g of sequence b, with the query heads heads[0..nh) that use it.
// Every operand is first packed into contiguous rows (strided rows a multiple of 4 KB
// apart alias in L1 and L2), gradients are accumulated in scratch and added once.
void backward_item(const AttentionShape& s, int b, int g, const int* heads, int nh, const float* q,
                   const float* k, const float* v, const float* o, const float* lse,
                   const float* dout, float* dq, float* dk, float* dv) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;

  float* Kf = thread_scratch(backward_scratch_floats(hd, Tq, Tk));  // Tk x ldh, K of head g
  float* Vf = Kf + Tk * ldh;                                        // Tk x ldh
  float* dKf = Vf + Tk * ldh;                                       // Tk x ldh
  float* dVf = dKf + Tk * ldh;                                      // Tk x ldh
  float* Qf = dVf + Tk * ldh;                                       // Tq x ldh, Q of head h
  float* dOf = Qf + Tq * ldh;                                       // Tq x ldh
  float* dQf = dOf + Tq * ldh;                                      // Tq x ldh
  float* Kt = dQf + Tq * ldh;                                       // hd x kTile
  float* Vt = Kt + static_cast<long>(hd) * kTile;                   // hd x kTile
  float* P = Vt + static_cast<long>(hd) * kTile;                    // kTile x kTile
  float* dS = P + kTile * kTile;                                    // kTile x kTile
  float* D = dS + kTile * kTile;                                    // Tq: dout . o per query row
  float* L2 = D + round16(static_cast<int>(Tq));                    // Tq: lse in log2 units

  const long kv0 = b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  pack(k + kv0, s.kv_stride, static_cast<int>(Tk), hd, Kf, ldh);
  pack(v + kv0, s.kv_stride, static_cast<int>(Tk), hd, Vf, ldh);
  std::memset(dKf, 0, sizeof(float) * Tk * ldh);
  std::memset(dVf, 0, sizeof(float) * Tk * ldh);

  uint64_t key_rows[kTile], query_rows[kTile];
  for (int x = 0; x < nh; ++x) {
    const int h = heads[x];
    const long q0 = b * Tq * s.q_stride + static_cast<long>(h) * hd;
    const long o0 = b * Tq * s.o_stride + static_cast<long>(h) * hd;
    pack(q + q0, s.q_stride, static_cast<int>(Tq), hd, Qf, ldh);
    pack(dout + o0, s.o_stride, static_cast<int>(Tq), hd, dOf, ldh);
    std::memset(dQf, 0, sizeof(float) * Tq * ldh);
    for (long i = 0; i < Tq; ++i) {
      prefetch_row(o + o0 + (i + kPrefetchRows) * s.o_stride, hd, 0);
      D[i] = dot(o + o0 + i * s.o_stride, dOf + i * ldh, hd);
      const float li = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i];
      // A row that attends nothing has every entry masked; +inf keeps exp2 NaN-free.
      L2[i] = li == kNegInf ? std::numeric_limits<float>::infinity() : li * kLog2e;
    }

    for (long j0 = 0; j0 < Tk; j0 += kTile) {
      const int nk = static_cast<int>(std::min<long>(kTile, Tk - j0));
      int64_t qb, qe;
      s.mask.query_bounds(j0, j0 + nk, &qb, &qe);
      // Query rows [ib, ie) may attend this key tile (qb, qe may be +-"infinite").
      const long ib = qb <= s.q_offset ? 0 : std::min<int64_t>(qb - s.q_offset, Tq);
      const long ie = qe >= s.q_offset + Tq ? Tq : std::max<int64_t>(qe - s.q_offset, 0);
      if (ib >= ie) continue;
      const float* Kj = Kf + j0 * ldh;
      float* dKj = dKf + j0 * ldh;
      float* dVj = dVf + j0 * ldh;
      transpose(Kj, ldh, nk, hd, Kt, kTile);
      transpose(Vf + j0 * ldh, ldh, nk, hd, Vt, kTile);

      for (long i0 = ib; i0 < ie; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, ie - i0));
        const int64_t qp0 = static_cast<int64_t>(s.q_offset) + i0;
        const auto cover = s.mask.cover(qp0, qp0 + nq, j0, j0 + nk);
        if (cover == AttentionMask::Cover::Empty) continue;
        const bool partial = cover == AttentionMask::Cover::Partial;
        if (partial) {
          for (int i = 0; i < nq; ++i) query_rows[i] = s.mask.key_bits(qp0 + i, j0, nk);
          for (int j = 0; j < nk; ++j) key_rows[j] = s.mask.query_bits(j0 + j, qp0, nq);
        } else {
          std::fill(query_rows, query_rows + nq, low_bits(nk));
        }
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kj, Kt, Vt, dQf + i0 * ldh,
                           dKj, dVj, P, dS, partial, query_rows, key_rows, c, L2 + i0, D + i0,
                           s.scale);
      }
    }
    add_rows(dq + q0, s.q_stride, dQf, ldh, Tq, hd);
  }
  add_rows(dk + kv0, s.kv_stride, dKf, ldh, Tk, hd);
  add_rows(dv + kv0, s.kv_stride, dVf, ldh, Tk, hd);
}

// ------------------------------------------------------------------------------------
// PHD masks (SPEC B2) on compact key views
// ------------------------------------------------------------------------------------
//
// Over the repeated stream a PHD query (copy j of position n) attends the originals of
// positions [0, n] and, when j >= 1, the hidden-stream tokens [lo, h(n, j)]
// (AttentionMask::phd_hidden_interval). With the originals laid out compactly in position
// order and the hidden tokens in hidden-stream order, both are contiguous key ranges, and
// along the query rows both ends never decrease. So a query tile visits only the key tiles
// that hold keys it may attend: ~n/64 tiles of originals (what the ordinary causal model
// visits for its one row per position) plus one or two tiles of hidden keys around the
// window, never the (K*T)^2 plane; both ranges feed one online softmax. The backward walks
// the same two ranges from the key side.

// Query row i -> (position n, copy j): the originals of positions
// [first_position, first_position + orig_rows), one row each, then stream rows row_base, ...
// (row r = copy r % K of position r / K).
struct PhdQueryMap {
  int64_t K = 2, orig_rows = 0, first_position = 0, row_base = 0;
  void at(int64_t i, int64_t* n, int64_t* j) const {
    if (i < orig_rows) {
      *n = first_position + i;
      *j = 0;
      return;
    }
    const int64_t r = row_base + (i - orig_rows);
    *n = r / K;
    *j = r % K;
  }
};

// The keys of one query row: originals [0, oend), hidden tokens [hlo, hhi) if `hidden`. An
// original row carries the hidden range start of the next copy (and an end at its position's
// first hidden token), so that hlo and hhi never decrease along the rows; its bits are empty.
struct PhdRowKeys {
  int64_t oend, hlo, hhi;
  bool hidden;
};

void phd_row_keys(const AttentionMask& mask, const PhdQueryMap& map, int64_t rows, int64_t n_orig,
                  int64_t h_first, int64_t h_end, PhdRowKeys* out) {
  for (int64_t i = 0; i < rows; ++i) {
    int64_t n, j;
    map.at(i, &n, &j);
    PhdRowKeys& r = out[i];
    r.oend = std::min(n + 1, n_orig);
    r.hidden = j >= 1;
    mask.phd_hidden_interval(n, std::max<int64_t>(j, 1), &r.hlo, &r.hhi);
    if (!r.hidden) r.hhi = n * (map.K - 1);
    r.hlo = std::clamp(r.hlo, h_first, h_end);
    r.hhi = std::clamp(r.hhi, h_first, h_end);
  }
}

// Bits of keys [k0, k0 + nk) a row may attend.
inline uint64_t phd_orig_bits(const PhdRowKeys& r, int64_t k0, int nk) {
  return low_bits(r.oend - k0) & low_bits(nk);
}
inline uint64_t phd_hidden_bits(const PhdRowKeys& r, int64_t k0, int nk) {
  return r.hidden ? low_bits(r.hhi - k0) & ~low_bits(r.hlo - k0) & low_bits(nk) : 0;
}

// cols[j] bit i = rows[i] bit j, for i < nrows (the rest read as 0) and j < ncols.
void transpose_bits(const uint64_t* rows, int nrows, uint64_t* cols, int ncols) {
  uint64_t a[64];
  for (int i = 0; i < 64; ++i) a[i] = i < nrows ? rows[i] : 0;
  // Recursive block transpose: swap the off-diagonal 32x32 blocks, then 16x16, ...
  uint64_t m = 0x00000000FFFFFFFFull;
  for (int j = 32; j != 0; j >>= 1, m ^= m << j)
    for (int k = 0; k < 64; k = ((k | j) + 1) & ~j) {
      const uint64_t t = ((a[k] >> j) ^ a[k | j]) & m;
      a[k] ^= t << j;
      a[k | j] ^= t;
    }
  std::copy(a, a + ncols, cols);
}

// Where the K/V rows of one (sequence, KV head) live, before packing. The original of
// position m is at k + m*o_stride. Hidden token h is at hk + hidden_row(h)*h_stride: in the
// repeated stream (interleaved) at row h + h/(K-1) + 1, else at row h - h_first.
struct PhdKeySource {
  const float *k, *v;
  long o_stride;
  const float *hk, *hv;
  long h_stride;
  int64_t n_orig, h_first, h_end, K;
  bool interleaved;
  long hidden_row(int64_t h) const {
    return static_cast<long>(interleaved ? h + h / (K - 1) + 1 : h - h_first);
  }
  // Copies rows of hidden tokens [h0, h1) of x (hk or hv) to dst (rows ld apart).
  void pack_hidden(const float* x, int64_t h0, int64_t h1, int hd, float* dst, int ld) const {
    for (int64_t h = h0; h < h1;) {
      // A run of consecutive rows: up to the end of a position's copies when interleaved.
      const int64_t run = interleaved ? std::min(h1 - h, (K - 1) - h % (K - 1)) : h1 - h;
      pack(x + hidden_row(h) * h_stride, h_stride, static_cast<int>(run), hd,
           dst + (h - h0) * ld, ld);
      h += run;
    }
  }
  // dst rows of hidden tokens [h0, h1) += src rows (ld apart).
  void add_hidden(float* x, int64_t h0, int64_t h1, int hd, const float* src, int ld) const {
    for (int64_t h = h0; h < h1;) {
      const int64_t run = interleaved ? std::min(h1 - h, (K - 1) - h % (K - 1)) : h1 - h;
      add_rows(x + hidden_row(h) * h_stride, h_stride, src + (h - h0) * ld, ld, run, hd);
      h += run;
    }
  }
};

// Rows of the two packed key ranges: originals [0, n_orig), hidden tokens [h_first, h_end).
struct PhdPacked {
  const float *ko, *vo, *kh, *vh;
  int64_t h_first;
};

// One query tile [i0, i0 + nq) of head h (rk = the tile's row keys) over the packed keys.
void phd_forward_tile(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                      const PhdRowKeys* rk, const PhdPacked& kv, float* o, float* lse,
                      float* scratch) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len;
  const float c = s.scale * kLog2e;
  const ForwardTileScratch t(scratch, hd);
  transpose(q + (b * Tq + i0) * s.q_stride + static_cast<long>(h) * hd, s.q_stride, nq, hd, t.Qt,
            kTile);
  std::memset(t.O, 0, sizeof(float) * nq * ldh);
  std::fill(t.m2, t.m2 + kTile, kNegInf);
  std::fill(t.l, t.l + kTile, 0.0f);

  uint64_t key_rows[kTile], query_rows[kTile];
  // Originals: every row attends [0, oend), oend non-decreasing, so only the tiles past the
  // first row's end are partial.
  for (int64_t j0 = 0; j0 < rk[nq - 1].oend; j0 += kTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kTile, rk[nq - 1].oend - j0));
    const bool partial = rk[0].oend < j0 + nk;
    if (partial) {
      for (int i = 0; i < nq; ++i) query_rows[i] = phd_orig_bits(rk[i], j0, nk);
      transpose_bits(query_rows, nq, key_rows, nk);
    } else {
      std::fill(key_rows, key_rows + nk, low_bits(nq));
    }
    forward_key_tile(nq, nk, hd, kv.ko + j0 * ldh, kv.vo + j0 * ldh, ldh, true, partial, key_rows,
                     query_rows, c, t);
  }
  // Hidden tokens: the band [rk[0].hlo, rk[nq-1].hhi), one or two tiles.
  for (int64_t j0 = rk[0].hlo; j0 < rk[nq - 1].hhi; j0 += kTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kTile, rk[nq - 1].hhi - j0));
    uint64_t any = 0;
    for (int i = 0; i < nq; ++i) any |= query_rows[i] = phd_hidden_bits(rk[i], j0, nk);
    if (!any) continue;
    transpose_bits(query_rows, nq, key_rows, nk);
    forward_key_tile(nq, nk, hd, kv.kh + (j0 - kv.h_first) * ldh, kv.vh + (j0 - kv.h_first) * ldh,
                     ldh, true, true, key_rows, query_rows, c, t);
  }

  for (int i = 0; i < nq; ++i) {
    float* orow = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd;
    const float* acc = t.O + i * ldh;
    const float inv = t.l[i] > 0.0f ? 1.0f / t.l[i] : 0.0f;
    for (int d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
    lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + i] =
        t.l[i] > 0.0f ? (t.m2[i] + std::log2(t.l[i])) * kLn2 : kNegInf;
  }
}

// Up to this many query rows (decoding: the K copies of one position) go row by row.
constexpr int kPhdFewRows = 8;

// Query rows [i0, i0 + nq) of head h one at a time, reading the key rows in place.
void phd_forward_rows(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                      const PhdRowKeys* rk, const PhdKeySource& src, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len;
  const float c = s.scale * kLog2e;
  for (int i = 0; i < nq; ++i) {
    const PhdRowKeys& r = rk[i];
    const float* qrow = q + (b * Tq + i0 + i) * s.q_stride + static_cast<long>(h) * hd;
    float* orow = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd;
    float& row_lse = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + i];
    const long no = r.oend, nh = r.hidden ? r.hhi - r.hlo : 0;
    float* acc = thread_scratch(2 * ldh + round16(static_cast<int>(no + nh)) + 16);
    float* acc_h = acc + ldh;
    float* sc = acc_h + ldh;  // scores: originals, then hidden tokens
    float mx = kNegInf;
    for (long j = 0; j < no; j += 16) {
      const int nk = static_cast<int>(std::min<long>(16, no - j));
      mx = std::max(mx, row_scores16(qrow, src.k + j * src.o_stride, src.o_stride, nk, hd,
                                     static_cast<uint32_t>(low_bits(nk)), sc + j));
    }
    for (long j = 0; j < nh; ++j) {
      sc[no + j] = dot(qrow, src.hk + src.hidden_row(r.hlo + j) * src.h_stride, hd);
      mx = std::max(mx, sc[no + j]);
    }
    if (mx == kNegInf) {
      std::fill(orow, orow + hd, 0.0f);
      row_lse = kNegInf;
      continue;
    }
    const float m2 = mx * c;
    const float sum = row_probabilities(sc, no + nh, c, m2);
    row_weighted_sum(sc, no, src.v, src.o_stride, hd, acc);
    std::fill(acc_h, acc_h + hd, 0.0f);
    for (long j = 0; j < nh; ++j) {
      const float p = sc[no + j];
      const float* vrow = src.hv + src.hidden_row(r.hlo + j) * src.h_stride;
      for (int d = 0; d < hd; ++d) acc_h[d] += p * vrow[d];
    }
    const float inv = 1.0f / sum;
    for (int d = 0; d < hd; ++d) orow[d] = (acc[d] + acc_h[d]) * inv;
    row_lse = (m2 + std::log2(sum)) * kLn2;
  }
}

// One work item: query tiles t0, t0 + step, ... of head h in sequence b; rk holds the row keys
// of all Tq rows. The key rows the tiles need are packed into contiguous scratch first.
void phd_forward_item(const AttentionShape& s, int b, int h, int t0, int step, const float* q,
                      const PhdRowKeys* rk, const PhdKeySource& src, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd);
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  if (q_tiles - t0 <= step && s.q_len - t0 * kTile <= kPhdFewRows) {
    phd_forward_rows(s, b, h, t0 * kTile, s.q_len - t0 * kTile, q, rk + t0 * kTile, src, o, lse);
    return;
  }
  int64_t oe = 0, hl = src.h_end, he = src.h_first;
  for (int t = t0; t < q_tiles; t += step) {
    const int last = std::min(s.q_len, (t + 1) * kTile) - 1;
    oe = std::max(oe, rk[last].oend);
    hl = std::min(hl, rk[t * kTile].hlo);
    he = std::max(he, rk[last].hhi);
  }
  he = std::max(he, hl);
  const size_t tile_floats = forward_tile_floats(hd);
  float* scratch = thread_scratch(tile_floats + 2 * static_cast<size_t>(oe + he - hl) * ldh);
  float* ko = scratch + tile_floats;
  float* vo = ko + oe * ldh;
  float* kh = vo + oe * ldh;
  float* vh = kh + (he - hl) * ldh;
  pack(src.k, src.o_stride, static_cast<int>(oe), hd, ko, ldh);
  pack(src.v, src.o_stride, static_cast<int>(oe), hd, vo, ldh);
  src.pack_hidden(src.hk, hl, he, hd, kh, ldh);
  src.pack_hidden(src.hv, hl, he, hd, vh, ldh);
  const PhdPacked kv{ko, vo, kh, vh, hl};
  for (int t = t0; t < q_tiles; t += step) {
    const int nq = std::min(kTile, s.q_len - t * kTile);
    phd_forward_tile(s, b, h, t * kTile, nq, q, rk + t * kTile, kv, o, lse, scratch);
  }
}

// The forward over (sequence, head) items; src_of(b, h) gives the head's key rows.
template <typename SourceOf>
void phd_forward(const AttentionShape& s, const PhdRowKeys* rk, const SourceOf& src_of,
                 const float* q, float* o, float* lse) {
  const long bh = static_cast<long>(s.batch) * s.n_heads;
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  if (bh == 0 || q_tiles == 0) return;
  const long want = 2L * omp_get_max_threads();
  const int chunks = static_cast<int>(std::clamp<long>((want + bh - 1) / bh, 1, q_tiles));
  const long items = bh * chunks;
#pragma omp parallel for schedule(dynamic, 1)
  for (long item = 0; item < items; ++item) {
    const int chunk = static_cast<int>(item / bh);
    const int b = static_cast<int>(item % bh / s.n_heads);
    const int h = static_cast<int>(item % s.n_heads);
    phd_forward_item(s, b, h, chunk, chunks, q, rk, src_of(b, h), o, lse);
  }
}

// The repeated stream's key rows of sequence b, KV head g.
PhdKeySource interleaved_source(const AttentionShape& s, const float* k, const float* v, int b,
                                int g) {
  const int64_t K = s.mask.repeat, Tk = s.kv_len, n_orig = (Tk + K - 1) / K;
  const long base = b * Tk * s.kv_stride + static_cast<long>(g) * s.head_dim;
  return PhdKeySource{k + base,          v + base, K * s.kv_stride, k + base, v + base,
                      s.kv_stride,       n_orig,   0,               Tk - n_orig, K,
                      true};
}

// Row keys of every query row, in a per-thread buffer that only grows.
PhdRowKeys* phd_rows_buffer(size_t n) {
  thread_local std::vector<PhdRowKeys> rows;
  if (rows.size() < n) rows.resize(n);
  return rows.data();
}

// Backward of the repeated stream for KV head g of sequence b (see backward_item): K, V are
// packed compactly, originals first (rows [0, n_orig)), then the hidden stream.
void phd_backward_item(const AttentionShape& s, int b, int g, const int* heads, int nh,
                       const PhdRowKeys* rk, const float* q, const float* k, const float* v,
                       const float* o, const float* lse, const float* dout, float* dq, float* dk,
                       float* dv) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;
  const PhdKeySource src = interleaved_source(s, k, v, b, g);
  const int64_t n_orig = src.n_orig, n_hid = src.h_end;

  float* Kf = thread_scratch(backward_scratch_floats(hd, Tq, Tk));
  float* Vf = Kf + Tk * ldh;
  float* dKf = Vf + Tk * ldh;
  float* dVf = dKf + Tk * ldh;
  float* Qf = dVf + Tk * ldh;
  float* dOf = Qf + Tq * ldh;
  float* dQf = dOf + Tq * ldh;
  float* Kt = dQf + Tq * ldh;
  float* Vt = Kt + static_cast<long>(hd) * kTile;
  float* P = Vt + static_cast<long>(hd) * kTile;
  float* dS = P + kTile * kTile;
  float* D = dS + kTile * kTile;
  float* L2 = D + round16(static_cast<int>(Tq));

  pack(src.k, src.o_stride, static_cast<int>(n_orig), hd, Kf, ldh);
  pack(src.v, src.o_stride, static_cast<int>(n_orig), hd, Vf, ldh);
  src.pack_hidden(src.hk, 0, n_hid, hd, Kf + n_orig * ldh, ldh);
  src.pack_hidden(src.hv, 0, n_hid, hd, Vf + n_orig * ldh, ldh);
  std::memset(dKf, 0, sizeof(float) * Tk * ldh);
  std::memset(dVf, 0, sizeof(float) * Tk * ldh);

  uint64_t key_rows[kTile], query_rows[kTile];
  for (int x = 0; x < nh; ++x) {
    const int h = heads[x];
    const long q0 = b * Tq * s.q_stride + static_cast<long>(h) * hd;
    const long o0 = b * Tq * s.o_stride + static_cast<long>(h) * hd;
    pack(q + q0, s.q_stride, static_cast<int>(Tq), hd, Qf, ldh);
    pack(dout + o0, s.o_stride, static_cast<int>(Tq), hd, dOf, ldh);
    std::memset(dQf, 0, sizeof(float) * Tq * ldh);
    for (long i = 0; i < Tq; ++i) {
      D[i] = dot(o + o0 + i * s.o_stride, dOf + i * ldh, hd);
      const float li = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i];
      L2[i] = li == kNegInf ? std::numeric_limits<float>::infinity() : li * kLog2e;
    }
    // Originals: the rows from the first whose oend passes the tile attend it.
    for (int64_t j0 = 0; j0 < n_orig; j0 += kTile) {
      const int nk = static_cast<int>(std::min<int64_t>(kTile, n_orig - j0));
      const long ib =
          std::partition_point(rk, rk + Tq, [&](const PhdRowKeys& r) { return r.oend <= j0; }) - rk;
      if (ib >= Tq) continue;
      transpose(Kf + j0 * ldh, ldh, nk, hd, Kt, kTile);
      transpose(Vf + j0 * ldh, ldh, nk, hd, Vt, kTile);
      for (long i0 = ib; i0 < Tq; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, Tq - i0));
        const bool partial = rk[i0].oend < j0 + nk;
        if (partial) {
          for (int i = 0; i < nq; ++i) query_rows[i] = phd_orig_bits(rk[i0 + i], j0, nk);
          transpose_bits(query_rows, nq, key_rows, nk);
        } else {
          std::fill(query_rows, query_rows + nq, low_bits(nk));
        }
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kf + j0 * ldh, Kt, Vt,
                           dQf + i0 * ldh, dKf + j0 * ldh, dVf + j0 * ldh, P, dS, partial,
                           query_rows, key_rows, c, L2 + i0, D + i0, s.scale);
      }
    }
    // Hidden tokens: the rows whose band [hlo, hhi) meets the tile.
    for (int64_t j0 = 0; j0 < n_hid; j0 += kTile) {
      const int nk = static_cast<int>(std::min<int64_t>(kTile, n_hid - j0));
      const long ib =
          std::partition_point(rk, rk + Tq, [&](const PhdRowKeys& r) { return r.hhi <= j0; }) - rk;
      const long ie = std::partition_point(rk + ib, rk + Tq,
                                           [&](const PhdRowKeys& r) { return r.hlo < j0 + nk; }) -
                      rk;
      if (ib >= ie) continue;
      const long kj = n_orig + j0;
      transpose(Kf + kj * ldh, ldh, nk, hd, Kt, kTile);
      transpose(Vf + kj * ldh, ldh, nk, hd, Vt, kTile);
      for (long i0 = ib; i0 < ie; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, ie - i0));
        uint64_t any = 0;
        for (int i = 0; i < nq; ++i) any |= query_rows[i] = phd_hidden_bits(rk[i0 + i], j0, nk);
        if (!any) continue;
        transpose_bits(query_rows, nq, key_rows, nk);
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kf + kj * ldh, Kt, Vt,
                           dQf + i0 * ldh, dKf + kj * ldh, dVf + kj * ldh, P, dS, true, query_rows,
                           key_rows, c, L2 + i0, D + i0, s.scale);
      }
    }
    add_rows(dq + q0, s.q_stride, dQf, ldh, Tq, hd);
  }
  const long kv0 = b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  add_rows(dk + kv0, src.o_stride, dKf, ldh, n_orig, hd);
  add_rows(dv + kv0, src.o_stride, dVf, ldh, n_orig, hd);
  src.add_hidden(dk + kv0, 0, n_hid, hd, dKf + n_orig * ldh, ldh);
  src.add_hidden(dv + kv0, 0, n_hid, hd, dVf + n_orig * ldh, ldh);
}

// Row keys of the repeated stream's query rows (q_offset + i).
PhdRowKeys* interleaved_row_keys(const AttentionShape& s) {
  const int64_t K = s.mask.repeat, n_orig = (static_cast<int64_t>(s.kv_len) + K - 1) / K;
  PhdRowKeys* rk = phd_rows_buffer(s.q_len);
  phd_row_keys(s.mask, PhdQueryMap{K, 0, 0, s.q_offset}, s.q_len, n_orig, 0, s.kv_len - n_orig, rk);
  return rk;
}

}  // namespace

void attention_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                       float* o, float* lse) {
  check_shape(s);
  if (s.mask.is_phd()) {
    if (s.batch == 0 || s.n_heads == 0 || s.q_len == 0) return;
    const PhdRowKeys* rk = interleaved_row_keys(s);
    phd_forward(s, rk, [&](int b, int h) { return interleaved_source(s, k, v, b, kv_head(s, h)); },
                q, o, lse);
    return;
  }
  const long bh = static_cast<long>(s.batch) * s.n_heads;
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  if (bh == 0 || q_tiles == 0) return;
  // One item per (sequence, head) so its KV rows are packed once, unless that leaves too
  // few items for the threads: then each head's query tiles are dealt round-robin (which
  // also balances the causal mask's growing per-tile cost).
  const long want = 2L * omp_get_max_threads();
  const int chunks = static_cast<int>(std::clamp<long>((want + bh - 1) / bh, 1, q_tiles));
  const long items = bh * chunks;
#pragma omp parallel for schedule(dynamic, 1)
  for (long item = 0; item < items; ++item) {
    const int chunk = static_cast<int>(item / bh);
    const int b = static_cast<int>(item % bh / s.n_heads);
    const int h = static_cast<int>(item % s.n_heads);
    forward_item(s, b, h, chunk, chunks, q, k, v, o, lse);
  }
}

void attention_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        const float* o, const float* lse, const float* dout, float* dq, float* dk,
                        float* dv) {
  check_shape(s);
  if (s.batch == 0 || s.q_len == 0 || s.kv_len == 0 || s.n_heads == 0) return;
  // Query heads grouped by KV head (kept across calls: no allocation once warm).
  thread_local std::vector<int> order, start;
  int groups = 0;
  for (int h = 0; h < s.n_heads; ++h) groups = std::max(groups, kv_head(s, h) + 1);
  start.assign(groups + 1, 0);
  for (int h = 0; h < s.n_heads; ++h) ++start[kv_head(s, h) + 1];
  for (int g = 0; g < groups; ++g) start[g + 1] += start[g];
  order.resize(s.n_heads);
  {
    thread_local std::vector<int> fill;
    fill.assign(start.begin(), start.end() - 1);
    for (int h = 0; h < s.n_heads; ++h) order[fill[kv_head(s, h)]++] = h;
  }
  const int* order_data = order.data();
  const int* start_data = start.data();
  const long items = static_cast<long>(s.batch) * groups;
  const PhdRowKeys* rk = s.mask.is_phd() ? interleaved_row_keys(s) : nullptr;
#pragma omp parallel for schedule(dynamic, 1)
  for (long item = 0; item < items; ++item) {
    const int b = static_cast<int>(item / groups), g = static_cast<int>(item % groups);
    const int nh = start_data[g + 1] - start_data[g];
    if (nh == 0) continue;
    if (rk)
      phd_backward_item(s, b, g, order_data + start_data[g], nh, rk, q, k, v, o, lse, dout, dq, dk,
                        dv);
    else
      backward_item(s, b, g, order_data + start_data[g], nh, q, k, v, o, lse, dout, dq, dk, dv);
  }
}

void phd_attention_forward(const AttentionShape& s, const PhdQueryRows& rows, const PhdKeys& keys,
                           const float* q, float* o, float* lse) {
  check_shape(s);
  CHAINLM_CHECK(s.mask.is_phd(), "phd_attention_forward: the mask must be a PHD kind");
  CHAINLM_CHECK(s.batch == 1, "phd_attention_forward: batch must be 1, got ", s.batch);
  CHAINLM_CHECK(rows.first_position >= 0 && rows.hidden_from >= rows.first_position,
                "phd_attention_forward: need 0 <= first_position (", rows.first_position,
                ") <= hidden_from (", rows.hidden_from, ")");
  CHAINLM_CHECK(keys.orig_len >= 0 && keys.hidden_first >= 0 && keys.hidden_len >= 0,
                "phd_attention_forward: negative key range");
  if (s.n_heads == 0 || s.q_len == 0) return;
  const int64_t K = s.mask.repeat, orig_rows = rows.hidden_from - rows.first_position;
  CHAINLM_CHECK(s.q_len >= orig_rows && (s.q_len - orig_rows) % K == 0,
                "phd_attention_forward: ", s.q_len, " query rows are not ", orig_rows,
                " originals plus whole positions of ", K, " copies");
  const int64_t last = orig_rows == s.q_len ? rows.hidden_from - 1
                                            : rows.hidden_from + (s.q_len - orig_rows) / K - 1;
  CHAINLM_CHECK(last < keys.orig_len, "phd_attention_forward: queries reach position ", last,
                " but only ", keys.orig_len, " originals are given (a query attends its own)");
  PhdRowKeys* rk = phd_rows_buffer(s.q_len);
  phd_row_keys(s.mask, PhdQueryMap{K, orig_rows, rows.first_position, rows.hidden_from * K},
               s.q_len, keys.orig_len, keys.hidden_first, keys.hidden_first + keys.hidden_len, rk);
  phd_forward(
      s, rk,
      [&](int, int h) {
        const long g = static_cast<long>(kv_head(s, h)) * s.head_dim;
        return PhdKeySource{keys.orig_k + g,    keys.orig_v + g,
                            s.kv_stride,        keys.hid_k ? keys.hid_k + g : nullptr,
                            keys.hid_v ? keys.hid_v + g : nullptr,
                            s.kv_stride,        keys.orig_len,
                            keys.hidden_first,  keys.hidden_first + keys.hidden_len,
                            K,                  false};
      },
      q, o, lse);
}

}  // namespace chainlm
