// The PHD masks (SPEC B2) on compact key views (attention_passes.h), over the repeated stream
// (training) and over separately stored originals and hidden tokens (incremental inference).
//
// Over the repeated stream a PHD query (copy j of position n) attends the originals of
// positions [0, n] and, when j >= 1, the hidden-stream tokens [lo, h(n, j)]
// (AttentionMask::phd_hidden_interval). With the originals laid out compactly in position
// order and the hidden tokens in hidden-stream order, both are contiguous key ranges, and
// along the query rows both ends never decrease. So a query tile visits only the key tiles
// that hold keys it may attend: ~n/64 tiles of originals (what the ordinary causal model
// visits for its one row per position) plus one or two tiles of hidden keys around the
// window, never the (K*T)^2 plane; both ranges feed one online softmax (the tile steps of
// attention_steps.cpp). The backward walks the same two ranges from the key side.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/error.h"
#include "core/thread_scratch.h"
#include "kernels/attention_passes.h"
#include "kernels/attention_tiles.h"

namespace chainlm {

namespace attn {

namespace {

// Query row i -> (position n, copy j): the originals of positions
// [first_position, first_position + orig_rows), one row each, then stream rows row_base, ...
// (row r = copy r % K of position r / K); with copy_from > 0 (row_base then a multiple of K)
// each position past the originals brings only its copies copy_from..K-1.
struct PhdQueryMap {
  int64_t K = 2, orig_rows = 0, first_position = 0, row_base = 0, copy_from = 0;
  void at(int64_t i, int64_t* n, int64_t* j) const {
    if (i < orig_rows) {
      *n = first_position + i;
      *j = 0;
      return;
    }
    if (copy_from == 0) {
      const int64_t r = row_base + (i - orig_rows);
      *n = r / K;
      *j = r % K;
      return;
    }
    const int64_t per = K - copy_from, r = i - orig_rows;
    *n = row_base / K + r / per;
    *j = copy_from + r % per;
  }
};

// The keys of one query row: originals [0, oend), hidden tokens [hlo, hhi) if `hidden`. An
// original row carries the hidden range start of the next copy (and an end at its position's
// first hidden token), so that hlo and hhi never decrease along the rows; its bits are empty.
struct PhdRowKeys {
  int64_t oend, hlo, hhi;
  bool hidden;
  // How many hidden tokens the row attends.
  long hidden_count() const { return hidden ? static_cast<long>(hhi - hlo) : 0; }
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
      pack(x + hidden_row(h) * h_stride, h_stride, static_cast<int>(run), hd, dst + (h - h0) * ld,
           ld);
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
  const float c = s.scale * kLog2e;
  const ForwardTileScratch t(scratch, hd);
  begin_forward_tile(s, b, h, i0, nq, q, o, t);

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
                     query_rows, c, t, s.bf16_products);
  }
  // Hidden tokens: the band [rk[0].hlo, rk[nq-1].hhi), one or two tiles.
  for (int64_t j0 = rk[0].hlo; j0 < rk[nq - 1].hhi; j0 += kTile) {
    const int nk = static_cast<int>(std::min<int64_t>(kTile, rk[nq - 1].hhi - j0));
    uint64_t any = 0;
    for (int i = 0; i < nq; ++i) any |= query_rows[i] = phd_hidden_bits(rk[i], j0, nk);
    if (!any) continue;
    transpose_bits(query_rows, nq, key_rows, nk);
    forward_key_tile(nq, nk, hd, kv.kh + (j0 - kv.h_first) * ldh, kv.vh + (j0 - kv.h_first) * ldh,
                     ldh, true, true, key_rows, query_rows, c, t, s.bf16_products);
  }

