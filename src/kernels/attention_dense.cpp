// The dense attention passes (attention_passes.h): the causal mask over q_offset + i, key j.
// - forward, per work item (sequence b, query head h, every step-th query tile from t0): pack
//   the head's K, V rows once when the item has several tiles, then per query tile and per key
//   tile the mask does not exclude: St = K_tile . Q_tile^T (keys x queries, so the softmax
//   statistics of the 64 queries are vertical vector ops), online softmax update of the
//   running max m, sum l and output accumulator O; finally o = O / l and lse = m + log(l).
//   Up to 4 query rows (decoding) go row by row instead.
// - backward, per work item (sequence b, KV head g): per query head h of g, per key tile, per
//   query tile:
//     P = exp(scale q.k - lse), dV += P^T dO, dP = dO V^T, dS = scale P (dP - D),
//     dQ += dS K, dK += dS^T Q        with D_i = dO_i . o_i precomputed per row,
//   all on packed copies, with dQ, dK, dV added into dq, dk, dv once at the end.
// Partial (diagonal) tiles carry 64-bit allowed-masks per row and column; the tile matmuls use
// them to skip the blocks that are masked out and the softmax zeroes them.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention_passes.h"
#include "kernels/attention_tiles.h"

namespace chainlm::attn {

namespace {

// Where a forward work item reads its KV head's rows: key row j is at k + (j - first)*stride.
struct KvRows {
  const float* k;
  const float* v;
  long stride;
  long first;
  bool packed;  // contiguous rows (no L1 set aliasing): usable directly as a matmul B operand
};

// How the tile of queries at positions [qp0, qp0 + nq) and keys [j0, j0 + nk) meets the mask,
// and unless it is Empty the allowed-masks of its rows: key_rows[j] the queries key j serves,
// query_rows[i] the keys query i may attend (all of them in a Full tile).
AttentionMask::Cover tile_masks(const AttentionMask& mask, int64_t qp0, int nq, int64_t j0, int nk,
                                uint64_t* key_rows, uint64_t* query_rows) {
  const auto cover = mask.cover(qp0, qp0 + nq, j0, j0 + nk);
  if (cover == AttentionMask::Cover::Partial) {
    for (int j = 0; j < nk; ++j) key_rows[j] = mask.query_bits(j0 + j, qp0, nq);
    for (int i = 0; i < nq; ++i) query_rows[i] = mask.key_bits(qp0 + i, j0, nk);
  } else if (cover == AttentionMask::Cover::Full) {
    std::fill(key_rows, key_rows + nk, low_bits(nq));
    std::fill(query_rows, query_rows + nq, low_bits(nk));
  }
  return cover;
}

// Query rows [i0, i0 + nq) of head h in sequence b: the online-softmax pass over key tiles.
void forward_tile(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                  const KvRows& kv, float* o, float* lse, float* scratch) {
  const int hd = s.head_dim;
  const long Tk = s.kv_len;
  const float c = s.scale * kLog2e;
  const ForwardTileScratch t(scratch, hd);
  begin_forward_tile(s, b, h, i0, nq, q, o, t);

  uint64_t key_rows[kTile];    // per key row of the tile: the queries it may serve
  uint64_t query_rows[kTile];  // per query row: the keys it may attend
  const int64_t qp0 = static_cast<int64_t>(s.q_offset) + i0;
  int64_t kb, ke;
  s.mask.key_bounds(qp0, qp0 + nq, Tk, &kb, &ke);
  for (int64_t j0 = std::max<int64_t>(kb, 0); j0 < ke; j0 += kTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kTile, ke - j0));
    const auto cover = tile_masks(s.mask, qp0, nq, j0, nk, key_rows, query_rows);
    if (cover == AttentionMask::Cover::Empty) continue;
    const bool partial = cover == AttentionMask::Cover::Partial;
    forward_key_tile(nq, nk, hd, kv.k + (j0 - kv.first) * kv.stride,
                     kv.v + (j0 - kv.first) * kv.stride, kv.stride, kv.packed, partial, key_rows,
                     query_rows, c, t, s.bf16_products);
  }

  finish_forward_tile(s, b, h, i0, nq, t, o, lse);
}

}  // namespace

