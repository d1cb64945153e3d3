#pragma once
// Helpers for kernel tests: double-precision finite differences and closeness checks.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <vector>

#include "core/rng.h"

namespace chainlm::test {

inline std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  Rng rng(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = scale * rng.normal();
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Central differences of a scalar function of x, in double precision.
inline std::vector<double> numeric_grad(const std::function<double(const std::vector<double>&)>& f,
                                        std::vector<double> x, double h = 1e-6) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f(x);
    x[i] = x0 - h;
    const double fm = f(x);
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// |a - b| <= atol + rtol * |b| elementwise, reporting the first few failures.
template <typename A, typename B>
void expect_close(const A& a, const B& b, size_t n, double atol, double rtol, const char* what) {
  int failures = 0;
  for (size_t i = 0; i < n; ++i) {
    const double da = a[i], db = b[i];
    if (!(std::fabs(da - db) <= atol + rtol * std::fabs(db))) {
      if (++failures <= 5)
        ADD_FAILURE() << what << "[" << i << "]: got " << da << ", expected " << db;
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << n << " elements differ";
}

}  // namespace chainlm::test
