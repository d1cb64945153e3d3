// Chain tuning at the model level (SPEC A7): frozen parameters get no gradient, and the
// trainable ones get exactly the gradient of the unfrozen model.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "model/model.h"
#include "model_variant.h"

namespace chainlm {
namespace {

using test::random_tokens;
using test::ModelVariant;
using test::tiny_config;
using test::variant_name;

class FreezeVariants : public ::testing::TestWithParam<ModelVariant> {
 protected:
  ModelConfig config() const { return GetParam().config(); }
};

// Gradients of one forward_backward with every sub-model weighted (so the head runs in
// segments), after applying `spec`.
std::vector<float> gradients(Model& m, const FreezeSpec& spec, const std::vector<int>& tokens,
                             const std::vector<int>& targets, int B, int T) {
  m.set_freeze(spec);
  m.params().zero_grads();
  std::vector<float> w(m.layout().n, 1.0f);
  w[0] = 0.5f;
  m.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  return std::vector<float>(m.params().grads(), m.params().grads() + m.params().size());
}

void expect_masked_gradients(Model& m, const std::vector<float>& full,
                             const std::vector<float>& frozen, const std::string& what) {
  const ParamStore& ps = m.params();
  for (const ParamInfo& p : ps.infos()) {
    const int64_t cols = p.cols();
    for (size_t e = 0; e < p.numel(); ++e) {
      const size_t i = p.offset + e;
      if ((int64_t)(e % cols) < p.frozen_cols) {
        ASSERT_EQ(frozen[i], 0.0f) << what << ": frozen " << p.name << "[" << e << "] has a gradient";
      } else {
        ASSERT_NEAR(frozen[i], full[i], 1e-6 + 1e-4 * std::fabs(full[i]))
            << what << ": " << p.name << "[" << e << "]";
      }
    }
  }
}

TEST_P(FreezeVariants, FrozenChainsGetNoGradientAndTheRestTheFullOne) {
  const ModelConfig c = config();
  const int B = 2, T = 7;
  Model m(c);
  m.init_random(3);
  auto tokens = random_tokens(B * T, c.vocab_size, 1);
  auto targets = random_tokens(B * T, c.vocab_size, 2);
  const auto full = gradients(m, FreezeSpec{}, tokens, targets, B, T);
  for (int f = 1; f < c.n_chains(); ++f) {
    const auto frozen = gradients(m, FreezeSpec{f, false}, tokens, targets, B, T);
    expect_masked_gradients(m, full, frozen, cat("freeze ", f));
    // What is frozen: chains < f blocks whole, D-wide tensors their first Df columns.
    const int Df = m.layout().dim.prefix(f);
    for (const ParamInfo& p : m.params().infos()) {
      if (p.chain >= 0)
        EXPECT_EQ(p.frozen(), p.chain < f) << p.name;
      else
        EXPECT_EQ(p.frozen_cols, Df) << p.name;
    }
  }
  // Unfreezing restores every gradient.
  const auto again = gradients(m, FreezeSpec{}, tokens, targets, B, T);
  EXPECT_EQ(0, std::memcmp(again.data(), full.data(), full.size() * sizeof(float)));
}

TEST_P(FreezeVariants, HeadOnlyTrainsTheOutputHeadAlone) {
  const ModelConfig c = config();
  Model m(c);
  m.init_random(4);
  if (c.tie_embeddings) {
    EXPECT_THROW(m.set_freeze(FreezeSpec{0, true}), Error);
    return;
  }
  const int B = 2, T = 6;
  auto tokens = random_tokens(B * T, c.vocab_size, 5);
  auto targets = random_tokens(B * T, c.vocab_size, 6);
  const auto full = gradients(m, FreezeSpec{}, tokens, targets, B, T);
  const auto head = gradients(m, FreezeSpec{0, true}, tokens, targets, B, T);
  expect_masked_gradients(m, full, head, "head only");
  EXPECT_EQ(m.params().trainable_numel(), (size_t)c.vocab_size * c.dim);
}

INSTANTIATE_TEST_SUITE_P(All, FreezeVariants,
                         ::testing::Values(ModelVariant{{1, 1}, false, 0, false},
                                           ModelVariant{{1, 1}, true, 2, false},
                                           ModelVariant{{1, 1}, false, 2, true},
                                           ModelVariant{{1, 2, 1}, false, 4, false},
                                           ModelVariant{{1, 2, 1}, true, 2, true},
                                           ModelVariant{{2, 2, 2, 2}, true, 4, false},
                                           ModelVariant{{3, 1}, false, 4, false},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 3}),
                         variant_name);

TEST(Freeze, TrainableCountFollowsTheChains) {
  // CoLM-Air [1, 1]: freezing chain 1 leaves chain 2's blocks and the second half of every
  // D-wide tensor.
  const ModelConfig c = tiny_config({1, 1}, true, 2);
  Model m(c);
  EXPECT_EQ(m.params().trainable_numel(), m.params().numel());
  EXPECT_EQ((long)m.params().numel(), m.num_params(2));
  m.set_freeze(FreezeSpec{1, false});
  const ChainLayout& L = m.layout();
  const long D1 = L.dim.width(1), F1 = L.ffn.width(1), D = c.dim, F = c.ffn_dim;
  // Per layer: wq and wo chain 1 blocks [D1, D], w1 and w3 [F1, D], w2 [D1, F], two gain slices.
  const long per_layer = 2 * D1 * D + 2 * F1 * D + D1 * F + 2 * D1;
  const long expect = c.n_layers * per_layer + D1 + 2L * c.vocab_size * D1;
  EXPECT_EQ((long)m.params().trainable_numel(), expect);
}

TEST(Freeze, RejectsImpossibleSpecs) {
  Model m(tiny_config({1, 1}, true, 2));
  try {
    m.set_freeze(FreezeSpec{2, false});
    FAIL() << "froze every chain";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("at most 1 can be frozen"), std::string::npos) << e.what();
  }
  EXPECT_THROW(m.set_freeze(FreezeSpec{-1, false}), Error);
  EXPECT_THROW(m.set_freeze(FreezeSpec{1, true}), Error);
  Model single(tiny_config({1}, false));
  EXPECT_THROW(single.set_freeze(FreezeSpec{1, false}), Error);
  // Training only sub-models made of frozen chains trains nothing.
  m.set_freeze(FreezeSpec{1, false});
  auto tokens = random_tokens(8, m.config().vocab_size, 1);
  try {
    m.forward_backward(tokens.data(), tokens.data(), 1, 8, {1.0f, 0.0f}, 1.0f);
    FAIL() << "trained only frozen chains";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nothing would train"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chainlm