  finish_forward_tile(s, b, h, i0, nq, t, o, lse);
}

// Up to this many query rows (decoding: the K copies of one position) go row by row.
constexpr int kPhdFewRows = 8;

// Query rows [i0, i0 + nq) of head h, reading the key rows in place. Rows that attend the same
// originals (the copies of one position) go through them together, four at most, so that each
// original key and value row is read once for all of them; their hidden tokens (a window each)
// go row by row. Every row gets the bits it would get alone.
void phd_forward_rows(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                      const PhdRowKeys* rk, const PhdKeySource& src, float* o, float* lse) {
  constexpr int kGroup = 4;
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len;
  const float c = s.scale * kLog2e;
  for (int g0 = 0; g0 < nq;) {
    const long no = rk[g0].oend;
    int ng = 1;
    while (ng < kGroup && g0 + ng < nq && rk[g0 + ng].oend == no) ++ng;
    long nh_max = 0;
    for (int r = 0; r < ng; ++r) nh_max = std::max(nh_max, rk[g0 + r].hidden_count());
    const size_t per_row =
        2 * static_cast<size_t>(ldh) + round16(static_cast<int>(no + nh_max)) + 16;
    float* scratch = thread_scratch(ng * per_row);
    const float* qrows[kGroup];
    float *acc[kGroup], *sc[kGroup], mx[kGroup];
    for (int r = 0; r < ng; ++r) {
      qrows[r] = q + (b * Tq + i0 + g0 + r) * s.q_stride + static_cast<long>(h) * hd;
      acc[r] = scratch + r * per_row;
      sc[r] = acc[r] + 2 * ldh;  // scores: originals, then hidden tokens
      mx[r] = kNegInf;
    }
    float* out16[kGroup];
    for (long j = 0; j < no; j += 16) {
      for (int r = 0; r < ng; ++r) out16[r] = sc[r] + j;
      rows_scores16(qrows, ng, src.k + j * src.o_stride, src.o_stride,
                    static_cast<int>(std::min<long>(16, no - j)), hd, out16, mx);
    }
    float sum[kGroup], m2[kGroup];
    for (int r = 0; r < ng; ++r) {
      const PhdRowKeys& rr = rk[g0 + r];
      const long nh = rr.hidden_count();
      for (long j = 0; j < nh; ++j) {
        sc[r][no + j] = dot(qrows[r], src.hk + src.hidden_row(rr.hlo + j) * src.h_stride, hd);
        mx[r] = std::max(mx[r], sc[r][no + j]);
      }
      m2[r] = mx[r] * c;
      sum[r] = mx[r] == kNegInf ? 0.0f : row_probabilities(sc[r], no + nh, c, m2[r]);
    }
    // A row that attends nothing has all-zero weights here (its scores were never turned into
    // probabilities): the joint sum gives it zeros, and it is finished as empty below.
    for (int r = 0; r < ng; ++r)
      if (mx[r] == kNegInf) std::fill(sc[r], sc[r] + no, 0.0f);
    rows_weighted_sum(sc, ng, no, src.v, src.o_stride, hd, acc);
    for (int r = 0; r < ng; ++r) {
      const PhdRowKeys& rr = rk[g0 + r];
      const long nh = rr.hidden_count();
      float* orow = o + (b * Tq + i0 + g0 + r) * s.o_stride + static_cast<long>(h) * hd;
      float& row_lse = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + g0 + r];
      if (mx[r] == kNegInf) {
        std::fill(orow, orow + hd, 0.0f);
        row_lse = kNegInf;
        continue;
      }
      float* acc_h = acc[r] + ldh;
      std::fill(acc_h, acc_h + hd, 0.0f);
      for (long j = 0; j < nh; ++j) {
        const float p = sc[r][no + j];
        const float* vrow = src.hv + src.hidden_row(rr.hlo + j) * src.h_stride;
        for (int d = 0; d < hd; ++d) acc_h[d] += p * vrow[d];
      }
      const float inv = 1.0f / sum[r];
      for (int d = 0; d < hd; ++d) orow[d] = (acc[r][d] + acc_h[d]) * inv;
      row_lse = (m2[r] + std::log2(sum[r])) * kLn2;
    }
    g0 += ng;
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
  for_each_forward_item(s, [&](int b, int h, int chunk, int chunks) {
    phd_forward_item(s, b, h, chunk, chunks, q, rk, src_of(b, h), o, lse);
  });
}

// The repeated stream's key rows of sequence b, KV head g.
PhdKeySource interleaved_source(const AttentionShape& s, const float* k, const float* v, int b,
                                int g) {
  const int64_t K = s.mask.repeat, Tk = s.kv_len, n_orig = (Tk + K - 1) / K;
  const long base = b * Tk * s.kv_stride + static_cast<long>(g) * s.head_dim;
  return PhdKeySource{k + base, v + base, K * s.kv_stride, k + base, v + base, s.kv_stride,
                      n_orig,   0,        Tk - n_orig,     K,        true};
}

// Row keys of every query row, in a per-thread buffer.
struct PhdRowsScratch;
PhdRowKeys* phd_rows_buffer(size_t n) { return chainlm::thread_scratch<PhdRowKeys, PhdRowsScratch>(0, n); }

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

