#pragma once
// Small models for tests.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "error_of.h"
#include "model/model.h"

namespace chainlm::test {

inline ModelConfig tiny_config(std::vector<int> chains, bool kv_share, int n_kv_heads = 0) {
  ModelConfig c;
  int s = 0;
  for (int ci : chains) s += ci;
  c.n_heads = 2 * s;  // m = 2 heads per chain unit
  c.dim = 8 * c.n_heads;
  c.ffn_dim = 12 * s;
  c.n_layers = 2;
  c.n_kv_heads = n_kv_heads > 0 ? n_kv_heads : c.n_heads;
  c.vocab_size = 37;
  c.chains = chains;
  c.kv_share = kv_share;
  c.max_seq_len = 32;
  validate_config(c, "test");
  return c;
}

// A plain LLaMA (one chain) with GQA (heads / 2 KV heads), rope_theta 500000, norm_eps 1e-6:
// what the HF and GGUF interchange tests write and read.
inline ModelConfig llama_config(bool tie, int dim = 48, int ffn = 40, int n_heads = 6) {
  ModelConfig c;
  c.dim = dim;
  c.n_heads = n_heads;
  c.n_kv_heads = 2;
  c.ffn_dim = ffn;
  c.n_layers = 2;
  c.vocab_size = 37;
  c.tie_embeddings = tie;
  c.max_seq_len = 32;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  validate_config(c, "test");
  return c;
}

// Trained-looking weights: larger than the init, gains away from 1.
inline void randomize_trained_like(Model& m, uint64_t seed) {
  m.init_random(seed);
  Rng rng(seed + 1);
  for (const ParamInfo& p : m.params().infos()) {
    float* v = m.params().values() + p.offset;
    for (size_t e = 0; e < p.numel(); ++e) v[e] = p.shape.size() == 1 ? 1.0f + 0.3f * rng.normal() : 0.2f * rng.normal();
  }
}

inline std::vector<int> random_tokens(int n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> t(n);
  for (auto& x : t) x = (int)rng.below(vocab);
  return t;
}

// Every parameter tensor's backward (3 random elements each) against central differences of the
// multi-chain loss, with every sub-model weighted (the segmented head) and an ignored target.
inline void expect_gradients_match_finite_differences(const ModelConfig& c) {
  const int n = c.n_chains(), B = 2, T = 6;
  Model m(c);
  m.init_random(31);
  // Larger weights than the default init make gradients large against float noise.
  for (size_t i = 0; i < m.params().size(); ++i) m.params().values()[i] *= 8.0f;
  for (int i = 0; i < (int)m.params().infos().size(); ++i)
    if (m.params().info(i).shape.size() == 1)
      for (size_t e = 0; e < m.params().info(i).numel(); ++e) m.params().value(i)[e] = 1.0f + 0.1f * (float)(e % 3);
  auto tokens = random_tokens(B * T, c.vocab_size, 5);
  auto targets = random_tokens(B * T, c.vocab_size, 6);
  targets[3] = -1;  // an ignored target
  std::vector<float> w(n, 1.0f);  // every prefix weighted: exercises the segmented head
  w[0] = 0.5f;
  m.params().zero_grads();
  m.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f);
  std::vector<float> grads(m.params().grads(), m.params().grads() + m.params().size());
  auto loss_at = [&]() {
    m.params().zero_grads();
    return m.forward_backward(tokens.data(), targets.data(), B, T, w, 1.0f).loss;
  };
  Rng rng(8);
  int checked = 0;
  for (int i = 0; i < (int)m.params().infos().size(); ++i) {
    const ParamInfo& p = m.params().info(i);
    for (int trial = 0; trial < 3; ++trial) {
      const size_t e = p.offset + rng.below(p.numel());
      float* v = m.params().values() + e;
      const float x0 = *v, h = 1e-2f * std::max(1.0f, std::fabs(x0));
      *v = x0 + h;
      const double lp = loss_at();
      *v = x0 - h;
      const double lm = loss_at();
      *v = x0;
      const double num = (lp - lm) / (2.0 * h);
      EXPECT_NEAR(grads[e], num, 2e-3 + 3e-2 * std::fabs(num)) << p.name << " element " << e - p.offset;
      ++checked;
    }
  }
  EXPECT_GT(checked, 10);
}

}  // namespace chainlm::test
