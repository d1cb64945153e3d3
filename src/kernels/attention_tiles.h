#pragma once
// What the attention passes (attention_dense.cpp, attention_phd.cpp) are built from; internal
// to the kernels. Three levels:
// - tile primitives (attention_tiles.cpp): packing, the register-blocked tile matmul with its
//   portable fallback, and the online-softmax updates of one 64 x 64 tile;
// - row primitives (attention_rows.cpp): the same for a handful of query rows (decoding);
// - steps (attention_steps.cpp): one key tile of the forward, one (query tile, key tile) pair
//   of the backward, and the per-head set-up and write-back around them.
// Tiles are kTile x kTile; "packed" rows are round16(hd) floats apart. Scores are kept in log2
// units (scaled by c = scale * log2(e)) so the softmax uses exp2.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "kernels/attention.h"

// The AVX-512 paths (register-blocked micro-kernels, vector exp2) where the build targets
// AVX-512; AVX2 paths for the decode rows (attention_rows.cpp) where it targets AVX2 only;
// portable loops otherwise, or everywhere with CHAINLM_ATTENTION_SCALAR defined.
#if defined(__AVX512F__) && !defined(CHAINLM_ATTENTION_SCALAR)
#define CHAINLM_ATTENTION_AVX512 1
#include "kernels/simd.h"
#if defined(__AVX512BF16__)
#define CHAINLM_ATTENTION_BF16 1  // tile products with bf16 operands (tile_gemm_bf16)
#endif
#elif defined(__AVX2__) && defined(__FMA__) && !defined(CHAINLM_ATTENTION_SCALAR)
#define CHAINLM_ATTENTION_AVX2 1
#include "kernels/simd.h"
#endif

