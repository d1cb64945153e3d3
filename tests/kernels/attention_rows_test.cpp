// The row primitives for several query rows that attend the same keys (a PHD position's
// copies, attention_rows.cpp): each row's scores, maximum and weighted sum must be the very
// bits the one-row primitives give it, whatever the number of rows beside it, so that a PHD
// decoding step's copies do not depend on being computed together.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "gradcheck.h"
#include "kernels/attention_tiles.h"
#include "kernels/quant.h"

namespace chainlm::attn {
namespace {

using test::random_vector;

template <typename T>
std::vector<T> as_keys(const std::vector<float>& x);
template <>
std::vector<float> as_keys(const std::vector<float>& x) {
  return x;
}
template <>
std::vector<uint16_t> as_keys(const std::vector<float>& x) {
  std::vector<uint16_t> h(x.size());
  for (size_t i = 0; i < x.size(); ++i) h[i] = fp16_from_float(x[i]);
  return h;
}

template <typename T>
void expect_rows_equal_row_by_row() {
  constexpr int kRows = 6;  // past the four the AVX-512 path takes at once
  for (int hd : {64, 48, 80, 128}) {
    const long stride = hd * 3 + 5;
    for (int n : {16, 7, 1}) {
      const auto keys = as_keys<T>(random_vector((size_t)(32 + 12) * stride, 11 + hd + n));
      // The weighted sums also over more keys than a block of scores (an odd count).
      const int nw = n == 16 ? 69 : n;
      const auto vals = as_keys<T>(random_vector((size_t)(nw + 12) * stride, 12 + hd + n));
      const auto qs = random_vector((size_t)kRows * hd, 13 + hd);
      for (int nq = 1; nq <= kRows; ++nq) {
        SCOPED_TRACE(::testing::Message() << "hd " << hd << " keys " << n << " rows " << nq);
        std::vector<const float*> q(nq);
        std::vector<float> out((size_t)nq * 16, 7.0f), mx(nq, -1.0f), alone(16);
        std::vector<float*> outs(nq);
        for (int r = 0; r < nq; ++r)
          q[r] = qs.data() + (size_t)r * hd, outs[r] = out.data() + (size_t)r * 16;
        rows_scores16(q.data(), nq, keys.data(), stride, n, hd, outs.data(), mx.data());
        for (int r = 0; r < nq; ++r) {
          const float m = row_scores16(q[r], keys.data(), stride, n, hd, 0xFFFFu, alone.data());
          ASSERT_EQ(std::memcmp(outs[r], alone.data(), 16 * sizeof(float)), 0)
              << "scores of row " << r;
          ASSERT_EQ(mx[r], std::max(-1.0f, m)) << "maximum of row " << r;
        }
        // Weights with zeros (keys a row does not attend) and rows of different weights.
        std::vector<float> p((size_t)nq * nw);
        for (size_t i = 0; i < p.size(); ++i)
          p[i] = i % 5 == 2 ? 0.0f : 0.1f + 0.05f * (float)(i % 7);
        std::vector<const float*> pr(nq);
        std::vector<float> sums((size_t)nq * hd, 3.0f), one(hd);
        std::vector<float*> so(nq);
        for (int r = 0; r < nq; ++r)
          pr[r] = p.data() + (size_t)r * nw, so[r] = sums.data() + (size_t)r * hd;
        rows_weighted_sum(pr.data(), nq, nw, vals.data(), stride, hd, so.data());
        for (int r = 0; r < nq; ++r) {
          row_weighted_sum(pr[r], nw, vals.data(), stride, hd, one.data());
          ASSERT_EQ(std::memcmp(so[r], one.data(), hd * sizeof(float)), 0)
              << "weighted sum of row " << r;
        }
      }
    }
  }
}

TEST(AttentionRows, SeveralRowsGiveEachRowItsOwnBitsFp32) {
  expect_rows_equal_row_by_row<float>();
}
TEST(AttentionRows, SeveralRowsGiveEachRowItsOwnBitsHalves) {
  expect_rows_equal_row_by_row<uint16_t>();
}

// Not a bit comparison against the code under test: the scores against a plain double sum.
TEST(AttentionRows, ScoresMatchPlainDotProducts) {
  const int hd = 80, n = 13;
  const long stride = hd + 3;
  const auto keys = random_vector((size_t)(32 + 12) * stride, 21);
  const auto qs = random_vector((size_t)3 * hd, 22);
  const float* q[3] = {qs.data(), qs.data() + hd, qs.data() + 2 * hd};
  std::vector<float> out(48);
  float* outs[3] = {out.data(), out.data() + 16, out.data() + 32};
  float mx[3] = {-std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                 -std::numeric_limits<float>::infinity()};
  rows_scores16(q, 3, keys.data(), stride, n, hd, outs, mx);
  for (int r = 0; r < 3; ++r)
    for (int j = 0; j < 16; ++j) {
      if (j >= n) {
        EXPECT_EQ(outs[r][j], -std::numeric_limits<float>::infinity());
        continue;
      }
      double ref = 0.0;
      for (int d = 0; d < hd; ++d) ref += (double)q[r][d] * keys[(size_t)j * stride + d];
      EXPECT_NEAR(outs[r][j], ref, 1e-5 * (1.0 + std::abs(ref)));
      EXPECT_GE(mx[r], outs[r][j]);
    }
}

#if CHAINLM_ATTENTION_AVX2
// The AVX2 path scores eight keys at a time and sums 64 value columns at a time: each score must
// still be the bits of one dot product (dot(), used by the prefill tiles too), and each weighted
// column the bits of its keys' fused multiply-adds in order (a zero weight skipped), so a
// decoded token does not depend on how its keys were grouped.
template <typename T>
void expect_avx2_rows_keep_the_one_at_a_time_bits() {
  for (int hd : {64, 128, 48, 40, 24, 36, 8})
    for (int n : {16, 9, 8, 3}) {
      SCOPED_TRACE(::testing::Message() << "hd " << hd << " keys " << n);
      const long stride = hd + 5;
      const auto kf = random_vector((size_t)16 * stride, 31 + hd + n);
      const auto keys = as_keys<T>(kf);
      const auto q = random_vector((size_t)hd, 32 + hd);
      std::vector<float> out(16);
      const uint32_t allowed = 0xFFFFu & ~(1u << 2);  // key 2 masked
      row_scores16(q.data(), keys.data(), stride, n, hd, allowed, out.data());
      std::vector<float> widened((size_t)16 * stride);
      for (size_t i = 0; i < widened.size(); ++i) widened[i] = as_keys<float>(kf)[i];
      if constexpr (sizeof(T) == 2)
        for (size_t i = 0; i < widened.size(); ++i) widened[i] = float_from_fp16(keys[i]);
      for (int j = 0; j < 16; ++j) {
        const float want = j < n && j != 2 ? dot(q.data(), widened.data() + j * stride, hd)
                                           : -std::numeric_limits<float>::infinity();
        ASSERT_EQ(std::memcmp(&out[j], &want, sizeof(float)), 0) << "key " << j;
      }
      const int nw = n * 5 + 1;
      const auto vf = random_vector((size_t)nw * stride, 33 + hd);
      const auto vals = as_keys<T>(vf);
      std::vector<float> p(nw), sums(hd, 9.0f);
      for (int j = 0; j < nw; ++j) p[j] = j % 4 == 1 ? 0.0f : 0.02f * (float)(j % 9 + 1);
      row_weighted_sum(p.data(), nw, vals.data(), stride, hd, sums.data());
      for (int d = 0; d < hd; ++d) {
        float want = 0.0f;
        for (int j = 0; j < nw; ++j) {
          if (p[j] == 0.0f) continue;
          float v = vf[(size_t)j * stride + d];
          if constexpr (sizeof(T) == 2) v = float_from_fp16(vals[(size_t)j * stride + d]);
          want = std::fma(p[j], v, want);
        }
        ASSERT_EQ(std::memcmp(&sums[d], &want, sizeof(float)), 0) << "column " << d;
      }
    }
}

TEST(AttentionRows, Avx2ScoresAndSumsKeepTheOneAtATimeBitsFp32) {
  expect_avx2_rows_keep_the_one_at_a_time_bits<float>();
}
TEST(AttentionRows, Avx2ScoresAndSumsKeepTheOneAtATimeBitsHalves) {
  expect_avx2_rows_keep_the_one_at_a_time_bits<uint16_t>();
}
#endif

}  // namespace
}  // namespace chainlm::attn
