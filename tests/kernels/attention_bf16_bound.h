#pragma once
// Attention (forward and backward) in double, with, per output element, a bound on how far the
// kernel's result may be when its tile products take bf16 operands (AttentionShape::
// bf16_products). Derived from bf16 rounding, not fitted: with u = 2^-8 (bf16's unit roundoff,
// round to nearest) and products of rounded operands accumulated in fp32,
//   a score s_ij = scale q_i.k_j is off by at most e_ij = (2u + u^2) scale sum_d |q_id k_jd|;
//   with E_i = max_j e_ij, p_ij = exp(s_ij - lse_i) is off by a factor within exp(+-2 E_i)
//   (the score by E_i, lse by at most E_i), and lse itself by E_i;
//   rounding p and v for O = P V adds two factors (1 + u): o_id is off by at most
//   sum_j p_ij |v_jd| (exp(2 E_i) (1 + u)^2 - 1);
// and in the backward, with D_i = dO_i.o_i computed from the kernel's o (off by the bound above):
//   dV_jd: sum_i p_ij |dO_id| (exp(2 E_i) (1 + u)^2 - 1);
//   dP_ij = dO_i.V_j: f_ij = (2u + u^2) sum_d |dO_id V_jd|;
//   dS_ij = scale p_ij (dP_ij - D_i): g_ij = scale p_ij ((exp(2 E_i) - 1) |dP_ij - D_i| +
//     exp(2 E_i) (f_ij + dD_i));
//   dQ_id = sum_j dS_ij k_jd: sum_j |k_jd| ((|dS_ij| + g_ij)(1 + u)^2 - |dS_ij|), dK likewise.
// fp32 arithmetic (accumulation, exp2, the online softmax's rescaling) adds a relative 2^-16
// of each sum of magnitudes: far below the bf16 terms, far above fp32's own error.
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "kernels/attention.h"

namespace chainlm::test {

struct Bf16Bounded {
  std::vector<double> o, lse, dq, dk, dv;                      // the exact results
  std::vector<double> o_tol, lse_tol, dq_tol, dk_tol, dv_tol;  // how far the bf16 kernel may be
};

// allowed(i, j): query row i may attend key row j (within a sequence). Query and KV heads as
// in AttentionShape (kv_head_of); dout is the gradient of o.
inline Bf16Bounded bf16_bounded_attention(const AttentionShape& s, const std::vector<float>& q,
                                          const std::vector<float>& k, const std::vector<float>& v,
                                          const std::vector<float>& dout,
                                          const std::function<bool(int, int)>& allowed) {
  const double u = std::ldexp(1.0, -8), fp32 = std::ldexp(1.0, -16), u2 = (1 + u) * (1 + u);
  const int hd = s.head_dim;
  Bf16Bounded r;
  r.o.assign((size_t)s.batch * s.q_len * s.o_stride, 0.0);
  r.o_tol = r.o;
  r.lse.assign((size_t)s.batch * s.n_heads * s.q_len, -std::numeric_limits<double>::infinity());
  r.lse_tol.assign(r.lse.size(), 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dq_tol = r.dq;
  r.dk.assign(k.size(), 0.0);
  r.dk_tol = r.dk;
  r.dv.assign(v.size(), 0.0);
  r.dv_tol = r.dv;
  std::vector<double> p(s.kv_len), dp(s.kv_len), f(s.kv_len);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = s.kv_head_of ? s.kv_head_of[h] : h;
      auto key = [&](int j) { return ((size_t)b * s.kv_len + j) * s.kv_stride + (size_t)g * hd; };
      for (int i = 0; i < s.q_len; ++i) {
        const size_t qa = ((size_t)b * s.q_len + i) * s.q_stride + (size_t)h * hd;
        const size_t oa = ((size_t)b * s.q_len + i) * s.o_stride + (size_t)h * hd;
        double m = -std::numeric_limits<double>::infinity(), E = 0;
        for (int j = 0; j < s.kv_len; ++j) {
          if (!allowed(i, j)) continue;
          double dot = 0, mag = 0;
          for (int d = 0; d < hd; ++d) {
            dot += (double)q[qa + d] * k[key(j) + d];
            mag += std::fabs((double)q[qa + d] * k[key(j) + d]);
          }
          p[j] = dot * s.scale;
          m = std::max(m, p[j]);
          E = std::max(E, (2 * u + u * u) * s.scale * mag + fp32 * s.scale * mag);
        }
        if (m == -std::numeric_limits<double>::infinity()) continue;  // attends nothing: o = 0
        double sum = 0;
        for (int j = 0; j < s.kv_len; ++j)
          if (allowed(i, j)) sum += (p[j] = std::exp(p[j] - m));
        const size_t li = ((size_t)b * s.n_heads + h) * s.q_len + i;
        r.lse[li] = m + std::log(sum);
        r.lse_tol[li] = E + fp32 * (std::fabs(m) + 1);
        const double rel = std::exp(2 * E) * u2 - 1 + fp32;
        double D = 0;
        for (int j = 0; j < s.kv_len; ++j) {
          if (!allowed(i, j)) continue;
          p[j] /= sum;
          double dot = 0, mag = 0;
          for (int d = 0; d < hd; ++d) {
            r.o[oa + d] += p[j] * v[key(j) + d];
            r.o_tol[oa + d] += p[j] * std::fabs(v[key(j) + d]) * rel;
            dot += (double)dout[oa + d] * v[key(j) + d];
            mag += std::fabs((double)dout[oa + d] * v[key(j) + d]);
            r.dv[key(j) + d] += p[j] * dout[oa + d];
            r.dv_tol[key(j) + d] += p[j] * std::fabs(dout[oa + d]) * rel;
          }
          dp[j] = dot;
          f[j] = (2 * u + u * u + fp32) * mag;
          D += p[j] * dp[j];
        }
        double dD = 0;  // D from the kernel's o
        for (int d = 0; d < hd; ++d)
          dD += std::fabs(dout[oa + d]) * (r.o_tol[oa + d] + fp32 * std::fabs(r.o[oa + d]));
        for (int j = 0; j < s.kv_len; ++j) {
          if (!allowed(i, j)) continue;
          const double ds = s.scale * p[j] * (dp[j] - D);
          const double gs =
              s.scale * p[j] *
              ((std::exp(2 * E) - 1) * std::fabs(dp[j] - D) + std::exp(2 * E) * (f[j] + dD));
          const double w = (std::fabs(ds) + gs) * u2 - std::fabs(ds) + fp32 * std::fabs(ds);
          for (int d = 0; d < hd; ++d) {
            r.dq[qa + d] += ds * k[key(j) + d];
            r.dq_tol[qa + d] += w * std::fabs(k[key(j) + d]);
            r.dk[key(j) + d] += ds * q[qa + d];
            r.dk_tol[key(j) + d] += w * std::fabs(q[qa + d]);
          }
        }
      }
    }
  return r;
}

}  // namespace chainlm::test
