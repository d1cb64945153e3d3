#pragma once
// A naive attention forward in double, written out independently of the kernels' AttentionMask
// (causal mask only), shared by the attention tests.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "kernels/attention.h"

namespace chainlm::test {

inline int kv_of(const AttentionShape& s, int h) {
  return s.kv_head_of ? s.kv_head_of[h] : h;
}
// Written out independently of AttentionMask.
inline bool causal(const AttentionShape& s, int i, int j) {
  return j <= s.q_offset + i;
}

// Naive masked softmax attention in double; o and lse as the kernel lays them out.
template <typename T>
void reference_forward(const AttentionShape& s, const std::vector<T>& q, const std::vector<T>& k,
                       const std::vector<T>& v, std::vector<double>& o, std::vector<double>& lse) {
  const int hd = s.head_dim;
  o.assign((size_t)s.batch * s.q_len * s.o_stride, 0.0);
  lse.assign((size_t)s.batch * s.n_heads * s.q_len, 0.0);
  std::vector<double> p(s.kv_len);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.n_heads; ++h)
      for (int i = 0; i < s.q_len; ++i) {
        const size_t qa = ((size_t)b * s.q_len + i) * s.q_stride + (size_t)h * hd;
        double m = -std::numeric_limits<double>::infinity();
        for (int j = 0; j < s.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          const size_t ka = ((size_t)b * s.kv_len + j) * s.kv_stride + (size_t)kv_of(s, h) * hd;
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += (double)q[qa + d] * (double)k[ka + d];
          p[j] = dot * s.scale;
          m = std::max(m, p[j]);
        }
        double sum = 0;
        for (int j = 0; j < s.kv_len; ++j)
          if (causal(s, i, j)) sum += (p[j] = std::exp(p[j] - m));
        const size_t oa = ((size_t)b * s.q_len + i) * s.o_stride + (size_t)h * hd;
        for (int j = 0; j < s.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          const size_t va = ((size_t)b * s.kv_len + j) * s.kv_stride + (size_t)kv_of(s, h) * hd;
          for (int d = 0; d < hd; ++d) o[oa + d] += p[j] / sum * (double)v[va + d];
        }
        lse[((size_t)b * s.n_heads + h) * s.q_len + i] =
            sum > 0 ? m + std::log(sum) : -std::numeric_limits<double>::infinity();
      }
}

}  // namespace chainlm::test
