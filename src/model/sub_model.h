#pragma once
// The sub-model of the first k chains as a model of its own (`chainlm quantize --chains k`):
// chains c_1..c_k, the chain blocks of those chains as they are, the D-wide tensors (embedding,
// norms, head) cut to their first D_k columns. Its logits are bit for bit those of sub-model k
// of the source (tests/model/sub_model_test.cpp), and it reads only those weights.
#include <memory>

#include "model/model.h"

namespace chainlm {

// The config of sub-model k: the first k chains, dim/heads/ffn/KV heads of those chains (the
// shared K/V of CoLM-Air whole), everything else unchanged. Throws unless 1 <= k <= chains.
ModelConfig sub_model_config(const ModelConfig& c, int k);

// Sub-model k of an fp32 model (not quantized, not bf16-only) with its weights.
std::unique_ptr<Model> extract_sub_model(const Model& model, int k);

}  // namespace chainlm