// Query rows [i0, i0 + nq) of heads [h0, h1), one row at a time: all scores of the row,
// softmax, p.V. The keys go in blocks (16 for the scores, 64 for p.V), each block through every
// head before the next, so K and V are read once, in order, as rows of all their heads (a
// decoding step's cache read is a stream, not one strided pass per head; bench/RESULTS.md, "A
// 16-bit KV cache"). Consecutive query heads that share a KV head (GQA, CoLM-Air) go through
// the block together, up to four at a time, each key and value row loaded once for all of them
// (rows_scores16, rows_weighted_sum: the same bits as head by head). K and V are fp32 rows, or
// halves (a 16-bit KV cache) widened as they are read.
template <typename T>
void forward_rows(const AttentionShape& s, int b, int h0, int h1, int i0, int nq, const float* q, const T* k,
                  const T* v, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd), nh = h1 - h0;
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;
  const T* kb0 = k + b * Tk * s.kv_stride;
  const T* vb0 = v + b * Tk * s.kv_stride;
  auto kv_col = [&](int x) { return static_cast<long>(kv_head(s, h0 + x)) * hd; };
  // The heads in groups of at most kGroup consecutive ones with one KV head: group x0 has
  // group_size(x0) heads.
  constexpr int kGroup = 4;
  auto group_size = [&](int x0) {
    int g = 1;
    while (g < kGroup && x0 + g < nh && kv_head(s, h0 + x0 + g) == kv_head(s, h0 + x0)) ++g;
    return g;
  };
  for (int i = 0; i < nq; ++i) {
    const int64_t qpos = static_cast<int64_t>(s.q_offset) + i0 + i;
    int64_t kb, ke;
    s.mask.key_bounds(qpos, qpos + 1, Tk, &kb, &ke);
    kb = std::max<int64_t>(kb, 0);
    const long n = std::max<int64_t>(ke - kb, 0), ldn = round16(static_cast<int>(n)) + 64;
    // Per head: the scores (then probabilities) of the row, the output accumulator, the max
    // score and 1 / the sum of probabilities (0: the head attends nothing), and one block's p.V.
    float* sc = thread_scratch(static_cast<size_t>(nh) * (ldn + 2 * ldh + 2));
    float* acc = sc + nh * ldn;
    float* part = acc + nh * ldh;
    float* mx = part + nh * ldh;
    float* inv = mx + nh;
    std::fill(mx, mx + nh, kNegInf);
    const float* qh[kGroup];
    float* outs[kGroup];
    float* parts[kGroup];
    const float* probs[kGroup];
    const float* qrow0 = q + (b * Tq + i0 + i) * s.q_stride + static_cast<long>(h0) * hd;

    for (long j0 = 0; j0 < n; j0 += 64) {
      const int nk = static_cast<int>(std::min<long>(64, n - j0));
      const auto cover = s.mask.cover(qpos, qpos + 1, kb + j0, kb + j0 + nk);
      const uint64_t bits = cover == AttentionMask::Cover::Full ? low_bits(nk)
                            : cover == AttentionMask::Cover::Empty
                                ? 0
                                : s.mask.key_bits(qpos, kb + j0, nk);
      for (int j = 0; j < nk; j += 16) {
        const int m = std::min(16, nk - j);
        const uint32_t allowed = static_cast<uint32_t>((bits >> j) & 0xFFFF);
        const long row = kb + j0 + j;
        for (int x0 = 0, g; x0 < nh; x0 += g) {
          g = group_size(x0);
          if (allowed == 0) {
            for (int x = x0; x < x0 + g; ++x) std::fill(sc + x * ldn + j0 + j, sc + x * ldn + j0 + j + 16, kNegInf);
            continue;
          }
          const T* kg = kb0 + row * s.kv_stride + kv_col(x0);
          if (g > 1 && allowed == low_bits(m)) {  // every key of the block: the group together
            for (int x = 0; x < g; ++x) {
              qh[x] = qrow0 + static_cast<long>(x0 + x) * hd;
              outs[x] = sc + (x0 + x) * ldn + j0 + j;
            }
            rows_scores16(qh, g, kg, s.kv_stride, m, hd, outs, mx + x0);
            continue;
          }
          for (int x = x0; x < x0 + g; ++x)
            mx[x] = std::max(mx[x], row_scores16(qrow0 + static_cast<long>(x) * hd, kg, s.kv_stride, m, hd,
                                                 allowed, sc + x * ldn + j0 + j));
        }
      }
    }
    for (int x = 0; x < nh; ++x) {
      float* row_o = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h0 + x) * hd;
      float& row_lse = lse[(static_cast<long>(b) * s.n_heads + h0 + x) * Tq + i0 + i];
      inv[x] = 0.0f;
      if (mx[x] == kNegInf) {  // nothing to attend
        std::fill(row_o, row_o + hd, 0.0f);
        row_lse = kNegInf;
        continue;
      }
      const float sum = row_probabilities(sc + x * ldn, n, c, mx[x] * c);
      row_lse = (mx[x] * c + std::log2(sum)) * kLn2;
      inv[x] = 1.0f / sum;
    }
    std::fill(acc, acc + nh * ldh, 0.0f);
    for (long j0 = 0; j0 < n; j0 += 64) {
      const long nk = std::min<long>(64, n - j0);
      for (int x0 = 0, g; x0 < nh; x0 += g) {
        g = group_size(x0);
        int live = 0;  // the group's heads that attend something
        for (int x = x0; x < x0 + g; ++x)
          if (inv[x] != 0.0f) {
            probs[live] = sc + x * ldn + j0;
            parts[live++] = part + x * ldh;
          }
        if (live == 0) continue;
        rows_weighted_sum(probs, live, nk, vb0 + (kb + j0) * s.kv_stride + kv_col(x0), s.kv_stride, hd, parts);
        for (int x = x0; x < x0 + g; ++x) {
          if (inv[x] == 0.0f) continue;
          float* a = acc + x * ldh;
          const float* pt = part + x * ldh;
          for (int d = 0; d < hd; ++d) a[d] += pt[d];
        }
      }
    }
    for (int x = 0; x < nh; ++x) {
      if (inv[x] == 0.0f) continue;
      float* row_o = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h0 + x) * hd;
      for (int d = 0; d < hd; ++d) row_o[d] = acc[x * ldh + d] * inv[x];
    }
  }
}

