#pragma once
// Attention masks: the causal mask and the PHD masks of SPEC B2. The dense kernels ask them per
// 64 x 64 tile (cover, bounds) and per row of a partial tile (bits); the PHD kernels ask only
// for a query's hidden-stream interval and use the rest as their tests' reference.
#include <cstdint>

namespace chainlm {

// Which (query, key) pairs may attend, as a rule over positions (never a T x T array).
// A query's position is q_offset + its row index (AttentionShape); a key's is its row index.
// The PHD kinds (SPEC B2) rule over the repeated stream: row r = p*repeat + c is copy c of
// position p (c = 0 the original, c >= 1 hidden); see phd(). The attention kernels run them
// on a compact view (originals, hidden stream) that never visits the tiles they exclude, so
// their cost grows linearly in repeat; the member functions below are the reference rule.
struct AttentionMask {
  enum class Kind { Causal, Phd, PhdSwa, PhdCswa };
  Kind kind = Kind::Causal;
  int repeat = 1;  // K (PHD kinds)
  int window = 0;  // W: hidden tokens a hidden token may look back in the hidden stream (SWA)
  int chunk = 0;   // C: positions per chunk; the window stays inside one chunk (CSWA)

  // The SPEC B2 mask for (K, W, C): Phd (W = 0), PhdSwa (C = 0) or PhdCswa; Causal for K = 1.
  static AttentionMask phd(int repeat, int window, int chunk);
  bool is_phd() const { return kind != Kind::Causal; }
  // PHD: the hidden-stream keys [*lo, *hi) that copy j >= 1 of position n attends (its own
  // position's copies 1..j and its window); its original keys are positions [0, n].
  void phd_hidden_interval(int64_t n, int64_t j, int64_t* lo, int64_t* hi) const;

  // How a tile (queries at positions [q0, q1), keys at [k0, k1)) meets the mask.
  enum class Cover { Empty, Partial, Full };

  bool allowed(int64_t qpos, int64_t kpos) const;
  Cover cover(int64_t q0, int64_t q1, int64_t k0, int64_t k1) const;
  // Keys in [*k_begin, *k_end) include every key any query in [q0, q1) may attend.
  void key_bounds(int64_t q0, int64_t q1, int64_t kv_len, int64_t* k_begin, int64_t* k_end) const;
  // Query positions in [*q_begin, *q_end) include every query that may attend a key in
  // [k0, k1); the caller clips them to its query positions.
  void query_bounds(int64_t k0, int64_t k1, int64_t* q_begin, int64_t* q_end) const;
  // Bit j set iff allowed(qpos, k0 + j), for nk <= 64 keys.
  uint64_t key_bits(int64_t qpos, int64_t k0, int nk) const;
  // Bit i set iff allowed(q0 + i, kpos), for nq <= 64 queries.
  uint64_t query_bits(int64_t kpos, int64_t q0, int nq) const;
};

namespace attn {

// The n lowest bits set (none for n <= 0, all 64 for n >= 64): the allowed-mask of a prefix.
inline uint64_t low_bits(int64_t n) {
  return n <= 0 ? 0 : n >= 64 ? ~uint64_t{0} : (uint64_t{1} << n) - 1;
}

}  // namespace attn

}  // namespace chainlm
