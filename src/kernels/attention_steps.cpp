// Steps of the attention passes (attention_tiles.h), shared by the dense and the PHD kernels:
// a forward query tile is begun (Q transposed, statistics reset), fed key tiles one at a time
// (scores, online-softmax update, O += P V) and finished (o = O / l, lse); a backward work item
// packs its KV head once, then per query head packs Q and dO and computes D and the lse in
// log2 units, and runs one (query tile, key tile) pair at a time.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/attention_tiles.h"

namespace chainlm::attn {

size_t forward_tile_floats(int hd) {
  return static_cast<size_t>(kTile) * (hd + kTile + 2 * round16(hd) + 3 * 16);
}

ForwardTileScratch::ForwardTileScratch(float* scratch, int hd) {
  const int ldh = round16(hd);
  Qt = scratch;                             // hd x kTile, Q tile transposed
  St = Qt + static_cast<long>(hd) * kTile;  // kTile x kTile, keys x queries
  O = St + kTile * kTile;                   // nq x ldh output accumulator
  Vp = O + kTile * ldh;                     // nk x ldh, V tile packed (if kv is not)
  m2 = Vp + kTile * ldh;                    // running max, log2 units
  l = m2 + kTile;                           // running sum
  alpha = l + kTile;                        // per-tile rescale of O
}

void begin_forward_tile(const AttentionShape& s, int b, int h, int i0, int nq, const float* q,
                        float* o, const ForwardTileScratch& t) {
  const int hd = s.head_dim;
  const long Tq = s.q_len;
  transpose(q + (b * Tq + i0) * s.q_stride + static_cast<long>(h) * hd, s.q_stride, nq, hd, t.Qt,
            kTile);
  std::memset(t.O, 0, sizeof(float) * nq * round16(hd));
  // The output rows are written at the end; fetch them (into L2) while the tile computes.
  for (int i = 0; i < nq; ++i)
    for (int d = 0; d < hd; d += 16)
      __builtin_prefetch(o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd + d, 1, 2);
  std::fill(t.m2, t.m2 + kTile, kNegInf);
  std::fill(t.l, t.l + kTile, 0.0f);
}

void forward_key_tile(int nq, int nk, int hd, const float* kj, const float* vj, long stride,
                      bool packed, bool partial, const uint64_t* key_rows,
                      const uint64_t* query_rows, float c, const ForwardTileScratch& t, bool bf16) {
  const int ldh = round16(hd);
  tile_product(bf16, nk, nq, hd, kj, stride, 1, t.Qt, kTile, t.St, kTile, false,
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
  tile_product(bf16, nq, hd, nk, t.St, 1, kTile, vj, ldv, t.O, ldh, true, nullptr,
               partial ? query_rows : nullptr);
}

void finish_forward_tile(const AttentionShape& s, int b, int h, int i0, int nq,
                         const ForwardTileScratch& t, float* o, float* lse) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len;
  for (int i = 0; i < nq; ++i) {
    float* orow = o + (b * Tq + i0 + i) * s.o_stride + static_cast<long>(h) * hd;
    const float* acc = t.O + i * ldh;
    const float inv = t.l[i] > 0.0f ? 1.0f / t.l[i] : 0.0f;
    for (int d = 0; d < hd; ++d) orow[d] = acc[d] * inv;
    lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i0 + i] =
        t.l[i] > 0.0f ? (t.m2[i] + std::log2(t.l[i])) * kLn2 : kNegInf;
  }
}

