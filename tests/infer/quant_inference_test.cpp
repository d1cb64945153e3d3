// Inference with block-quantized weights (Model::quantize_weights, docs/quantization.md) on
// every path: the incremental session (prefill in chunks, then one token at a time, CoLM-Air
// chain-1 prefill, PHD decode steps) gives the quantized full forward's logits. Each path
// quantizes every activation row to Q8_0 on its own, so the two differ by fp32 summation order,
// which can move an activation across a rounding boundary: one Q8_0 step (1/127 of its block's
// largest value) in one element. The tolerance allows a few such steps, far below what a wrong
// weight or a skipped chain would cost.
#include <gtest/gtest.h>

#include <cmath>

#include "../model/model_variant.h"
#include "infer/session.h"

namespace chainlm {
namespace {

using test::ModelVariant;
using test::random_tokens;
using test::variant_name;

class QuantVariants : public ::testing::TestWithParam<ModelVariant> {};

TEST_P(QuantVariants, SessionMatchesTheFullForwardOnEveryPath) {
  const ModelConfig c = GetParam().config(40);
  for (QuantType t : {QuantType::kQ8_0, QuantType::kQ4_0}) {
    Model q(c);
    q.init_random(7);
    for (const char* name : {"tok_embeddings.weight", "output.weight"}) {
      const int i = q.params().find(name);
      if (i < 0) continue;
      for (size_t e = 0; e < q.params().info(i).numel(); ++e) q.params().value(i)[e] *= 30.0f;
    }
    q.quantize_weights(t);
    const int T = 21, V = c.vocab_size;
    auto tokens = random_tokens(T, V, 3);
    for (int k = 1; k <= c.n_chains(); ++k) {
      std::vector<float> full((size_t)T * V);
      q.logits(tokens.data(), 1, T, k, full.data());
      double scale = 0;
      for (float x : full) scale = std::max(scale, (double)std::fabs(x));
      ASSERT_GT(scale, 0.2);
      const double tol = 0.02 * scale;
      InferenceSession s(q, 4);
      std::vector<float> pre((size_t)9 * V);
      s.append(tokens.data(), 9, k, pre.data());
      for (size_t i = 0; i < pre.size(); ++i)
        ASSERT_NEAR(pre[i], full[i], tol) << quant_type_name(t) << " prefill k=" << k;
      for (int p = 9; p < T; ++p) {
        const float* l = s.decode(tokens[p], k);
        for (int v = 0; v < V; ++v)
          ASSERT_NEAR(l[v], full[(size_t)p * V + v], tol)
              << quant_type_name(t) << " decode k=" << k << " t=" << p;
      }
      // CoLM-Air's chain-1 prefill on a fresh session: the next-token logits agree too.
      InferenceSession air(q, 4);
      const std::vector<int> prompt(tokens.begin(), tokens.begin() + 12);
      const float* l = air.prefill(prompt, k, true);
      for (int v = 0; v < V; ++v)
        ASSERT_NEAR(l[v], full[(size_t)11 * V + v], tol)
            << quant_type_name(t) << " chain-1 prefill k=" << k;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, QuantVariants,
                         ::testing::Values(ModelVariant{{1}, false, 0},
                                           ModelVariant{{1, 1}, true, 2},
                                           ModelVariant{{1, 2, 1}, false, 4, true},
                                           ModelVariant{{1, 1}, true, 2, false, 3, 2, 4}),
                         variant_name);

}  // namespace
}  // namespace chainlm