  const BackwardScratch w(hd, Tq, Tk);
  float *Kf = w.Kf, *Vf = w.Vf, *dKf = w.dKf, *dVf = w.dVf, *Qf = w.Qf, *dOf = w.dOf, *dQf = w.dQf;

  pack(src.k, src.o_stride, static_cast<int>(n_orig), hd, Kf, ldh);
  pack(src.v, src.o_stride, static_cast<int>(n_orig), hd, Vf, ldh);
  src.pack_hidden(src.hk, 0, n_hid, hd, Kf + n_orig * ldh, ldh);
  src.pack_hidden(src.hv, 0, n_hid, hd, Vf + n_orig * ldh, ldh);

  uint64_t key_rows[kTile], query_rows[kTile];
  for_each_backward_head(s, b, heads, nh, q, o, lse, dout, dq, w, [&](int) {
    // Originals: the rows from the first whose oend passes the tile attend it.
    for (int64_t j0 = 0; j0 < n_orig; j0 += kTile) {
      const int nk = static_cast<int>(std::min<int64_t>(kTile, n_orig - j0));
      const long ib =
          std::partition_point(rk, rk + Tq, [&](const PhdRowKeys& r) { return r.oend <= j0; }) - rk;
      if (ib >= Tq) continue;
      transpose(Kf + j0 * ldh, ldh, nk, hd, w.Kt, kTile);
      transpose(Vf + j0 * ldh, ldh, nk, hd, w.Vt, kTile);
      for (long i0 = ib; i0 < Tq; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, Tq - i0));
        const bool partial = rk[i0].oend < j0 + nk;
        if (partial) {
          for (int i = 0; i < nq; ++i) query_rows[i] = phd_orig_bits(rk[i0 + i], j0, nk);
          transpose_bits(query_rows, nq, key_rows, nk);
        } else {
          std::fill(query_rows, query_rows + nq, low_bits(nk));
        }
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kf + j0 * ldh, w.Kt, w.Vt,
                           dQf + i0 * ldh, dKf + j0 * ldh, dVf + j0 * ldh, w.P, w.dS, partial,
                           query_rows, key_rows, c, w.L2 + i0, w.D + i0, s.scale, s.bf16_products);
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
      transpose(Kf + kj * ldh, ldh, nk, hd, w.Kt, kTile);
      transpose(Vf + kj * ldh, ldh, nk, hd, w.Vt, kTile);
      for (long i0 = ib; i0 < ie; i0 += kTile) {
        const int nq = static_cast<int>(std::min<long>(kTile, ie - i0));
        uint64_t any = 0;
        for (int i = 0; i < nq; ++i) any |= query_rows[i] = phd_hidden_bits(rk[i0 + i], j0, nk);
        if (!any) continue;
        transpose_bits(query_rows, nq, key_rows, nk);
        backward_tile_pair(nq, nk, hd, Qf + i0 * ldh, dOf + i0 * ldh, Kf + kj * ldh, w.Kt, w.Vt,
                           dQf + i0 * ldh, dKf + kj * ldh, dVf + kj * ldh, w.P, w.dS, true,
                           query_rows, key_rows, c, w.L2 + i0, w.D + i0, s.scale, s.bf16_products);
      }
    }
  });
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