BackwardScratch::BackwardScratch(int hd, long q_len, long kv_len) {
  const long ldh = round16(hd), Tq = q_len, Tk = kv_len;
  const size_t floats = static_cast<size_t>(ldh) * (4 * Tk + 3 * Tq) +
                        static_cast<size_t>(kTile) * (2 * hd + 2 * kTile) +
                        2 * static_cast<size_t>(round16(static_cast<int>(Tq)));
  Kf = thread_scratch(floats);              // Tk x ldh, K of the KV head
  Vf = Kf + Tk * ldh;                       // Tk x ldh
  dKf = Vf + Tk * ldh;                      // Tk x ldh
  dVf = dKf + Tk * ldh;                     // Tk x ldh
  Qf = dVf + Tk * ldh;                      // Tq x ldh, Q of one query head
  dOf = Qf + Tq * ldh;                      // Tq x ldh
  dQf = dOf + Tq * ldh;                     // Tq x ldh
  Kt = dQf + Tq * ldh;                      // hd x kTile
  Vt = Kt + static_cast<long>(hd) * kTile;  // hd x kTile
  P = Vt + static_cast<long>(hd) * kTile;   // kTile x kTile
  dS = P + kTile * kTile;                   // kTile x kTile
  D = dS + kTile * kTile;                   // Tq: dout . o per query row
  L2 = D + round16(static_cast<int>(Tq));   // Tq: lse in log2 units
  std::memset(dKf, 0, sizeof(float) * Tk * ldh);
  std::memset(dVf, 0, sizeof(float) * Tk * ldh);
}

long begin_backward_head(const AttentionShape& s, int b, int h, const float* q, const float* o,
                         const float* lse, const float* dout, const BackwardScratch& w) {
  const int hd = s.head_dim, ldh = round16(hd);
  const long Tq = s.q_len;
  const long q0 = b * Tq * s.q_stride + static_cast<long>(h) * hd;
  const long o0 = b * Tq * s.o_stride + static_cast<long>(h) * hd;
  pack(q + q0, s.q_stride, static_cast<int>(Tq), hd, w.Qf, ldh);
  pack(dout + o0, s.o_stride, static_cast<int>(Tq), hd, w.dOf, ldh);
  std::memset(w.dQf, 0, sizeof(float) * Tq * ldh);
  for (long i = 0; i < Tq; ++i) {
    prefetch_row(o + o0 + (i + kPrefetchRows) * s.o_stride, hd, 0);
    w.D[i] = dot(o + o0 + i * s.o_stride, w.dOf + i * ldh, hd);
    const float li = lse[(static_cast<long>(b) * s.n_heads + h) * Tq + i];
    // A row that attends nothing has every entry masked; +inf keeps exp2 NaN-free.
    w.L2[i] = li == kNegInf ? std::numeric_limits<float>::infinity() : li * kLog2e;
  }
  return q0;
}

void backward_tile_pair(int nq, int nk, int hd, const float* Qi, const float* dOi, const float* Kj,
                        const float* Kt, const float* Vt, float* dQi, float* dKj, float* dVj,
                        float* P, float* dS, bool partial, const uint64_t* query_rows,
                        const uint64_t* key_rows, float c, const float* L2i, const float* Di,
                        float scale, bool bf16) {
  const int ldh = round16(hd);
  const uint64_t* qtrim = partial ? query_rows : nullptr;
  const uint64_t* ktrim = partial ? key_rows : nullptr;
  tile_product(bf16, nq, nk, hd, Qi, ldh, 1, Kt, kTile, P, kTile, false, qtrim, nullptr);
  probabilities(P, nq, nk, query_rows, c, L2i);
  tile_product(bf16, nk, hd, nq, P, 1, kTile, dOi, ldh, dVj, ldh, true, nullptr, ktrim);
  tile_product(bf16, nq, nk, hd, dOi, ldh, 1, Vt, kTile, dS, kTile, false, qtrim, nullptr);
  softmax_grad(P, dS, nq, nk, query_rows, Di, scale);
  tile_product(bf16, nq, hd, nk, dS, kTile, 1, Kj, ldh, dQi, ldh, true, nullptr, qtrim);
  tile_product(bf16, nk, hd, nq, dS, 1, kTile, Qi, ldh, dKj, ldh, true, nullptr, ktrim);
}

}  // namespace chainlm::attn
