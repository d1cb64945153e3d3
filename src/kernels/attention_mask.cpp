// The mask rules of attention_mask.h. The causal kind has closed forms for every query; the
// PHD kinds (SPEC B2) are written as the SPEC states them, pair by pair: they are the
// reference the compact-view kernels (attention_phd.cpp) are tested against, and only the
// hidden-stream interval of a query (phd_hidden_interval) is on the kernels' path.
#include "kernels/attention_mask.h"

#include <algorithm>
#include <limits>

namespace chainlm {

using attn::low_bits;

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

}  // namespace chainlm