template void forward_rows(const AttentionShape&, int, int, int, int, int, const float*, const float*,
                           const float*, float*, float*);
template void forward_rows(const AttentionShape&, int, int, int, int, int, const float*, const uint16_t*,
                           const uint16_t*, float*, float*);

template <typename T>
void rows_forward(const AttentionShape& s, const float* q, const T* k, const T* v, float* o, float* lse) {
  if (s.batch == 0 || s.q_len == 0 || s.n_heads == 0) return;
  // Items: (sequence, range of heads); one range per sequence unless the threads are worth
  // waking, then as many as threads, each streaming the cache for its heads.
  const long work = static_cast<long>(s.batch) * s.n_heads * s.q_len * s.kv_len * s.head_dim;
  const int parts = worth_parallel(work) ? std::min(omp_get_max_threads(), s.n_heads) : 1;
  parallel_for(static_cast<long>(s.batch) * parts, work, [&](long item) {
    const int b = static_cast<int>(item / parts), p = static_cast<int>(item % parts);
    const int h0 = s.n_heads * p / parts, h1 = s.n_heads * (p + 1) / parts;
    if (h0 < h1) forward_rows(s, b, h0, h1, 0, s.q_len, q, k, v, o, lse);
  });
}

template void rows_forward(const AttentionShape&, const float*, const float*, const float*, float*, float*);
template void rows_forward(const AttentionShape&, const float*, const uint16_t*, const uint16_t*, float*, float*);

// Query tiles t0, t0 + step, ... of head h in sequence b. An item with several tiles first
// packs the key/value rows they need into contiguous scratch.
void dense_forward_item(const AttentionShape& s, int b, int h, int t0, int step, const float* q,
                        const float* k, const float* v, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd), g = kv_head(s, h);
  const long Tk = s.kv_len;
  const int q_tiles = (s.q_len + kTile - 1) / kTile;
  const size_t tile_floats = forward_tile_floats(hd);
  const float* kg = k + b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  const float* vg = v + b * Tk * s.kv_stride + static_cast<long>(g) * hd;

  if (q_tiles - t0 <= step && s.q_len - t0 * kTile <= kFewRows) {
    forward_rows(s, b, h, h + 1, t0 * kTile, s.q_len - t0 * kTile, q, k, v, o, lse);
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

// One work item: KV head g of sequence b, with the query heads heads[0..nh) that use it.
// Every operand is first packed into contiguous rows (strided rows a multiple of 4 KB
// apart alias in L1 and L2), gradients are accumulated in scratch and added once.
void dense_backward_item(const AttentionShape& s, int b, int g, const int* heads, int nh,
                         const float* q, const float* k, const float* v, const float* o,
                         const float* lse, const float* dout, float* dq, float* dk, float* dv) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len, Tk = s.kv_len;
  const float c = s.scale * kLog2e;

  const BackwardScratch w(hd, Tq, Tk);
  float *Kf = w.Kf, *Vf = w.Vf, *dKf = w.dKf, *dVf = w.dVf, *Qf = w.Qf, *dOf = w.dOf, *dQf = w.dQf;

  const long kv0 = b * Tk * s.kv_stride + static_cast<long>(g) * hd;
  pack(k + kv0, s.kv_stride, static_cast<int>(Tk), hd, Kf, ldh);
  pack(v + kv0, s.kv_stride, static_cast<int>(Tk), hd, Vf, ldh);

  uint64_t key_rows[kTile], query_rows[kTile];
  for_each_backward_head(s, b, heads, nh, q, o, lse, dout, dq, w, [&](int) {
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
      transpose(Kj, ldh, nk, hd, w.Kt, kTile);
      transpose(Vf + j0 * ldh, ldh, nk, hd, w.Vt, kTile);

      for (long i0 = ib; i0 < ie; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, ie - i0));
        const int64_t qp0 = static_cast<int64_t>(s.q_offset) + i0;
        const auto cover = tile_masks(s.mask, qp0, nq, j0, nk, key_rows, query_rows);
        if (cover == AttentionMask::Cover::Empty) continue;
        const bool partial = cover == AttentionMask::Cover::Partial;
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kj, w.Kt, w.Vt,
                           dQf + i0 * ldh, dKj, dVj, w.P, w.dS, partial, query_rows, key_rows, c,
                           w.L2 + i0, w.D + i0, s.scale, s.bf16_products);
      }
    }
  });
  add_rows(dk + kv0, s.kv_stride, dKf, ldh, Tk, hd);
  add_rows(dv + kv0, s.kv_stride, dVf, ldh, Tk, hd);
}

}  // namespace chainlm::attn
