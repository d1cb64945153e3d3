#pragma once
// Chain expansion (SPEC A6): a trained model becomes the first chains of a bigger one whose
// logits, before any training, equal the base model's.
#include <cstdint>
#include <memory>
#include <vector>

#include "model/model.h"

namespace chainlm {

struct ExpandOptions {
  std::vector<int> add_chains;  // query heads of every new chain
  bool kv_share = false;        // the expanded model is CoLM-Air
  uint64_t seed = 1;            // for the new blocks' random init
};

// The expanded config. Chain entries count query heads (m = 1): a 1-chain base with H heads
// becomes chains [H, a1, a2, ...]; a multi-chain base keeps its chains (rewritten in heads,
// [m*c1, ..., m*cn]) and appends the new ones, and must already be of the requested kind
// (kv_share). head_dim, layers, vocabulary, RoPE and norm settings are the base's; dim and
// ffn_dim grow by sum(new heads)/H; KV heads follow SPEC A1: CoLM-Air keeps the base's
// n_kv_heads, CoLM grows them in proportion. The result is never tied (see expand_model).
// Throws naming the SPEC A1 rule the chain list breaks.
ModelConfig expanded_config(const ModelConfig& base, const ExpandOptions& options);

// Every base tensor block keeps its values in the expanded model (a 1-chain base's blocks
// become the chain-1 blocks; D-wide tensors keep their first D columns); new blocks, new
// embedding columns and new norm gains get Model::init_random's initialization; the new
// chains' output-head columns are zero. By chain causality the expanded model's logits then
// equal the base's. A tied base is untied: output.weight starts as a copy of the embedding,
// so new embedding columns can be random while new head columns are zero.
std::unique_ptr<Model> expand_model(const Model& base, const ExpandOptions& options);

}  // namespace chainlm
