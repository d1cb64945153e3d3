// Attention over K/V stored as IEEE halves (attention_forward_f16, the 16-bit KV cache): bit for
// bit what attention_forward gives on the widened rows, on both of its paths (a few query rows
// read the halves in place; more rows widen them first), and against a double reference on
// the unrounded K/V within a tolerance derived from the halves' rounding.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "attention_reference.h"
#include "core/error.h"
#include "gradcheck.h"
#include "kernels/attention.h"
#include "kernels/fp16_rows.h"

namespace chainlm {
namespace {

using test::causal;
using test::kv_of;
using test::random_vector;
using test::reference_forward;

struct F16Case {
  int batch, q_len, kv_len, n_heads, kv_heads, head_dim;
};

AttentionShape shape_of(const F16Case& c, std::vector<int>& kv_map) {
  AttentionShape s;
  s.batch = c.batch;
  s.q_len = c.q_len;
  s.kv_len = c.kv_len;
  s.q_offset = c.kv_len - c.q_len;  // decoding / prefill over a cache
  s.n_heads = c.n_heads;
  s.head_dim = c.head_dim;
  s.q_stride = c.n_heads * c.head_dim;
  s.o_stride = c.n_heads * c.head_dim + 5;
  s.kv_stride = c.kv_heads * c.head_dim + 16;  // the cache holds more columns than are read
  kv_map.resize(c.n_heads);
  for (int h = 0; h < c.n_heads; ++h) kv_map[h] = h * c.kv_heads / c.n_heads;  // GQA groups
  s.kv_head_of = kv_map.data();
  s.scale = 1.0f / std::sqrt((float)c.head_dim);
  return s;
}

class AttentionF16 : public ::testing::TestWithParam<F16Case> {};

TEST_P(AttentionF16, EqualsTheFp32KernelOnTheWidenedRowsAndTheReferenceWithinRounding) {
  const F16Case c = GetParam();
  std::vector<int> kv_map;
  const AttentionShape s = shape_of(c, kv_map);
  const size_t kv_n = (size_t)c.batch * c.kv_len * s.kv_stride;
  const std::vector<float> q = random_vector((size_t)c.batch * c.q_len * s.q_stride, 1);
  const std::vector<float> k = random_vector(kv_n, 2, 1.5f), v = random_vector(kv_n, 3);
  std::vector<uint16_t> k16(kv_n), v16(kv_n);
  fp16_from_floats(k.data(), k16.data(), (long)kv_n);
  fp16_from_floats(v.data(), v16.data(), (long)kv_n);
  std::vector<float> kw(kv_n), vw(kv_n);
  floats_from_fp16(k16.data(), kw.data(), (long)kv_n);
  floats_from_fp16(v16.data(), vw.data(), (long)kv_n);

  const size_t o_n = (size_t)c.batch * c.q_len * s.o_stride, lse_n = (size_t)c.batch * c.n_heads * c.q_len;
  std::vector<float> o16(o_n, 0.5f), lse16(lse_n), o32(o_n, 0.5f), lse32(lse_n);
  attention_forward_f16(s, q.data(), k16.data(), v16.data(), o16.data(), lse16.data());
  attention_forward(s, q.data(), kw.data(), vw.data(), o32.data(), lse32.data());
  ASSERT_EQ(0, std::memcmp(o16.data(), o32.data(), o_n * sizeof(float)));
  ASSERT_EQ(0, std::memcmp(lse16.data(), lse32.data(), lse_n * sizeof(float)));

  // Against the unrounded K/V: each element is off by at most u = 2^-11 of itself, so a score by
  // at most ds = scale * u * sum_d |q_d k_d|, the softmax weights by a factor within e^(+-2 ds)
  // (first order: their L1 change <= 2 ds), and an output by u * max|v| + 2 ds * max|v|; twice
  // that covers the fp32 arithmetic of both sides.
  std::vector<double> ro, rlse;
  reference_forward(s, q, k, v, ro, rlse);
  const double u = std::ldexp(1.0, -11);
  const int hd = c.head_dim;
  for (int b = 0; b < c.batch; ++b)
    for (int h = 0; h < c.n_heads; ++h)
      for (int i = 0; i < c.q_len; ++i) {
        const size_t qa = ((size_t)b * c.q_len + i) * s.q_stride + (size_t)h * hd;
        double ds = 0, vmax = 0;
        for (int j = 0; j < c.kv_len; ++j) {
          if (!causal(s, i, j)) continue;
          const size_t ka = ((size_t)b * c.kv_len + j) * s.kv_stride + (size_t)kv_of(s, h) * hd;
          double dot = 0;
          for (int d = 0; d < hd; ++d) {
            dot += std::fabs((double)q[qa + d] * k[ka + d]);
            vmax = std::max(vmax, (double)std::fabs(v[ka + d]));
          }
          ds = std::max(ds, s.scale * u * dot);
        }
        const double tol = 2 * (u * vmax + 2 * ds * vmax) + 1e-6;
        const size_t oa = ((size_t)b * c.q_len + i) * s.o_stride + (size_t)h * hd;
        for (int d = 0; d < hd; ++d)
          ASSERT_NEAR(o16[oa + d], ro[oa + d], tol) << "b=" << b << " h=" << h << " i=" << i << " d=" << d;
        const size_t la = ((size_t)b * c.n_heads + h) * c.q_len + i;
        ASSERT_NEAR(lse16[la], rlse[la], 2 * ds + 1e-5);
      }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, AttentionF16,
    ::testing::Values(F16Case{1, 1, 1, 4, 4, 64},     // the first decoding step
                      F16Case{1, 1, 37, 4, 2, 64},    // decoding, GQA, a partial key tile
                      F16Case{1, 4, 130, 8, 2, 40},   // four rows (PHD-less batch), hd not a multiple of 16
                      F16Case{2, 3, 70, 2, 1, 24},    // two sequences
                      F16Case{1, 5, 5, 4, 4, 64},     // the smallest prefill that widens
                      F16Case{1, 70, 150, 6, 3, 48},  // a prefill chunk after a cached prefix
                      F16Case{2, 33, 33, 2, 2, 16}));

TEST(AttentionF16Refusals, APhdMaskIsRefusedByName) {
  F16Case c{1, 2, 8, 2, 2, 16};
  std::vector<int> kv_map;
  AttentionShape s = shape_of(c, kv_map);
  s.mask.kind = AttentionMask::Kind::PhdCswa;
  s.mask.repeat = 2;
  s.mask.window = 2;
  s.mask.chunk = 4;
  std::vector<float> q(64), o(64), lse(8);
  std::vector<uint16_t> kv(1024);
  try {
    attention_forward_f16(s, q.data(), kv.data(), kv.data(), o.data(), lse.data());
    FAIL() << "a PHD mask over a 16-bit cache was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("PHD"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chainlm
