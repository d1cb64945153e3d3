// Chain causality per layer type (SPEC A1): perturbing input chain j changes no output chain
// i < j, bit for bit. The whole-model version is in model_test.cpp.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../kernels/gradcheck.h"
#include "kernels/attention.h"
#include "kernels/chain_linear.h"
#include "kernels/rmsnorm.h"
#include "kernels/swiglu.h"
#include "model/chain_layout.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using test::random_vector;

// Adds noise to columns [begin, width) of every row.
void perturb_columns(std::vector<float>& x, int rows, int ld, int begin, int width, uint64_t seed) {
  Rng rng(seed);
  for (int r = 0; r < rows; ++r)
    for (int c = begin; c < width; ++c) x[(size_t)r * ld + c] += 1.0f + rng.normal();
}

// Checks columns [0, end) of two row-major buffers are bit-identical, and that columns
// after `end` differ somewhere (so the perturbation was real).
void expect_prefix_identical(const std::vector<float>& a, const std::vector<float>& b, int rows, int ld,
                             int end, int width) {
  bool later_differs = false;
  for (int r = 0; r < rows; ++r) {
    ASSERT_EQ(0, std::memcmp(a.data() + (size_t)r * ld, b.data() + (size_t)r * ld, sizeof(float) * end))
        << "row " << r;
    for (int c = end; c < width; ++c) later_differs |= a[(size_t)r * ld + c] != b[(size_t)r * ld + c];
  }
  EXPECT_TRUE(later_differs);
}

TEST(ChainCausality, ChainLinear) {
  ChainLinear cl{ChainSplit(24, {1, 2, 3}), ChainSplit(12, {1, 2, 3})};
  const int M = 5;
  std::vector<std::vector<float>> w;
  std::vector<const float*> wp;
  for (int i = 0; i < 3; ++i) w.push_back(random_vector((size_t)cl.out.width(i) * cl.in.end(i), i + 1));
  for (auto& v : w) wp.push_back(v.data());
  for (int j = 1; j < 3; ++j) {
    auto x = random_vector((size_t)M * 24, 9), x2 = x;
    perturb_columns(x2, M, 24, cl.in.begin(j), 24, 10 + j);
    std::vector<float> y((size_t)M * 12), y2((size_t)M * 12);
    chain_linear_forward(cl, 3, M, x.data(), 24, wp.data(), y.data(), 12);
    chain_linear_forward(cl, 3, M, x2.data(), 24, wp.data(), y2.data(), 12);
    expect_prefix_identical(y, y2, M, 12, cl.out.begin(j), 12);
  }
}

TEST(ChainCausality, RmsNorm) {
  ChainSplit s(24, {1, 2, 3});
  const int M = 4;
  auto g = random_vector(24, 3);
  for (int j = 1; j < 3; ++j) {
    auto x = random_vector((size_t)M * 24, 4), x2 = x;
    perturb_columns(x2, M, 24, s.begin(j), 24, 20 + j);
    std::vector<float> y((size_t)M * 24), y2((size_t)M * 24), r((size_t)M * 3);
    rmsnorm_forward(s, 3, M, x.data(), 24, g.data(), 1e-5f, y.data(), 24, r.data());
    rmsnorm_forward(s, 3, M, x2.data(), 24, g.data(), 1e-5f, y2.data(), 24, r.data());
    expect_prefix_identical(y, y2, M, 24, s.begin(j), 24);
  }
}

TEST(ChainCausality, SwiGlu) {
  const int M = 3, F = 12, begin = 4;
  auto a = random_vector((size_t)M * F, 5), b = random_vector((size_t)M * F, 6);
  auto a2 = a, b2 = b;
  perturb_columns(a2, M, F, begin, F, 7);
  perturb_columns(b2, M, F, begin, F, 8);
  std::vector<float> g((size_t)M * F), g2((size_t)M * F);
  swiglu_forward(M, F, a.data(), b.data(), g.data(), F);
  swiglu_forward(M, F, a2.data(), b2.data(), g2.data(), F);
  expect_prefix_identical(g, g2, M, F, begin, F);
}

// Attention with the heads of a chained config: perturbing the q/k/v columns of chains >= j
// (for CoLM-Air only q: K and V come from chain 1) leaves the heads of chains < j unchanged.
void attention_causality(const ModelConfig& c) {
  ChainLayout L(c);
  const int T = 7, hd = L.head_dim, D = c.dim, KV = L.kv.total();
  AttentionShape s;
  s.batch = 1;
  s.q_len = s.kv_len = T;
  s.n_heads = c.n_heads;
  s.head_dim = hd;
  s.q_stride = s.o_stride = D;
  s.kv_stride = KV;
  s.kv_head_of = L.kv_head_of.data();
  s.scale = 1.0f / std::sqrt((float)hd);
  for (int j = 1; j < L.n; ++j) {
    auto q = random_vector((size_t)T * D, 1), k = random_vector((size_t)T * KV, 2),
         v = random_vector((size_t)T * KV, 3);
    auto q2 = q, k2 = k, v2 = v;
    perturb_columns(q2, T, D, L.dim.begin(j), D, 4);
    if (!c.kv_share) {
      perturb_columns(k2, T, KV, L.kv.begin(j), KV, 5);
      perturb_columns(v2, T, KV, L.kv.begin(j), KV, 6);
    }
    std::vector<float> o((size_t)T * D), o2((size_t)T * D), lse((size_t)T * c.n_heads);
    attention_forward(s, q.data(), k.data(), v.data(), o.data(), lse.data());
    attention_forward(s, q2.data(), k2.data(), v2.data(), o2.data(), lse.data());
    expect_prefix_identical(o, o2, T, D, L.dim.begin(j), D);
  }
}

TEST(ChainCausality, AttentionColm) { attention_causality(test::tiny_config({1, 2, 1}, false, 4)); }
TEST(ChainCausality, AttentionColmAir) { attention_causality(test::tiny_config({1, 2, 1}, true, 2)); }

}  // namespace
}  // namespace chainlm
