// Incremental PHD inference (SPEC B3, B4): the cache of originals plus the hidden-token ring
// gives the logits of the full masked forward over the repeated sequence.
#include <gtest/gtest.h>

#include <cmath>

#include "../model/model_variant.h"
#include "infer/session.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::tiny_config;
using test::variant_name;

double max_abs_diff(const float* a, const float* b, int n) {
  double m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

class PhdSession : public ::testing::TestWithParam<ModelVariant> {};

TEST_P(PhdSession, IncrementalDecodingMatchesFullMaskedForward) {
  const ModelConfig c = GetParam().config(48);
  Model model(c);
  model.init_random(7);
  // Sharper attention than the default init, so that a wrong key would show.
  for (size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] *= 3.0f;
  const int T = 41, V = c.vocab_size;
  auto tokens = random_tokens(T, V, 3);
  for (int k = 1; k <= c.n_chains(); ++k) {
    std::vector<float> full((size_t)T * V);
    model.logits(tokens.data(), 1, T, k, full.data());
    for (int prompt : {1, 2, 13, 30}) {
      InferenceSession s(model, 8);  // small passes: prefill crosses pass boundaries
      const float* l = s.prefill(std::vector<int>(tokens.begin(), tokens.begin() + prompt), k);
      ASSERT_LE(max_abs_diff(l, full.data() + (size_t)(prompt - 1) * V, V), 1e-4)
          << "prefill of " << prompt << ", k=" << k;
      for (int t = prompt; t < T; ++t) {
        l = s.decode(tokens[t], k);
        ASSERT_LE(max_abs_diff(l, full.data() + (size_t)t * V, V), 1e-4)
            << "k=" << k << " prompt " << prompt << " t=" << t;
      }
    }
    // Every position's logits at once (all copies of every position run).
    InferenceSession s(model, 16);
    std::vector<float> all((size_t)T * V);
    s.append(tokens.data(), 20, k, all.data());
    s.append(tokens.data() + 20, T - 20, k, all.data() + (size_t)20 * V);
    EXPECT_LE(max_abs_diff(all.data(), full.data(), T * V), 1e-4) << "all logits, k=" << k;
  }
}

TEST_P(PhdSession, BoundedPrefillEqualsFullPrefill) {
  const ModelConfig c = GetParam().config(48);
  Model model(c);
  model.init_random(9);
  for (size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] *= 3.0f;
  const int V = c.vocab_size, n = c.n_chains();
  auto tokens = random_tokens(c.max_seq_len, V, 5);
  for (int prompt : {5, 29, 40}) {
    InferenceSession bounded(model), full(model);
    full.set_bounded_prefill(false);
    const std::vector<int> p(tokens.begin(), tokens.begin() + prompt);
    std::vector<float> a(V);
    const float* la = bounded.prefill(p, n);
    std::copy(la, la + V, a.begin());
    const float* lb = full.prefill(p, n);
    ASSERT_LE(max_abs_diff(a.data(), lb, V), 1e-4) << "prompt " << prompt;
    // The ring left behind is exact too: decoding continues identically.
    for (int t = prompt; t < prompt + 6; ++t) {
      la = bounded.decode(tokens[t], n);
      std::copy(la, la + V, a.begin());
      lb = full.decode(tokens[t], n);
      ASSERT_LE(max_abs_diff(a.data(), lb, V), 1e-4) << "prompt " << prompt << " t " << t;
    }
  }
}

class PhdChainSession : public PhdSession {};

TEST_P(PhdChainSession, ChainSwitchingMatchesEachSubModelFromScratch) {
  const ModelConfig c = GetParam().config(48);
  const int n = c.n_chains(), T = 24, V = c.vocab_size;
  ASSERT_GT(n, 1);
  Model model(c);
  model.init_random(10);
  auto tokens = random_tokens(T, V, 4);
  InferenceSession s(model, 8);
  s.prefill(std::vector<int>(tokens.begin(), tokens.begin() + 6), 1);
  for (int t = 6; t < T; ++t) {
    const int k = 1 + (t * 7 / 3) % n;  // up and down across all sub-models
    const float* l = s.decode(tokens[t], k);
    std::vector<float> ref((size_t)(t + 1) * V);
    model.logits(tokens.data(), 1, t + 1, k, ref.data());
    ASSERT_LE(max_abs_diff(l, ref.data() + (size_t)t * V, V), 1e-4) << "t=" << t << " k=" << k;
  }
}

// With chains: CoLM recomputes on growth, CoLM-Air shares cache and ring by all sub-models.
const ModelVariant kChained[] = {ModelVariant{{1, 1}, false, 0, false, 2, 3, 0, false},
                                 ModelVariant{{1, 1}, true, 2, false, 3, 4, 6, true},
                                 ModelVariant{{1, 2, 1}, false, 4, false, 3, 0, 0, false},
                                 ModelVariant{{1, 2, 1}, true, 2, false, 2, 5, 0, true},
                                 ModelVariant{{2, 2}, true, 4, false, 4, 3, 3, false},
                                 ModelVariant{{1, 1}, false, 0, false, 3, 4, 6, true, true}};

// PHD, SWA, CSWA for several K, W, C and both position-id modes.
INSTANTIATE_TEST_SUITE_P(Ordinary, PhdSession,
                         ::testing::Values(ModelVariant{{1}, false, 0, false, 2, 0, 0, false},
                                           ModelVariant{{1}, false, 2, false, 4, 0, 0, true},
                                           ModelVariant{{1}, false, 0, false, 2, 3, 0, false},
                                           ModelVariant{{1}, false, 0, false, 3, 5, 0, true},
                                           ModelVariant{{1}, false, 1, false, 4, 2, 0, false},
                                           ModelVariant{{1}, false, 0, false, 2, 4, 8, false},
                                           ModelVariant{{1}, false, 0, false, 3, 3, 4, true},
                                           ModelVariant{{1}, false, 0, false, 4, 14, 5, false}),
                         variant_name);
INSTANTIATE_TEST_SUITE_P(Chains, PhdSession, ::testing::ValuesIn(kChained), variant_name);
INSTANTIATE_TEST_SUITE_P(Chains, PhdChainSession, ::testing::ValuesIn(kChained), variant_name);

TEST(PhdSession, KvCacheBytesAreTheOrdinaryModelsPlusTheRing) {
  for (bool air : {false, true}) {
    ModelConfig plain = tiny_config({1, 1}, air, air ? 2 : 0);
    plain.max_seq_len = 64;
    Model ordinary(plain);
    ordinary.init_random(1);
    auto prompt = random_tokens(40, plain.vocab_size, 2);
    const size_t width = ordinary.layout().kv.total();
    for (ModelVariant v : {ModelVariant{{1, 1}, air, 0, false, 4, 0, 0, false},
                           ModelVariant{{1, 1}, air, 0, false, 3, 16, 0, false},
                           ModelVariant{{1, 1}, air, 0, false, 2, 16, 32, false}}) {
      InferenceSession base(ordinary);
      base.prefill(prompt, 2);
      const size_t bytes = base.cache().bytes_used(ordinary.layout().kv);
      v.n_kv_heads = air ? 2 : 0;
      const ModelConfig c = v.config(64);
      Model m(c);
      m.init_random(1);
      InferenceSession s(m);
      s.prefill(prompt, 2);
      const size_t ring = 2 * sizeof(float) * c.n_layers * (size_t)v.W * width;
      // 40 positions: the ring is full (CSWA: 8 positions into the second chunk of 32, whose
      // 8*(K-1) = 8 hidden tokens it holds).
      const size_t held = v.C > 0 ? 2 * sizeof(float) * c.n_layers * 8 * width : ring;
      EXPECT_EQ(s.cache().bytes_used(m.layout().kv), bytes + held) << c.phd.name();
      s.decode(3, 2);
      base.decode(3, 2);
      // One more position in the cache; CSWA's ring one more hidden token (9 of W = 16).
      const size_t token = 2 * sizeof(float) * c.n_layers * width;
      EXPECT_EQ(s.cache().bytes_used(m.layout().kv),
                base.cache().bytes_used(ordinary.layout().kv) + held + (v.C > 0 ? token : 0))
          << c.phd.name();
      EXPECT_EQ(s.cache().ring_count, v.C > 0 ? 9 : v.W);
      // The originals' cache is exactly an ordinary model's.
      EXPECT_EQ(s.cache().capacity, base.cache().capacity);
      EXPECT_EQ(s.cache().width, base.cache().width);
    }
  }
}

// The ring holds one pass's hidden tokens: sized for every position a pass could hold, it took
// ~48% of the cache of a 1024-token model. Passes run at most 32 positions with their copies
// (or what a bounded prefill needs, if more) now, so logits of every position (and every
// copy's prefill) cross several passes.
TEST(PhdSession, TheRingIsSmallAndAllLogitsCrossPasses) {
  for (const ModelVariant& v : {ModelVariant{{1}, false, 0, false, 2, 0, 0, false},
                                ModelVariant{{1, 1}, true, 2, false, 3, 5, 0, false},
                                ModelVariant{{1}, false, 0, false, 4, 3, 40, true}}) {
    const ModelConfig c = v.config(200);
    Model model(c);
    model.init_random(11);
    for (size_t i = 0; i < model.params().size(); ++i) model.params().values()[i] *= 3.0f;
    const int T = 170, V = c.vocab_size, k = c.n_chains();
    const auto tokens = random_tokens(T, V, 6);
    std::vector<float> full((size_t)T * V), all((size_t)T * V);
    model.logits(tokens.data(), 1, T, k, full.data());
    InferenceSession s(model);
    EXPECT_LE(s.cache().ring_capacity, 2 * v.W + (v.K - 1) * std::max(32, v.C)) << c.phd.name();
    s.append(tokens.data(), T, k, all.data());
    EXPECT_LE(max_abs_diff(all.data(), full.data(), T * V), 1e-4) << c.phd.name();
    // The paper's prefill of every copy, and the decoding after it.
    InferenceSession every(model);
    every.set_bounded_prefill(false);
    const float* l = every.prefill(std::vector<int>(tokens.begin(), tokens.begin() + 150), k);
    EXPECT_LE(max_abs_diff(l, full.data() + (size_t)149 * V, V), 1e-4) << c.phd.name();
    for (int t = 150; t < T; ++t) {
      l = every.decode(tokens[t], k);
      ASSERT_LE(max_abs_diff(l, full.data() + (size_t)t * V, V), 1e-4)
          << c.phd.name() << " t " << t;
    }
  }
}

TEST(PhdSession, CswaEmptiesTheRingAtEveryChunkBoundary) {
  const ModelConfig c = ModelVariant{{1}, false, 0, false, 3, 4, 5, false}.config(48);
  Model model(c);
  model.init_random(2);
  InferenceSession s(model);
  s.prefill(random_tokens(3, c.vocab_size, 1), 1);
  for (int p = 3; p < 17; ++p) {
    s.decode(p % c.vocab_size, 1);
    // Position p starts chunk p/5: the ring holds the hidden tokens of positions
    // [5*(p/5), p] of it, at most W = 4.
    EXPECT_EQ(s.cache().ring_count, std::min(4, (p % 5 + 1) * 2)) << "after position " << p;
    EXPECT_EQ(s.cache().ring_first + s.cache().ring_count, (long)(p + 1) * 2);
  }
}

TEST(PhdSession, HiddenPositionsOfBoundedPrefill) {
  // SPEC B3: PHD the last position; CSWA the last chunk (or the receptive-field bound if
  // smaller); SWA ceil(L*R/(K-1)) + 1 with R = max(W, K-2).
  auto positions = [](int K, int W, int C, int end) {
    ModelConfig c = ModelVariant{{1}, false, 0, false, K, W, C, false}.config(512);
    Model m(c);
    InferenceSession s(m, 4);
    return s.phd_hidden_positions(end);
  };
  EXPECT_EQ(positions(4, 0, 0, 100), 1);
  EXPECT_EQ(positions(2, 16, 0, 300), 2 * 16 / 1 + 1);  // L = 2 layers
  EXPECT_EQ(positions(4, 16, 0, 300), (2 * 16 + 2) / 3 + 1);
  EXPECT_EQ(positions(8, 2, 0, 300), (2 * 6 + 6) / 7 + 1);  // R = K-2 = 6
  EXPECT_EQ(positions(2, 16, 0, 20), 20);
  EXPECT_EQ(positions(2, 16, 32, 70), 6);                   // the last chunk: positions 64..69
  EXPECT_EQ(positions(4, 16, 32, 100), 4);                  // positions 96..99
  EXPECT_EQ(positions(4, 1, 32, 95), (2 * 2 + 2) / 3 + 1);  // R = 2: the bound is smaller
}

}  // namespace
}  // namespace chainlm