void phd_stream_forward(const AttentionShape& s, const float* q, const float* k, const float* v,
                        float* o, float* lse) {
  if (s.batch == 0 || s.n_heads == 0 || s.q_len == 0) return;
  const PhdRowKeys* rk = interleaved_row_keys(s);
  phd_forward(
      s, rk, [&](int b, int h) { return interleaved_source(s, k, v, b, kv_head(s, h)); }, q, o,
      lse);
}

void phd_stream_backward(const AttentionShape& s, const float* q, const float* k, const float* v,
                         const float* o, const float* lse, const float* dout, float* dq, float* dk,
                         float* dv) {
  const PhdRowKeys* rk = interleaved_row_keys(s);
  for_each_backward_item(s, [&](int b, int g, const int* heads, int nh) {
    phd_backward_item(s, b, g, heads, nh, rk, q, k, v, o, lse, dout, dq, dk, dv);
  });
}

}  // namespace attn

void phd_attention_forward(const AttentionShape& s, const PhdQueryRows& rows, const PhdKeys& keys,
                           const float* q, float* o, float* lse) {
  using namespace attn;
  check_attention_shape(s);
  CHAINLM_CHECK(s.mask.is_phd(), "phd_attention_forward: the mask must be a PHD kind");
  CHAINLM_CHECK(s.batch == 1, "phd_attention_forward: batch must be 1, got ", s.batch);
  CHAINLM_CHECK(rows.first_position >= 0 && rows.hidden_from >= rows.first_position,
                "phd_attention_forward: need 0 <= first_position (", rows.first_position,
                ") <= hidden_from (", rows.hidden_from, ")");
  CHAINLM_CHECK(keys.orig_len >= 0 && keys.hidden_first >= 0 && keys.hidden_len >= 0,
                "phd_attention_forward: negative key range");
  const int64_t K = s.mask.repeat;
  CHAINLM_CHECK(rows.copy_from >= 0 && rows.copy_from < K, "phd_attention_forward: copy_from ",
                rows.copy_from, " is outside 0..", K - 1);
  if (s.n_heads == 0 || s.q_len == 0) return;
  const int64_t orig_rows = rows.hidden_from - rows.first_position, per = K - rows.copy_from;
  CHAINLM_CHECK(s.q_len >= orig_rows && (s.q_len - orig_rows) % per == 0,
                "phd_attention_forward: ", s.q_len, " query rows are not ", orig_rows,
                " originals plus whole positions of ", per, " copies");
  const int64_t last = orig_rows == s.q_len ? rows.hidden_from - 1
                                            : rows.hidden_from + (s.q_len - orig_rows) / per - 1;
  CHAINLM_CHECK(last < keys.orig_len, "phd_attention_forward: queries reach position ", last,
                " but only ", keys.orig_len, " originals are given (a query attends its own)");
  PhdRowKeys* rk = phd_rows_buffer(s.q_len);
  phd_row_keys(s.mask,
               PhdQueryMap{K, orig_rows, rows.first_position, rows.hidden_from * K, rows.copy_from},
               s.q_len, keys.orig_len, keys.hidden_first, keys.hidden_first + keys.hidden_len, rk);
  // for_each_forward_item sizes the work by s.kv_len, which this form leaves unused (0): give it
  // the keys a row may attend, or a decoding step's heads would never be spread over the threads.
  AttentionShape ws = s;
  ws.kv_len = static_cast<int>(
      std::min<int64_t>(keys.orig_len + keys.hidden_len, std::numeric_limits<int>::max()));
  phd_forward(
      ws, rk,
      [&](int, int h) {
        const long g = static_cast<long>(kv_head(s, h)) * s.head_dim;
        return PhdKeySource{keys.orig_k + g,
                            keys.orig_v + g,
                            s.kv_stride,
                            keys.hid_k ? keys.hid_k + g : nullptr,
                            keys.hid_v ? keys.hid_v + g : nullptr,
                            s.kv_stride,
                            keys.orig_len,
                            keys.hidden_first,
                            keys.hidden_first + keys.hidden_len,
                            K,
                            false};
      },
      q, o, lse);
}

}  // namespace chainlm
