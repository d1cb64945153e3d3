// Chain expansion (SPEC A6): the expanded model reproduces the base model's logits exactly
// before training, for a real llama2.c model and for random bases.
#include "model/expand.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <sstream>

#include "model/checkpoint.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using test::random_tokens;

const std::string kStories = CHAINLM_SOURCE_DIR "/../shared/data/stories260K/stories260K.bin";

double max_logit_difference(Model& base, Model& expanded, int T, uint64_t seed) {
  const int V = base.config().vocab_size;
  auto tokens = random_tokens(T, V, seed);
  std::vector<float> a((size_t)T * V), b((size_t)T * V);
  base.logits(tokens.data(), 1, T, base.config().n_chains(), a.data());
  expanded.logits(tokens.data(), 1, T, expanded.config().n_chains(), b.data());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

ModelConfig llama_config(int heads, int kv_heads, bool tie) {
  ModelConfig c;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.dim = 6 * heads;  // head_dim 6
  c.ffn_dim = 5 * heads;
  c.n_layers = 2;
  c.vocab_size = 41;
  c.tie_embeddings = tie;
  c.max_seq_len = 24;
  validate_config(c, "test");
  return c;
}

struct Case {
  ModelConfig base;
  std::vector<int> add;
  bool kv_share;
  std::string name;
};

class ExpandRandomBase : public ::testing::TestWithParam<Case> {};

TEST_P(ExpandRandomBase, LogitsEqualTheBaseModel) {
  const Case& tc = GetParam();
  Model base(tc.base);
  base.init_random(3);
  // Trained-looking weights: larger than the init and non-unit gains.
  Rng rng(4);
  for (size_t i = 0; i < base.params().size(); ++i) base.params().values()[i] *= 10.0f;
  for (const ParamInfo& p : base.params().infos())
    if (p.shape.size() == 1)
      for (size_t e = 0; e < p.numel(); ++e) base.params().values()[p.offset + e] = 1.0f + 0.3f * rng.normal();
  auto expanded = expand_model(base, ExpandOptions{tc.add, tc.kv_share, 7});
  const ModelConfig& c = expanded->config();
  EXPECT_EQ(c.n_chains(), tc.base.n_chains() + (int)tc.add.size());
  EXPECT_EQ(c.head_dim(), tc.base.head_dim());
  EXPECT_EQ(c.kv_share, tc.kv_share);
  EXPECT_FALSE(c.tie_embeddings);
  EXPECT_EQ(c.phd.repeat, tc.base.phd.repeat);
  EXPECT_EQ(c.phd.window, tc.base.phd.window);
  EXPECT_LE(max_logit_difference(base, *expanded, 17, 5), 1e-5);
  // Every sub-model holding the base's chains reproduces it too; the new chains are live.
  const int nb = tc.base.n_chains();
  const int V = c.vocab_size, T = 9;
  auto tokens = random_tokens(T, V, 6);
  std::vector<float> a((size_t)T * V), b((size_t)T * V);
  base.logits(tokens.data(), 1, T, nb, a.data());
  expanded->logits(tokens.data(), 1, T, nb, b.data());
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 1e-5);
  // The new head columns are zero and nothing else in the new chains is.
  const ParamStore& ps = expanded->params();
  const float* head = ps.value(ps.find("output.weight"));
  const int D0 = tc.base.dim;
  for (int r = 0; r < V; ++r)
    for (int j = D0; j < c.dim; ++j) ASSERT_EQ(head[(size_t)r * c.dim + j], 0.0f);
  const float* new_block = ps.value(ps.find("layers.0.attention.wq.chain" + std::to_string(nb) + ".weight"));
  EXPECT_NE(new_block[0], 0.0f);
}

std::vector<Case> cases() {
  std::vector<Case> v;
  ModelConfig multi_colm = test::tiny_config({1, 1}, false, 2);   // heads [2, 2], 1 KV each
  ModelConfig multi_air = test::tiny_config({1, 1}, true, 2);     // heads [2, 2], 2 shared KV
  ModelConfig multi_air_tied = multi_air;
  multi_air_tied.tie_embeddings = true;
  v.push_back({llama_config(4, 2, false), {4}, true, "Air_gqa"});
  v.push_back({llama_config(4, 2, false), {4}, false, "CoLM_gqa"});
  v.push_back({llama_config(4, 2, true), {4}, true, "Air_gqa_tied"});
  v.push_back({llama_config(4, 2, true), {2}, false, "CoLM_gqa_tied"});
  v.push_back({llama_config(4, 4, false), {2, 2, 4}, false, "CoLM_three_new"});
  v.push_back({llama_config(4, 1, true), {1, 3}, true, "Air_mqa_two_new"});
  v.push_back({multi_colm, {2}, false, "CoLM_multi_chain_base"});
  v.push_back({multi_air_tied, {4, 2}, true, "Air_multi_chain_base_tied"});
  ModelConfig phd = llama_config(4, 2, false);  // PHD-SWA-2-3 stays what it is
  phd.phd.repeat = 2;
  phd.phd.window = 3;
  v.push_back({phd, {4}, true, "Air_gqa_phd_swa"});
  return v;
}

