#include "model/model.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "core/rng.h"
#include "model_variant.h"

namespace chainlm {
namespace {

using test::random_tokens;
using test::ModelVariant;
using test::tiny_config;
using test::variant_name;

class ModelVariants : public ::testing::TestWithParam<ModelVariant> {
 protected:
  ModelConfig config() const { return GetParam().config(); }
};

// Randomizes everything that belongs to chains >= j: their blocks of every Chain-of-Linear,
// their embedding columns and norm gains; keeps the head columns of chains >= j at zero so
// the full model's logits expose chains < j only.
void perturb_chains_from(Model& m, int j, uint64_t seed) {
  Rng rng(seed);
  ParamStore& ps = m.params();
  const ChainLayout& L = m.layout();
  const int D = m.config().dim, begin = L.dim.begin(j);
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    float* v = ps.value(i);
    if (p.shape.size() == 2 && p.name.find(".chain") != std::string::npos && p.chain >= j) {
      for (size_t e = 0; e < p.numel(); ++e) v[e] = 0.3f * rng.normal();
    } else if (p.name == "tok_embeddings.weight" || p.name == "output.weight") {
      for (int64_t r = 0; r < p.shape[0]; ++r)
        for (int c = begin; c < D; ++c) v[r * D + c] = 0.3f * rng.normal();
    } else if (p.shape.size() == 1) {
      for (int c = begin; c < D; ++c) v[c] = 1.0f + rng.normal();
    }
  }
}

void zero_head_from(Model& m, int j) {
  ParamStore& ps = m.params();
  const int D = m.config().dim, begin = m.layout().dim.begin(j);
  int idx = ps.find("output.weight");
  if (idx < 0) idx = ps.find("tok_embeddings.weight");
  float* v = ps.value(idx);
  for (int64_t r = 0; r < m.config().vocab_size; ++r)
    for (int c = begin; c < D; ++c) v[r * D + c] = 0.0f;
}

class CausalityVariants : public ModelVariants {};

TEST_P(CausalityVariants, ChainCausalityIsExact) {
  const ModelConfig c = config();
  const int n = c.n_chains(), B = 2, T = 9, V = c.vocab_size;
  auto tokens = random_tokens(B * T, V, 3);
  ASSERT_GT(n, 1);
  for (int j = 1; j < n; ++j) {
    Model a(c), b(c);
    a.init_random(11);
    zero_head_from(a, j);
    std::memcpy(b.params().values(), a.params().values(), sizeof(float) * a.params().size());
    perturb_chains_from(b, j, 99);
    zero_head_from(b, j);
    std::vector<float> la((size_t)B * T * V), lb((size_t)B * T * V);
    a.logits(tokens.data(), B, T, n, la.data());
    b.logits(tokens.data(), B, T, n, lb.data());
    ASSERT_EQ(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)))
        << "chains >= " << j << " leaked into chains < " << j;
    // And the perturbation is real: with the head columns restored, outputs differ.
    Rng rng(5);
    float* head = b.params().value(b.params().find("output.weight"));
    for (int64_t r = 0; r < V; ++r) head[r * c.dim + c.dim - 1] = rng.normal();
    b.logits(tokens.data(), B, T, n, lb.data());
    EXPECT_NE(0, std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)));
  }
}

TEST_P(ModelVariants, SubModelEqualsModelBuiltFromCopiedWeights) {
  const ModelConfig c = config();
  const int n = c.n_chains(), B = 2, T = 7, V = c.vocab_size;
  Model full(c);
  full.init_random(21);
  auto tokens = random_tokens(B * T, V, 4);
  for (int k = 1; k <= n; ++k) {
    ModelConfig sc = c;
    sc.chains.assign(c.chains.begin(), c.chains.begin() + k);
    const ChainLayout& L = full.layout();
    sc.dim = L.dim.prefix(k);
    sc.ffn_dim = L.ffn.prefix(k);
    sc.n_heads = L.heads.prefix(k);
    if (!c.kv_share) sc.n_kv_heads = L.kv.prefix(k) / L.head_dim;
    Model sub(sc);
    // Copy: chain blocks keep their shapes; D-wide tensors keep their first Dk columns.
    for (int i = 0; i < (int)sub.params().infos().size(); ++i) {
      const ParamInfo& p = sub.params().info(i);
      const int fi = full.params().find(p.name);
      ASSERT_GE(fi, 0) << p.name;
      const ParamInfo& fp = full.params().info(fi);
      const float* src = full.params().value(fi);
      float* dst = sub.params().value(i);
      if (p.shape == fp.shape) {
        std::memcpy(dst, src, sizeof(float) * p.numel());
      } else if (p.shape.size() == 1) {
        std::memcpy(dst, src, sizeof(float) * p.shape[0]);
      } else {
        for (int64_t r = 0; r < p.shape[0]; ++r)
          std::memcpy(dst + r * p.shape[1], src + r * fp.shape[1], sizeof(float) * p.shape[1]);
      }
    }
    std::vector<float> lf((size_t)B * T * V), ls((size_t)B * T * V);
    full.logits(tokens.data(), B, T, k, lf.data());
    sub.logits(tokens.data(), B, T, k, ls.data());
    for (size_t i = 0; i < lf.size(); ++i) ASSERT_NEAR(lf[i], ls[i], 1e-5) << "k=" << k << " i=" << i;
  }
}

