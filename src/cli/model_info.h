#pragma once
// What a model is, in a line or as JSON: shapes, chains, parameters per chain and per
// sub-model, KV sharing. Shared by `chainlm info`, `expand` and `export`.
#include <nlohmann/json.hpp>
#include <string>

#include "model/model.h"

namespace chainlm::cli {

// "chains [8,8] CoLM-Air, dim 128, 16 heads (4 KV), ffn 344, 5 layers, vocab 512, 0.53M parameters"
std::string describe_model(const Model& model);

// Parameters owned by each chain (index i): its blocks, its columns of every D-wide tensor,
// and (CoLM-Air) the shared K/V projections for chain 1. They sum to params().numel().
std::vector<long> params_per_chain(const Model& model);

// Config, per-chain and per-sub-model figures (parameters, widths, heads, KV heads, KV cache
// bytes per token) and, when the model has frozen parameters, the trainable count.
nlohmann::json model_info_json(const Model& model);

}  // namespace chainlm::cli
