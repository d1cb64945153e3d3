#pragma once
// The KV cache of one sequence: K and V rows of every layer for positions [0, capacity).
//   k, v are (L, capacity, width) with width = Hkv*hd (the model's whole KV width).
// CoLM keeps per-chain KV heads: chain block i (columns kv.begin(i)..kv.end(i)) is valid for
// positions < filled[i], so a sub-model with fewer chains leaves the later chains behind and
// growing the chain count later knows what is missing. CoLM-Air has one block, computed from
// chain 1 and shared by every sub-model.
#include <cstddef>
#include <vector>

#include "model/chain_layout.h"

namespace chainlm {

struct KVCache {
  int n_layers = 0, capacity = 0, width = 0;
  std::vector<float> k, v;
  std::vector<int> filled;  // per KV block: positions whose K/V are valid

  KVCache() = default;
  KVCache(int n_layers, int capacity, const ChainLayout& layout)
      : n_layers(n_layers), capacity(capacity), width(layout.kv.total()),
        k((size_t)n_layers * capacity * width), v((size_t)n_layers * capacity * width),
        filled(layout.kv.n(), 0) {}

  float* k_layer(int l) { return k.data() + (size_t)l * capacity * width; }
  float* v_layer(int l) { return v.data() + (size_t)l * capacity * width; }
  // Bytes holding valid K/V (what a decode step reads), and bytes allocated.
  size_t bytes_used(const ChainSplit& kv) const {
    size_t cols = 0;
    for (int i = 0; i < kv.n(); ++i) cols += (size_t)kv.width(i) * filled[i];
    return 2 * sizeof(float) * (size_t)n_layers * cols;
  }
  size_t bytes_allocated() const { return 2 * sizeof(float) * (size_t)n_layers * capacity * width; }
};

}  // namespace chainlm