INSTANTIATE_TEST_SUITE_P(All, ExpandRandomBase, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(Expand, Stories260KLogitsAreUnchanged) {
  if (!std::filesystem::exists(kStories)) GTEST_SKIP() << kStories << " is not present";
  auto base = load_model(kStories);
  ASSERT_TRUE(base->config().tie_embeddings);  // the shared classifier gets untied
  for (bool kv_share : {true, false}) {
    auto expanded = expand_model(*base, ExpandOptions{{8}, kv_share, 1});
    const ModelConfig& c = expanded->config();
    EXPECT_EQ(c.chains, (std::vector<int>{8, 8}));
    EXPECT_EQ(c.dim, 128);
    EXPECT_EQ(c.n_heads, 16);
    EXPECT_EQ(c.ffn_dim, 344);
    EXPECT_EQ(c.n_kv_heads, kv_share ? 4 : 8);
    const double diff = max_logit_difference(*base, *expanded, 40, 9);
    EXPECT_LE(diff, 1e-5) << (kv_share ? "CoLM-Air" : "CoLM");
  }
  // Two new chains of 4 heads (Air: 4 is a multiple of the 4 KV heads).
  auto expanded = expand_model(*base, ExpandOptions{{4, 4}, true, 2});
  EXPECT_EQ(expanded->config().chains, (std::vector<int>{8, 4, 4}));
  EXPECT_LE(max_logit_difference(*base, *expanded, 30, 10), 1e-5);
}

void expect_error(const Model& base, const ExpandOptions& o, const std::string& needle) {
  try {
    expand_model(base, o);
    ADD_FAILURE() << "expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Expand, RejectsChainListsThatBreakSpecA1) {
  // stories260K's shape: 8 heads, 4 KV heads, ffn 172.
  ModelConfig c;
  c.dim = 64;
  c.n_heads = 8;
  c.n_kv_heads = 4;
  c.ffn_dim = 172;
  c.n_layers = 1;
  c.vocab_size = 16;
  Model base(c);
  base.init_random(1);
  // CoLM-Air: 3 or 6 query heads cannot share the base's 4 KV heads evenly.
  expect_error(base, ExpandOptions{{3}, true, 1}, "must be a multiple of n_kv_heads (4)");
  expect_error(base, ExpandOptions{{6}, true, 1}, "must be a multiple of n_kv_heads (4)");
  // CoLM: 4 KV heads per 8 query heads; a 1-head chain would own half a KV head.
  expect_error(base, ExpandOptions{{1}, false, 1},
               "a new chain of 1 head would own 4*1/8 KV heads, not an integer");
  expect_error(base, ExpandOptions{{2, 1}, false, 1}, "4*1/8 KV heads, not an integer");
  EXPECT_NO_THROW(expand_model(base, ExpandOptions{{2}, false, 1}));  // ffn 172*2/8 = 43
  // The FFN rule: ffn 22 over 4 heads gives a 1-head chain 5.5 FFN columns.
  ModelConfig f = c;
  f.n_heads = f.n_kv_heads = 4;
  f.ffn_dim = 22;
  Model base_f(f);
  expect_error(base_f, ExpandOptions{{1}, false, 1}, "ffn_dim*1/n_heads = 22*1/4");
  expect_error(base, ExpandOptions{{}, true, 1}, "lists no chain");
  expect_error(base, ExpandOptions{{0}, true, 1}, "positive");
  expect_error(base, ExpandOptions{{-4}, false, 1}, "positive");
  // A multi-chain base keeps its KV layout.
  Model air(test::tiny_config({1, 1}, true, 2));
  expect_error(air, ExpandOptions{{2}, false, 1}, "pass --kv-share");
  Model colm(test::tiny_config({1, 1}, false, 2));
  expect_error(colm, ExpandOptions{{2}, true, 1}, "do not pass --kv-share");
}

TEST(Expand, CoLMKvHeadsMustStayWhole) {
  ModelConfig c = llama_config(4, 2, false);  // 2 query heads per KV head
  c.ffn_dim = 8;                              // 8*c/4 whole for every even c
  Model base(c);
  base.init_random(1);
  try {
    expand_model(base, ExpandOptions{{6}, false, 1});  // 2*6/4 = 3 KV heads: fine
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
  }
  ModelConfig odd = c;
  odd.ffn_dim = 4 * 5;
  Model base2(odd);
  // 1 new head with CoLM: ffn 20*1/4 = 5 is whole, but 2*1/4 KV heads is not.
  expect_error(base2, ExpandOptions{{1}, false, 1}, "2*1/4 KV heads, not an integer");
}

}  // namespace
}  // namespace chainlm
