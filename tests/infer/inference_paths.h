#pragma once
// Shared by the tests of inference weight forms (bf16, fp32 panels): a model's logits on the
// incremental paths (a chunked prefill of the first tokens, then one token at a time) against
// reference full-forward logits, within a tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../model/model_variant.h"
#include "infer/session.h"

namespace chainlm::test {

inline double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, (double)std::fabs(x));
  return m;
}

// want: (tokens.size(), V) logits of sub-model k from a full forward.
inline void expect_session_near(const Model& model, const std::vector<int>& tokens, int k,
                                const std::vector<float>& want, double tol, int prefill = 9) {
  const int V = model.config().vocab_size, T = (int)tokens.size();
  InferenceSession s(model, 4);
  std::vector<float> pre((size_t)prefill * V);
  s.append(tokens.data(), prefill, k, pre.data());
  for (size_t i = 0; i < pre.size(); ++i) ASSERT_NEAR(pre[i], want[i], tol) << "prefill k=" << k;
  for (int t = prefill; t < T; ++t) {
    const float* l = s.decode(tokens[t], k);
    for (int v = 0; v < V; ++v)
      ASSERT_NEAR(l[v], want[(size_t)t * V + v], tol) << "decode k=" << k << " t=" << t;
  }
}

// A fresh model of m's shape given m's weights (copy_weights_from) is the same model: the same
// logits, bit for bit.
inline void expect_copy_is_the_same_model(Model& m) {
  const ModelConfig& c = m.config();
  Model copy(c);
  copy.copy_weights_from(m);
  const int T = 8, k = c.n_chains();
  const std::vector<int> tokens = random_tokens(T, c.vocab_size, 2);
  std::vector<float> a((size_t)T * c.vocab_size), b(a.size());
  m.logits(tokens.data(), 1, T, k, a.data());
  copy.logits(tokens.data(), 1, T, k, b.data());
  EXPECT_EQ(a, b);
  EXPECT_EQ(copy.weight_bytes(), m.weight_bytes());
}

}  // namespace chainlm::test
