#pragma once
// Small models for tests.
#include <memory>

#include "core/error.h"
#include "core/rng.h"
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

inline std::vector<int> random_tokens(int n, int vocab, uint64_t seed) {
  Rng rng(seed);
  std::vector<int> t(n);
  for (auto& x : t) x = (int)rng.below(vocab);
  return t;
}

}  // namespace chainlm::test
