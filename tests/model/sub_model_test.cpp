// The sub-model of the first k chains as a model of its own (model/sub_model.h): for CoLM,
// CoLM-Air, GQA and PHD models, its logits equal sub-model k's of the source bit for bit, its
// sub-models equal the source's smaller ones, and it holds only the first k chains' weights.
#include "model/sub_model.h"

#include <gtest/gtest.h>

#include "model/checkpoint.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

std::vector<float> logits_of(Model& m, int k, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), k, out.data());
  return out;
}

TEST(SubModel, LogitsAreSubModelKsBitForBit) {
  struct Case {
    std::vector<int> chains;
    bool kv_share;
    int kv_heads, phd_repeat;
  };
  for (const Case& cs : {Case{{2, 1, 1}, false, 0, 1}, Case{{2, 1, 1}, true, 2, 1}, Case{{1, 1, 2}, false, 4, 1},
                         Case{{1, 1}, true, 2, 2}}) {
    ModelConfig c = test::tiny_config(cs.chains, cs.kv_share, cs.kv_heads);
    c.phd.repeat = cs.phd_repeat;
    validate_config(c, "test");
    Model m(c);
    test::randomize_trained_like(m, 3);
    const auto tokens = test::random_tokens(12, c.vocab_size, 4);
    for (int k = 1; k <= c.n_chains(); ++k) {
      auto sub = extract_sub_model(m, k);
      EXPECT_EQ(sub->config().n_chains(), k);
      EXPECT_EQ(sub->config().dim, m.layout().dim.prefix(k));
      EXPECT_EQ(sub->config().kv_share, c.kv_share);
      EXPECT_EQ((long)sub->params().numel(), (long)m.num_params(k)) << "k=" << k;
      for (int j = 1; j <= k; ++j)
        EXPECT_EQ(logits_of(*sub, j, tokens), logits_of(m, j, tokens)) << "k=" << k << " j=" << j;
    }
    EXPECT_THROW(extract_sub_model(m, 0), Error);
    EXPECT_THROW(extract_sub_model(m, c.n_chains() + 1), Error);
  }
}

TEST(SubModel, RefusesQuantizedSources) {
  ModelConfig c = test::llama_config(false, 64, 96, 4);
  Model m(c);
  m.init_random(1);
  m.quantize_weights(QuantType::kQ8_0);
  EXPECT_THROW(extract_sub_model(m, 1), Error);
}

}  // namespace
}  // namespace chainlm
