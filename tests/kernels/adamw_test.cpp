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

}  // namespace
}  // namespace chainlm