namespace chainlm::attn {

constexpr int kTile = 64;  // query and key tile size; the row masks are uint64_t
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// A per-thread buffer of at least n floats, 64-byte aligned, that only grows, so the hot path
// never allocates after warm-up. Each call may return the same buffer: one user at a time.
float* thread_scratch(size_t n);

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

#if CHAINLM_ATTENTION_AVX512
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

// A register block of the tile micro-kernels: C's MR x 16*NV values (the last vector limited to
// `last` lanes) into accumulators, or zeros; and back.
template <int MR, int NV>
inline void load_block(__m512 (&c)[MR][NV], const float* C, long ldc, __mmask16 last,
                       bool accumulate) {
#pragma GCC unroll 8
  for (int m = 0; m < MR; ++m)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v)
      c[m][v] = accumulate
                    ? _mm512_maskz_loadu_ps(v == NV - 1 ? last : 0xFFFF, C + m * ldc + 16 * v)
                    : _mm512_setzero_ps();
}
template <int MR, int NV>
inline void store_block(const __m512 (&c)[MR][NV], float* C, long ldc, __mmask16 last) {
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

// The table of a micro-kernel template's instances, table[MR - 1][NV - 1] = &kernel<MR, NV>.
#define CHAINLM_MICRO_ROW(kernel, MR) \
  { &kernel<MR, 1>, &kernel<MR, 2>, &kernel<MR, 3>, &kernel<MR, 4> }
#define CHAINLM_MICRO_TABLE(kernel)                                                              \
  {                                                                                              \
    CHAINLM_MICRO_ROW(kernel, 1), CHAINLM_MICRO_ROW(kernel, 2), CHAINLM_MICRO_ROW(kernel, 3),    \
        CHAINLM_MICRO_ROW(kernel, 4), CHAINLM_MICRO_ROW(kernel, 5), CHAINLM_MICRO_ROW(kernel, 6) \
  }

// The 16 lanes of vector v of a 64-bit row mask.
inline __mmask16 lane_mask(uint64_t bits, int v) {
  return static_cast<__mmask16>(bits >> (16 * v));
}
#endif

// ---- Tile primitives (attention_tiles.cpp) ----

// dst[r*ld + c] = src[r*stride + c] for r < rows, c < cols. Tiles are packed before they are
// reused as a matmul's B operand: rows a multiple of 4 KB apart alias to the same few L1
// sets, so a strided 64-row tile would not stay in L1.
void pack(const float* src, long stride, int rows, int cols, float* dst, int ld);
// dst[c*ld + r] = src[r*stride + c] for r < rows, c < cols (rows <= ld). With AVX-512, dst
// columns [rows, round16(rows)) may be written (with zeros) too.
void transpose(const float* src, long stride, int rows, int cols, float* dst, int ld);
// dst[r*stride + c] += src[r*ld + c] for r < rows, c < cols.
void add_rows(float* dst, long stride, const float* src, int ld, long rows, int cols);

// C (M x N) (+)= A (M x K) . B (K x N), with A(m, k) = A[m*sam + k*sak], B and C row-major.
// Optional per-row trimming (tile masks, so N <= 64 resp. K <= 64 when given): nbits[m] are
// the columns row m needs (the others may be left unwritten), kbits[m] the k where A(m, k)
// may be nonzero. Rows are trimmed in register blocks, by the union of their masks.
void tile_gemm(int M, int N, int K, const float* A, long sam, long sak, const float* B, long ldb,
               float* C, long ldc, bool accumulate, const uint64_t* nbits, const uint64_t* kbits);
// Rows per register block of tile_gemm: a matmul with at most this many rows of A reads its
// B operand once, so packing B first does not pay.
constexpr int kMR = 6;
// What register block rows [m0, m0 + mr) of a tile_gemm need, by the union of their masks:
// columns [n_begin, n_end) (n_begin rounded down to a vector) and k in [k_begin, k_end), both
// left whole where the masks are not given. False when the block has nothing to do (no column
// needed, or no k while accumulating; without accumulating an empty k range still writes zeros).
struct BlockRange {
  int n_begin, n_end, k_begin, k_end;
};
inline bool block_range(int m0, int mr, int N, int K, bool accumulate, const uint64_t* nbits,
                        const uint64_t* kbits, BlockRange* r) {
  *r = {0, N, 0, K};
  if (nbits) {
    uint64_t u = 0;
    for (int i = 0; i < mr; ++i) u |= nbits[m0 + i];
    if (u == 0) return false;
    r->n_begin = std::countr_zero(u) & ~15;
    r->n_end = 64 - std::countl_zero(u);
  }
  if (kbits) {
    uint64_t u = 0;
    for (int i = 0; i < mr; ++i) u |= kbits[m0 + i];
    if (u == 0) {
      r->k_begin = r->k_end = 0;
      return !accumulate;
    }
    r->k_begin = std::countr_zero(u);
    r->k_end = 64 - std::countl_zero(u);
  }
  return true;
}
#if CHAINLM_ATTENTION_BF16
// tile_gemm with A and B rounded to bf16 (nearest even) first, products accumulated in fp32
// (attention_tiles_bf16.cpp); same arguments and trimming.
void tile_gemm_bf16(int M, int N, int K, const float* A, long sam, long sak, const float* B,
                    long ldb, float* C, long ldc, bool accumulate, const uint64_t* nbits,
                    const uint64_t* kbits);
#endif
// tile_gemm_bf16 when bf16 is asked for and this build has it, else tile_gemm.
inline void tile_product(bool bf16, int M, int N, int K, const float* A, long sam, long sak,
                         const float* B, long ldb, float* C, long ldc, bool accumulate,
                         const uint64_t* nbits, const uint64_t* kbits) {
#if CHAINLM_ATTENTION_BF16
  if (bf16) return tile_gemm_bf16(M, N, K, A, sam, sak, B, ldb, C, ldc, accumulate, nbits, kbits);
#else
  (void)bf16;
#endif
  tile_gemm(M, N, K, A, sam, sak, B, ldb, C, ldc, accumulate, nbits, kbits);
}

// Forward online-softmax update for one tile. St is (nk keys) x (kTile query lanes) scores;
// bits[j] are the queries key row j may serve. Updates, per query lane i < nq, the running
// max m2 (log2 units, scaled scores), the sum l, writes the rescale factor alpha for the
// output accumulator, and overwrites St with the unnormalized probabilities. Returns
// whether any alpha differs from 1 (the running max moved).
bool softmax_update(float* St, int nk, int nq, const uint64_t* bits, float c, float* m2, float* l,
                    float* alpha);
// Backward: S (nq x kTile) scores -> P = exp2(c S - L2_i) where allowed (bits[i]), else 0.
void probabilities(float* S, int nq, int nk, const uint64_t* bits, float c, const float* L2);
// Backward: dP (nq x kTile) -> dS = scale * P * (dP - D_i) where allowed, else 0.
void softmax_grad(const float* P, float* dP, int nq, int nk, const uint64_t* bits, const float* D,
                  float scale);

// ---- Row primitives for a few query rows (attention_rows.cpp) ----

float dot(const float* a, const float* b, int n);
// Keys and values (T) are fp32, or IEEE halves (uint16_t, a 16-bit KV cache) widened as they
// are loaded, with the same results as their widened fp32 rows. stride counts elements.
// Scores of one query row against keys [0, n) of kg (n <= 16): out[j] = q . k_j where bit j
// of `allowed` is set, else -inf. Returns max_j out[j].
template <typename T>
float row_scores16(const float* qrow, const T* kg, long stride, int n, int hd, uint32_t allowed, float* out);
// p_j = exp2(c*s_j - m2) in place (s_j = -inf gives 0); returns sum_j p_j.
float row_probabilities(float* sc, long n, float c, float m2);
// out[0..hd) = sum_j p[j] * v_j over rows v_j = vg + j*stride, j < n.
template <typename T>
void row_weighted_sum(const float* p, long n, const T* vg, long stride, int hd, float* out);
// The same for nq query rows that attend the same keys (a PHD position's copies), each key and
// value row read once for all of them: every row's scores and sums come out bit for bit as the
// one-row functions give them (every key allowed; mx[r] is raised to row r's maximum). Up to
// four rows at once on AVX-512; elsewhere, and past four, row by row.
template <typename T>
void rows_scores16(const float* const* q, int nq, const T* kg, long stride, int n, int hd,
                   float* const* out, float* mx);
template <typename T>
void rows_weighted_sum(const float* const* p, int nq, long n, const T* vg, long stride, int hd,
                       float* const* out);

// ---- Steps of the passes (attention_steps.cpp) ----

// Floats of the scratch of one forward query tile.
size_t forward_tile_floats(int hd);

// Scratch of one forward query tile (forward_tile_floats): the transposed Q tile, the scores,
// the output accumulator, a V tile and the running softmax statistics.
struct ForwardTileScratch {
  float *Qt, *St, *O, *Vp, *m2, *l, *alpha;
  ForwardTileScratch(float* scratch, int hd);
};

// Starts query rows [i0, i0 + nq) of head h in sequence b: Q transposed into t.Qt, the output
// accumulator and the running statistics reset.
void begin_forward_tile(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                        float* o, const ForwardTileScratch& t);
// One key tile of the online softmax for nq query lanes: St = K_tile . Q_tile^T, update of the
// running statistics, O = alpha O + P V. key_rows[j] are the queries key j may serve (all of
// them when !partial), query_rows[i] the keys query i may attend (read only when partial).
// bf16: the two products with bf16 operands (tile_product).
void forward_key_tile(int nq, int nk, int hd, const float* kj, const float* vj, long stride,
                      bool packed, bool partial, const uint64_t* key_rows,
                      const uint64_t* query_rows, float c, const ForwardTileScratch& t, bool bf16);
// Ends the tile begun by begin_forward_tile: o = O / l and lse = m + log(l) (0 and -inf for a
// row that attended nothing).
void finish_forward_tile(const AttentionShape& s, int b, int h, int i0, int nq,
                         const ForwardTileScratch& t, float* o, float* lse);
// Scratch of one backward work item (one KV head of one sequence, Tq query and Tk key rows):
// the head's K, V and their gradients (cleared here), one query head's Q, dO and dQ (all
// packed), the key tile transposed, P and dS tiles, and per query row D and the lse in log2
// units.
struct BackwardScratch {
  float *Kf, *Vf, *dKf, *dVf, *Qf, *dOf, *dQf, *Kt, *Vt, *P, *dS, *D, *L2;
  BackwardScratch(int hd, long q_len, long kv_len);
};
// Per query head h of the item: Q and dO of sequence b packed, dQ cleared, D_i = dO_i . o_i and
// the lse in log2 units. Returns the offset of the head's first row in q (and dq).
long begin_backward_head(const AttentionShape& s, int b, int h, const float* q, const float* o,
                         const float* lse, const float* dout, const BackwardScratch& w);
// Runs walk(h) for each query head heads[0..nh) of a backward item, between the head's set-up
// (begin_backward_head) and adding its dQ into dq.
template <typename Walk>
void for_each_backward_head(const AttentionShape& s, int b, const int* heads, int nh,
                            const float* q, const float* o, const float* lse, const float* dout,
                            float* dq, const BackwardScratch& w, const Walk& walk) {
  for (int x = 0; x < nh; ++x) {
    const long q0 = begin_backward_head(s, b, heads[x], q, o, lse, dout, w);
    walk(heads[x]);
    add_rows(dq + q0, s.q_stride, w.dQf, round16(s.head_dim), s.q_len, s.head_dim);
  }
}
// One (query tile, key tile) pair of the backward, on packed rows of stride round16(hd):
//   P = exp2(c q.k - L2), dV += P^T dO, dS = scale P (dO V^T - D), dQ += dS K, dK += dS^T Q.
// Kt, Vt are the key tile's K and V transposed (hd x kTile); P, dS are kTile x kTile scratch.
// query_rows[i] are the keys query i may attend (all nk of them when !partial), key_rows[j]
// the queries key j serves (read only when partial). bf16: the five products with bf16
// operands (tile_product).
void backward_tile_pair(int nq, int nk, int hd, const float* Qi, const float* dOi, const float* Kj,
                        const float* Kt, const float* Vt, float* dQi, float* dKj, float* dVj,
                        float* P, float* dS, bool partial, const uint64_t* query_rows,
                        const uint64_t* key_rows, float c, const float* L2i, const float* Di,
                        float scale, bool bf16);

}  // namespace chainlm::attn
