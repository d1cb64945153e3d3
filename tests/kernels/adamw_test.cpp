#include "kernels/adamw.h"

#include <gtest/gtest.h>

#include <cmath>

#include "gradcheck.h"

namespace chainlm {
namespace {

TEST(AdamW, MatchesReferenceOverSeveralSteps) {
  const size_t n = 37;
  auto p = test::random_vector(n, 1);
  std::vector<float> m(n, 0.0f), v(n, 0.0f);
  std::vector<double> pr(p.begin(), p.end()), mr(n, 0.0), vr(n, 0.0);
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.1f;
  const float grad_scale = 0.5f;
  for (long step = 1; step <= 5; ++step) {
    auto g = test::random_vector(n, 100 + step);
    hp.step = step;
    adamw_update(n, p.data(), g.data(), m.data(), v.data(), grad_scale, hp);
    for (size_t i = 0; i < n; ++i) {
      const double gi = g[i] * (double)grad_scale;
      mr[i] = hp.beta1 * mr[i] + (1 - hp.beta1) * gi;
      vr[i] = hp.beta2 * vr[i] + (1 - hp.beta2) * gi * gi;
      const double mh = mr[i] / (1 - std::pow((double)hp.beta1, step));
      const double vh = vr[i] / (1 - std::pow((double)hp.beta2, step));
      pr[i] = pr[i] * (1 - (double)hp.lr * hp.weight_decay) - hp.lr * mh / (std::sqrt(vh) + hp.eps);
    }
  }
  test::expect_close(p, pr, n, 1e-6, 1e-5, "params");
}

TEST(AdamW, ColumnRangeUpdatesOnlyItsColumnsAndMatchesTheWholeUpdate) {
  // Columns [begin, end): frozen ones before, unused ones (chains no trained sub-model reads)
  // after.
  const size_t rows = 5, cols = 9, begin = 3, end = 7, n = rows * cols;
  auto p = test::random_vector(n, 3), g = test::random_vector(n, 4);
  std::vector<float> m(n, 0.01f), v(n, 0.02f);
  auto p_all = p, m_all = m, v_all = v;
  AdamWParams hp;
  hp.lr = 1e-2f;
  hp.weight_decay = 0.1f;  // decay must not reach the frozen or unused columns either
  hp.step = 3;
  adamw_update_columns(rows, cols, begin, end, p.data(), g.data(), m.data(), v.data(), 0.7f, hp);
  adamw_update(n, p_all.data(), g.data(), m_all.data(), v_all.data(), 0.7f, hp);
  const auto p0 = test::random_vector(n, 3);
  for (size_t r = 0; r < rows; ++r)
    for (size_t j = 0; j < cols; ++j) {
      const size_t i = r * cols + j;
      if (j < begin || j >= end) {
        EXPECT_EQ(p[i], p0[i]) << "element " << i << " outside the range changed";
        EXPECT_EQ(m[i], 0.01f);
        EXPECT_EQ(v[i], 0.02f);
      } else {
        EXPECT_EQ(p[i], p_all[i]) << i;  // bit-identical to the whole-tensor update
        EXPECT_EQ(m[i], m_all[i]) << i;
        EXPECT_EQ(v[i], v_all[i]) << i;
      }
    }
}

}  // namespace
}  // namespace chainlm
