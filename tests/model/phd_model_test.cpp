// The model with PHD repetition (SPEC B1, B2, B4): K = 1 is the ordinary model, the loss is
// the last copy's, causality over positions, chain causality, and finite-difference gradients.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "model/model.h"
#include "model_variant.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::tiny_config;
using test::variant_name;

class PhdModel : public ::testing::TestWithParam<ModelVariant> {};

TEST(PhdModelK1, RepeatOneIsTheOrdinaryModelBitForBit) {
  for (bool air : {false, true}) {
    const ModelConfig plain = tiny_config({1, 2}, air, air ? 2 : 0);
    ModelConfig k1 = plain;
    k1.phd.repeat = 1;
    k1.phd.shared_positions = true;  // irrelevant for K = 1: p*1 + 0 = p
    Model a(plain), b(k1);
    a.init_random(3);
    b.init_random(3);
    const int B = 2, T = 11, V = plain.vocab_size;
    auto tokens = random_tokens(B * T, V, 1), targets = random_tokens(B * T, V, 2);
    std::vector<float> la((size_t)B * T * V), lb(la.size());
    a.logits(tokens.data(), B, T, 2, la.data());
    b.logits(tokens.data(), B, T, 2, lb.data());
    EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
    const std::vector<float> w{0.5f, 1.0f};
    a.params().zero_grads();
    b.params().zero_grads();
    const StepLosses sa = a.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
    const StepLosses sb = b.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
    EXPECT_EQ(sa.loss, sb.loss);
    EXPECT_EQ(
        0, std::memcmp(a.params().grads(), b.params().grads(), a.params().size() * sizeof(float)));
  }
}

TEST_P(PhdModel, LogitsOfAPositionIgnoreLaterTokens) {
  const ModelConfig c = GetParam().config();
  Model m(c);
  m.init_random(5);
  const int T = 13, V = c.vocab_size, n = c.n_chains();
  auto a = random_tokens(T, V, 7);
  std::vector<float> la((size_t)T * V), lb(la.size());
  m.logits(a.data(), 1, T, n, la.data());
  for (int cut : {0, 4, 9}) {
    auto b = a;
    for (int t = cut + 1; t < T; ++t) b[t] = (b[t] + 1 + t) % V;
    m.logits(b.data(), 1, T, n, lb.data());
    for (int t = 0; t <= cut; ++t)
      for (int x = 0; x < V; ++x)
        ASSERT_EQ(la[(size_t)t * V + x], lb[(size_t)t * V + x])
            << "position " << t << " cut " << cut;
    // And a later position does see the change.
    double diff = 0;
    for (size_t i = (size_t)(cut + 1) * V; i < la.size(); ++i) diff += std::fabs(la[i] - lb[i]);
    EXPECT_GT(diff, 0);
  }
}

TEST_P(PhdModel, LossIsTheMeanCrossEntropyOfEverySubModelsLastCopyLogits) {
  const ModelConfig c = GetParam().config();
  const int n = c.n_chains(), B = 2, T = 9, V = c.vocab_size;
  Model m(c);
  m.init_random(8);
  auto tokens = random_tokens(B * T, V, 3), targets = random_tokens(B * T, V, 4);
  targets[5] = -1;
  std::vector<float> logits((size_t)B * T * V);
  std::vector<double> expect(n, 0.0);
  for (int k = 1; k <= n; ++k) {
    m.logits(tokens.data(), B, T, k, logits.data());
    for (int r = 0; r < B * T; ++r) {
      if (targets[r] < 0) continue;
      const float* l = logits.data() + (size_t)r * V;
      double mx = l[0], sum = 0;
      for (int x = 1; x < V; ++x) mx = std::max(mx, (double)l[x]);
      for (int x = 0; x < V; ++x) sum += std::exp(l[x] - mx);
      expect[k - 1] += (mx + std::log(sum) - l[targets[r]]) / (B * T - 1);
    }
  }
  std::vector<float> w(n, 1.0f);
  const StepLosses s = m.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  EXPECT_EQ(s.tokens, B * T - 1);
  double mean = 0;
  for (int k = 0; k < n; ++k) {
    EXPECT_NEAR(s.chain_loss[k], expect[k], 1e-5) << "k=" << k + 1;
    mean += expect[k] / n;
  }
  EXPECT_NEAR(s.loss, mean, 1e-5);
  long count = 0;
  auto sums = m.evaluate(tokens.data(), targets.data(), B, T, n, &count);
  EXPECT_EQ(count, B * T - 1);
  for (int k = 0; k < n; ++k) EXPECT_NEAR(sums[k] / count, expect[k], 1e-5);
}

TEST_P(PhdModel, BackwardMatchesFiniteDifferences) {
  test::expect_gradients_match_finite_differences(GetParam().config());
}

// SPEC B4: chains and PHD are orthogonal; chain i of the output never sees chains > i.
class PhdChainModel : public PhdModel {};

TEST_P(PhdChainModel, ChainCausalityHolds) {
  const ModelConfig c = GetParam().config();
  const int n = c.n_chains(), B = 1, T = 8, V = c.vocab_size;
  ASSERT_GE(n, 2);
  Model a(c), b(c);
  a.init_random(11);
  std::memcpy(b.params().values(), a.params().values(), sizeof(float) * a.params().size());
  // Perturb the last chain's blocks of every Chain-of-Linear in b.
  Rng rng(2);
  for (int i = 0; i < (int)b.params().infos().size(); ++i) {
    const ParamInfo& p = b.params().info(i);
    if (p.chain == n - 1 && p.name.find(".chain") != std::string::npos)
      for (size_t e = 0; e < p.numel(); ++e) b.params().value(i)[e] = 0.3f * rng.normal();
  }
  auto tokens = random_tokens(B * T, V, 3);
  std::vector<float> la((size_t)B * T * V), lb(la.size());
  a.logits(tokens.data(), B, T, n - 1, la.data());
  b.logits(tokens.data(), B, T, n - 1, lb.data());
  EXPECT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
  a.logits(tokens.data(), B, T, n, la.data());
  b.logits(tokens.data(), B, T, n, lb.data());
  EXPECT_NE(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(All, PhdModel,
                         ::testing::Values(ModelVariant{{1}, false, 0, false, 2, 0, 0, false},
                                           ModelVariant{{1}, false, 1, false, 3, 0, 0, true},
                                           ModelVariant{{1}, false, 0, false, 2, 3, 0, false},
                                           ModelVariant{{1}, false, 0, false, 3, 3, 2, false},
                                           ModelVariant{{1, 1}, false, 0, false, 3, 2, 0, true},
                                           ModelVariant{{1, 1}, true, 2, false, 2, 2, 3, false},
                                           ModelVariant{{1, 2, 1}, false, 4, false, 4, 5, 3, false},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 2, 0, 0, true},
                                           ModelVariant{
                                               {1, 1}, false, 0, false, 3, 2, 4, false, true}),
                         variant_name);

INSTANTIATE_TEST_SUITE_P(MultiChain, PhdChainModel,
                         ::testing::Values(ModelVariant{{1, 1}, false, 0, false, 3, 2, 0, true},
                                           ModelVariant{{1, 1}, true, 2, false, 2, 2, 3, false},
                                           ModelVariant{{1, 2, 1}, false, 4, false, 4, 5, 3, false},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 2, 0, 0, true}),
                         variant_name);

}  // namespace
}  // namespace chainlm
