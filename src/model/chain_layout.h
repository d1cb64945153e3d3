#pragma once
// Where every chain lives in every vector and weight of a model (SPEC A1), derived once
// from the config.
#include <cstdint>
#include <vector>

#include "kernels/chain_linear.h"
#include "model/config.h"

namespace chainlm {

struct ChainLayout {
  int n = 1;          // chains
  int head_dim = 0;
  ChainSplit dim;     // residual stream and attention (q, o) width
  ChainSplit ffn;     // FFN inner width
  ChainSplit heads;   // query heads
  ChainSplit kv;      // K/V width: per chain for CoLM; one block of Hkv*hd from chain 1 for Air
  ChainLinear wq, wk, wv, wo, w1, w2, w3;
  std::vector<int> kv_head_of;  // query head -> KV head (SPEC A1 mappings)
  bool kv_share = false;

  explicit ChainLayout(const ModelConfig& c);

  int active_heads(int k) const { return heads.prefix(k); }
  // K/V width used by sub-model k: all of it for Air; the first k chains' heads otherwise.
  int active_kv_width(int k) const { return kv_share ? kv.total() : kv.prefix(k); }
  // Number of chain blocks of the K/V projections (1 for Air).
  int kv_blocks(int k) const { return kv_share ? 1 : k; }
};

// Floats in every parameter tensor of a model with config c, unpadded (what model.safetensors
// holds), worked out from the layout without building the model: O(chains), no allocation
// beyond the layout. c must be valid; validate_config's size bounds keep the count far from
// overflowing 64 bits.
uint64_t parameter_count(const ModelConfig& c);

}  // namespace chainlm
