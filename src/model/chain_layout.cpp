#include "model/chain_layout.h"

namespace chainlm {

ChainLayout::ChainLayout(const ModelConfig& c)
    : n(c.n_chains()), head_dim(c.head_dim()), kv_share(c.kv_share) {
  dim = ChainSplit(c.dim, c.chains);
  ffn = ChainSplit(c.ffn_dim, c.chains);
  heads = ChainSplit(c.n_heads, c.chains);
  const int kv_width = c.n_kv_heads * head_dim;
  if (kv_share) {
    kv = ChainSplit::single(kv_width);
    // K and V read chain 1 of the normed input only.
    ChainSplit in1 = ChainSplit::single(dim.width(0));
    wk = wv = ChainLinear{in1, kv};
    for (int i = 0; i < n; ++i) {
      const int hi = heads.width(i), group = hi / c.n_kv_heads;
      for (int t = 0; t < hi; ++t) kv_head_of.push_back(t / group);
    }
  } else {
    kv = ChainSplit(kv_width, c.chains);
    wk = wv = ChainLinear{dim, kv};
    const int group = c.n_heads / c.n_kv_heads;
    for (int h = 0; h < c.n_heads; ++h) kv_head_of.push_back(h / group);
  }
  wq = wo = ChainLinear{dim, dim};
  w1 = w3 = ChainLinear{dim, ffn};
  w2 = ChainLinear{ffn, dim};
}

uint64_t parameter_count(const ModelConfig& c) {
  const ChainLayout L(c);
  // Block i of a Chain-of-Linear is (out.width(i), in.end(i)); Model stores one tensor each.
  auto blocks = [](const ChainLinear& cl, int count) {
    uint64_t floats = 0;
    for (int i = 0; i < count; ++i) floats += (uint64_t)cl.out.width(i) * (uint64_t)cl.in.end(i);
    return floats;
  };
  const int kv_blocks = L.kv_share ? 1 : L.n;
  const uint64_t D = (uint64_t)c.dim, V = (uint64_t)c.vocab_size;
  const uint64_t per_layer = 2 * D + blocks(L.wq, L.n) + blocks(L.wk, kv_blocks) +
                             blocks(L.wv, kv_blocks) + blocks(L.wo, L.n) + blocks(L.w1, L.n) +
                             blocks(L.w2, L.n) + blocks(L.w3, L.n);
  return V * D * (c.tie_embeddings ? 1 : 2) + (uint64_t)c.n_layers * per_layer + D;
}

}  // namespace chainlm