TEST_P(ModelVariants, BackwardMatchesFiniteDifferences) {
  test::expect_gradients_match_finite_differences(config());
}

TEST_P(ModelVariants, WeightedLossIsWeightedMeanOfSubModelLosses) {
  const ModelConfig c = config();
  const int n = c.n_chains(), B = 2, T = 8;
  Model m(c);
  m.init_random(41);
  auto tokens = random_tokens(B * T, c.vocab_size, 9);
  auto targets = random_tokens(B * T, c.vocab_size, 10);
  long count = 0;
  auto sums = m.evaluate(tokens.data(), targets.data(), B, T, n, &count);
  ASSERT_EQ(count, B * T);
  std::vector<float> w(n);
  double expect = 0, wsum = 0;
  for (int i = 0; i < n; ++i) {
    w[i] = 0.5f + i;
    expect += w[i] * sums[i] / count;
    wsum += w[i];
  }
  auto l = m.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  EXPECT_NEAR(l.loss, expect / wsum, 1e-5);
  for (int i = 0; i < n; ++i) EXPECT_NEAR(l.chain_loss[i], sums[i] / count, 1e-5);
}

INSTANTIATE_TEST_SUITE_P(All, ModelVariants,
                         ::testing::Values(ModelVariant{{1}, false, 0, false},
                                           ModelVariant{{1}, false, 1, true},
                                           ModelVariant{{1, 1}, false, 0, false},
                                           ModelVariant{{1, 1}, true, 2, false},
                                           ModelVariant{{1, 2, 1}, false, 4, false},
                                           ModelVariant{{1, 2, 1}, true, 2, false},
                                           ModelVariant{{2, 2, 2, 2}, true, 4, false},
                                           ModelVariant{{1, 1, 1, 1}, false, 8, true},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 1, 0, 0, false, true}),
                         variant_name);

// Multi-chain, untied models: the test zeroes head columns, which tying would tie to the
// embedding's.
INSTANTIATE_TEST_SUITE_P(MultiChain, CausalityVariants,
                         ::testing::Values(ModelVariant{{1, 1}, false, 0, false},
                                           ModelVariant{{1, 1}, true, 2, false},
                                           ModelVariant{{1, 2, 1}, false, 4, false},
                                           ModelVariant{{1, 2, 1}, true, 2, false},
                                           ModelVariant{{2, 2, 2, 2}, true, 4, false},
                                           ModelVariant{{3, 1}, false, 4, false}),
                         variant_name);

// Messages count chains from 1 (as --chains k does) and say "head" for one head.
// evaluate() and logits() on a model that has not trained allocate a forward pass's arena (two
// layers' activations in turn, no backward scratch); after a training step they reuse the
// training arena. The two must give the same bits, in fp32 and with bf16 weights, over an odd
// number of layers (the last on the first block again).
TEST(ForwardOnlyArena, GivesTheTrainingArenasResultsInAFractionOfItsMemory) {
  ModelConfig c = tiny_config({1, 2}, true, 2);
  c.n_layers = 5;
  const int B = 2, T = 16, n = c.n_chains();
  EXPECT_LT(3 * Model::activation_floats(c, B, T, true), 2 * Model::activation_floats(c, B, T));
  EXPECT_LT(Model::bf16_activation_elements(c, B, T, true),
            Model::bf16_activation_elements(c, B, T) / 2);
  const auto tokens = random_tokens(B * T, c.vocab_size, 3),
             targets = random_tokens(B * T, c.vocab_size, 4);
  for (const bool bf16 : {false, true}) {
    SCOPED_TRACE(bf16 ? "bf16" : "fp32");
    Model fresh(c), trained(c);
    fresh.init_random(7);
    trained.copy_weights_from(fresh);
    if (bf16) {
      fresh.use_bf16_weights(true);
      trained.use_bf16_weights(true);
    }
    // A step on the other model's training arena, weights left as they were (no update).
    trained.forward_backward(tokens.data(), targets.data(), B, T, std::vector<float>(n, 1.0f),
                             1.0f);
    EXPECT_EQ(fresh.evaluate(tokens.data(), targets.data(), B, T, n, nullptr),
              trained.evaluate(tokens.data(), targets.data(), B, T, n, nullptr));
    std::vector<float> a((size_t)B * T * c.vocab_size), b(a.size());
    fresh.logits(tokens.data(), B, T, 1, a.data());
    trained.logits(tokens.data(), B, T, 1, b.data());
    EXPECT_EQ(a, b);
    // And a training step after evaluation replaces the forward pass's arena with a whole one.
    const StepLosses l1 = fresh.forward_backward(tokens.data(), targets.data(), B, T,
                                                 std::vector<float>(n, 1.0f), 1.0f);
    const StepLosses l2 = trained.forward_backward(tokens.data(), targets.data(), B, T,
                                                   std::vector<float>(n, 1.0f), 1.0f);
    EXPECT_EQ(l1.loss, l2.loss);
  }
}

TEST(ConfigMessages, CountChainsFromOneAndReadRight) {
  ModelConfig c = test::tiny_config({1, 1}, true, 2);
  c.chains = {1, 3};
  c.n_heads = 4;
  c.dim = 32;
  c.n_kv_heads = 2;
  try {
    validate_config(c, "cfg");
    FAIL() << "accepted a chain of one query head with 2 KV heads under kv_share";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("chain 1 owns 1 query head,"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chainlm
