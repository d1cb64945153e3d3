#include "infer/session.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "../model/model_variant.h"

namespace chainlm {
namespace {

using test::random_tokens;
using test::ModelVariant;
using test::tiny_config;
using test::variant_name;

class SessionVariants : public ::testing::TestWithParam<ModelVariant> {
 protected:
  ModelConfig config() const { return GetParam().config(40); }
};

double max_abs_diff(const float* a, const float* b, int n) {
  double m = 0;
  for (int i = 0; i < n; ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

TEST_P(SessionVariants, IncrementalDecodingMatchesFullForward) {
  const ModelConfig c = config();
  Model model(c);
  model.init_random(7);
  const int T = 23, V = c.vocab_size;
  auto tokens = random_tokens(T, V, 3);
  for (int k = 1; k <= c.n_chains(); ++k) {
    std::vector<float> full((size_t)T * V);
    model.logits(tokens.data(), 1, T, k, full.data());
    // Small chunks force prefill across chunk boundaries too.
    InferenceSession s(model, 4);
    std::vector<float> pre((size_t)9 * V);
    s.append(tokens.data(), 9, k, pre.data());
    EXPECT_LE(max_abs_diff(pre.data(), full.data(), 9 * V), 1e-4) << "prefill, k=" << k;
    for (int t = 9; t < T; ++t) {
      const float* l = s.decode(tokens[t], k);
      ASSERT_LE(max_abs_diff(l, full.data() + (size_t)t * V, V), 1e-4) << "k=" << k << " t=" << t;
    }
  }
}

TEST_P(SessionVariants, ChainScheduleMatchesEachSubModelFromScratch) {
  const ModelConfig c = config();
  Model model(c);
  model.init_random(9);
  const int n = c.n_chains(), T = 20, V = c.vocab_size;
  auto tokens = random_tokens(T, V, 4);
  InferenceSession s(model, 8);
  s.prefill(std::vector<int>(tokens.begin(), tokens.begin() + 5), 1);
  for (int t = 5; t < T; ++t) {
    const int k = 1 + (t * 7 / 3) % n;  // up and down across all sub-models
    const float* l = s.decode(tokens[t], k);
    std::vector<float> ref((size_t)(t + 1) * V);
    model.logits(tokens.data(), 1, t + 1, k, ref.data());
    ASSERT_LE(max_abs_diff(l, ref.data() + (size_t)t * V, V), 1e-4) << "t=" << t << " k=" << k;
  }
}

// A prefill in parts (a server's chunked prefill) ends with the whole prefill's logits: the same
// bits when the budget covers the prompt, and within fp32 rounding in smaller parts.
TEST_P(SessionVariants, PrefillInPartsEndsWithThePrefillsLogits) {
  const ModelConfig c = config();
  Model model(c);
  model.init_random(13);
  const int V = c.vocab_size;
  const std::vector<int> prompt = random_tokens(19, V, 6);
  for (int k = 1; k <= c.n_chains(); ++k) {
    InferenceSession whole(model);
    const float* w = whole.prefill(prompt, k);
    const std::vector<float> want(w, w + V);
    for (int budget : {64, 5, 1}) {
      InferenceSession parts(model);
      const float* got = nullptr;
      int calls = 0;
      while (!got) {
        got = parts.prefill_part(prompt, k, true, budget);
        ASSERT_LE(++calls, 40);
      }
      EXPECT_EQ(parts.tokens(), prompt);
      if (budget >= (int)prompt.size())
        EXPECT_EQ(std::memcmp(got, want.data(), sizeof(float) * V), 0) << "k=" << k;
      else
        EXPECT_LE(max_abs_diff(got, want.data(), V), 1e-4) << "k=" << k << " budget " << budget;
      EXPECT_THROW(parts.prefill_part(prompt, k, true, budget), Error);  // nothing left to prefill
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, SessionVariants,
                         ::testing::Values(ModelVariant{{1}, false, 0}, ModelVariant{{1}, false, 1},
                                           ModelVariant{{1, 1}, false, 0}, ModelVariant{{1, 1}, true, 2},
                                           ModelVariant{{1, 2, 1}, false, 4}, ModelVariant{{1, 2, 1}, true, 2},
                                           ModelVariant{{2, 2, 2, 2}, true, 4}, ModelVariant{{2, 2, 2, 2}, false, 8},
                                           ModelVariant{{1, 2, 1}, true, 2, false, 1, 0, 0, false, true}),
                         variant_name);

TEST(Session, ColmAirChainOnePrefillEqualsFullPrefill) {
  const ModelConfig c = tiny_config({1, 1, 2}, true, 2);
  Model model(c);
  model.init_random(11);
  auto prompt = random_tokens(17, c.vocab_size, 5);
  for (int k = 1; k <= c.n_chains(); ++k) {
    InferenceSession fast(model), full(model);
    std::vector<float> a(c.vocab_size), b(c.vocab_size);
    const float* la = fast.prefill(prompt, k, true);
    std::copy(la, la + c.vocab_size, a.begin());
    const float* lb = full.prefill(prompt, k, false);
    std::copy(lb, lb + c.vocab_size, b.begin());
    EXPECT_LE(max_abs_diff(a.data(), b.data(), c.vocab_size), 1e-5) << "k=" << k;
    // The caches are the same too: K/V depend on chain 1 only.
    const size_t used = (size_t)prompt.size() * fast.cache().width;
    for (int l = 0; l < c.n_layers; ++l)
      for (size_t i = 0; i < used; ++i) {
        ASSERT_NEAR(fast.cache().k[(size_t)l * fast.cache().capacity * fast.cache().width + i],
                    full.cache().k[(size_t)l * full.cache().capacity * full.cache().width + i], 1e-6);
      }
  }
}

TEST(Session, ColmGrowingChainsComputesMissingKv) {
  const ModelConfig c = tiny_config({1, 1}, false, 0);
  Model model(c);
  model.init_random(12);
  InferenceSession s(model);
  auto prompt = random_tokens(6, c.vocab_size, 6);
  s.prefill(prompt, 1);
  EXPECT_FALSE(s.needs_recompute(1));
  EXPECT_TRUE(s.needs_recompute(2));  // chain 2's KV heads were never computed
  s.decode(3, 2);
  EXPECT_FALSE(s.needs_recompute(2));
  EXPECT_EQ(s.cache().filled[1], 7);
}

TEST(Session, ColmAirSwitchesChainsWithoutRecomputing) {
  const ModelConfig c = tiny_config({1, 1, 2}, true, 2);
  Model model(c);
  model.init_random(13);
  InferenceSession s(model);
  s.prefill(random_tokens(6, c.vocab_size, 8), 1);
  for (int k = 1; k <= c.n_chains(); ++k) EXPECT_FALSE(s.needs_recompute(k));
  const std::vector<float> before(s.cache().k.begin(), s.cache().k.end());
  s.decode(4, 3);
  // The prefix's cached K rows are untouched by the switch to 3 chains.
  const size_t prefix = (size_t)6 * s.cache().width;
  for (int l = 0; l < c.n_layers; ++l) {
    const size_t base = (size_t)l * s.cache().capacity * s.cache().width;
    for (size_t i = 0; i < prefix; ++i) ASSERT_EQ(before[base + i], s.cache().k[base + i]);
  }
}

TEST(Session, KvCacheBytesFollowTheLayout) {
  // Air shares one Hkv-head block; CoLM keeps every chain's KV heads.
  const ModelConfig air = tiny_config({1, 1}, true, 2), colm = tiny_config({1, 1}, false, 0);
  Model ma(air), mc(colm);
  ma.init_random(1);
  mc.init_random(1);
  InferenceSession sa(ma), sc(mc);
  auto prompt = random_tokens(5, air.vocab_size, 7);
  sa.prefill(prompt, 2);
  sc.prefill(prompt, 2);
  const int hd = air.dim / air.n_heads;
  EXPECT_EQ(sa.cache().bytes_used(ma.layout().kv), 2u * 4 * air.n_layers * 5 * 2 * hd);
  EXPECT_EQ(sc.cache().bytes_used(mc.layout().kv), 2u * 4 * colm.n_layers * 5 * colm.n_heads * hd);
}

TEST(Session, RejectsBadInput) {
  const ModelConfig c = tiny_config({1, 1}, true, 2);
  Model model(c);
  model.init_random(1);
  InferenceSession s(model);
  std::vector<int> prompt = {1, 2, 3};
  EXPECT_THROW(s.prefill(prompt, 0), Error);
  EXPECT_THROW(s.prefill(prompt, 3), Error);
  EXPECT_THROW(s.prefill({}, 1), Error);
  EXPECT_THROW(s.prefill({1, c.vocab_size}, 1), Error);
  std::vector<int> too_long(c.max_seq_len + 1, 1);
  EXPECT_THROW(s.prefill(too_long, 1), Error);
}

}  // namespace
}  // namespace chainlm
