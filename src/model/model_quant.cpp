// Block-quantized weights of a Model (model.h, docs/quantization.md): which tensors are
// quantized, their blocks, and the forward operands bound to them.
#include <algorithm>
#include <limits>

#include "core/error.h"
#include "model/model.h"

namespace chainlm {

namespace {

constexpr std::size_t kNotQuantized = std::numeric_limits<std::size_t>::max();

// Weight matrices are quantized (rank 2: chain blocks, shared K/V, embedding, head); vectors (the
// RMSNorm gains) stay fp32: a few floats per layer, and RMSNorm runs in fp32 anyway.
bool quantizable(const ParamInfo& p) {
  return p.shape.size() == 2;
}

}  // namespace

bool Model::is_quantized(int param) const {
  return !quant_.empty() && quant_offset_[param] != kNotQuantized;
}

const uint8_t* Model::quantized_blocks(int param) const {
  CHAINLM_CHECK(is_quantized(param), "tensor '", params_.info(param).name, "' is not quantized");
  return quant_.data() + quant_offset_[param];
}

std::string Model::weight_format() const {
  if (quantized()) return quant_type_name(quant_type_);
  return precision_name(precision());
}

double Model::bytes_per_weight() const {
  if (!quantized()) return precision() == Precision::Bf16 ? 2.0 : 4.0;
  // Over the weight matrices, as stored (block padding and Q8_0 embedding/head included).
  // Matrices a GGUF kept in F32/F16 are held in fp32.
  std::size_t weights = 0, bytes = quant_.size();
  for (size_t i = 0; i < params_.infos().size(); ++i) {
    if (!quantizable(params_.info((int)i))) continue;
    weights += params_.info((int)i).numel();
    if (!is_quantized((int)i)) bytes += 4 * params_.info((int)i).numel();
  }
  return weights ? static_cast<double>(bytes) / weights : 0.0;
}

QuantType Model::tensor_quant_type(int param) const {
  // Set (by load_quantized_weights) before the blocks are filled in, so loaders can ask.
  CHAINLM_CHECK(param >= 0 && param < (int)quant_types_.size(), "tensor '",
                params_.info(param).name, "' is not quantized");
  return quant_types_[param];
}

void Model::load_quantized_weights(QuantType type,
                                   const std::function<void(int, uint8_t*, std::size_t)>& fill,
                                   const std::vector<std::optional<QuantType>>& tensor_types,
                                   bool tables_fp32) {
  CHAINLM_CHECK(!quantized(), "this model is already quantized (", weight_format(), ")");
  CHAINLM_CHECK(bf16_.empty(), "a bf16 model cannot be quantized; load it in fp32");
  CHAINLM_CHECK(!params_.values_released() && !params_.has_grads(),
                "only a fresh fp32 model (no gradients) can be quantized");
  const auto& infos = params_.infos();
  CHAINLM_CHECK(tensor_types.empty() || tensor_types.size() == infos.size(),
                "load_quantized_weights: one tensor type per parameter");
  std::vector<std::size_t> offsets(infos.size(), kNotQuantized);
  std::vector<QuantType> types(infos.size(), type);
  std::size_t total = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (!quantizable(infos[i])) continue;
    const bool table = (int)i == tok_embeddings_ || (int)i == output_;
    if (table && tables_fp32 && tensor_types.empty()) continue;  // kept fp32
    if ((table || infos[i].shape[1] % kQuantBlock != 0) && type == QuantType::kQ4_0) types[i] = QuantType::kQ8_0;
    if (!tensor_types.empty()) {
      if (!tensor_types[i]) continue;  // kept fp32
      types[i] = *tensor_types[i];
    }
    offsets[i] = total;
    total += static_cast<std::size_t>(infos[i].shape[0]) * quant_row_bytes(types[i], infos[i].shape[1]);
  }
  // The blocks land in place before the fp32 values go (quantize_weights reads them in fill).
  quant_types_ = types;
  AlignedVector<uint8_t> blocks(total);
  for (size_t i = 0; i < infos.size(); ++i)
    if (offsets[i] != kNotQuantized) {
      const std::size_t bytes =
          static_cast<std::size_t>(infos[i].shape[0]) * quant_row_bytes(types[i], infos[i].shape[1]);
      fill(static_cast<int>(i), blocks.data() + offsets[i], bytes);
    }
  std::vector<bool> keep(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) keep[i] = offsets[i] == kNotQuantized;
  params_.release_values_except(keep);
  quant_type_ = type;
  quant_offset_ = std::move(offsets);
  quant_ = std::move(blocks);
  bind_forward_weights();
}

std::vector<float> Model::quant_importance(int param) const {
  // The RMSNorm whose output this matrix reads, if any: its input columns are the first
  // shape[1] entries of that norm's output (a chain block reads chains 1..i, CoLM-Air's shared
  // K/V chain 1), each scaled by its gain.
  int norm = -1;
  for (const LayerIndex& li : layers_) {
    const auto has = [&](const std::vector<int>& idx) {
      return std::find(idx.begin(), idx.end(), param) != idx.end();
    };
    if (has(li.wq) || has(li.wk) || has(li.wv)) norm = li.attention_norm;
    if (has(li.w1) || has(li.w3)) norm = li.ffn_norm;
  }
  if (param == output_) norm = norm_;
  if (norm < 0) return {};
  const float* g = params_.value(norm);
  std::vector<float> w(params_.info(param).shape[1]);
  for (size_t c = 0; c < w.size(); ++c) w[c] = g[c] * g[c];
  return w;
}

bool quantized_tables_straddle_chains(const ModelConfig& c) {
  const ChainLayout layout(c);
  for (int k = 1; k < c.n_chains(); ++k)
    if (layout.dim.prefix(k) % kQuantBlock != 0) return true;
  return false;
}

void Model::quantize_weights(QuantType type, std::optional<bool> tables_fp32) {
  load_quantized_weights(
      type,
      [&](int param, uint8_t* dst, std::size_t) {
        const ParamInfo& p = params_.info(param);
        const std::vector<float> importance = quant_importance(param);
        quantize_rows(quant_types_[param], params_.value(param), p.shape[0], p.shape[1], dst,
                      importance.empty() ? nullptr : importance.data());
      },
      {}, tables_fp32.value_or(quantized_tables_straddle_chains(config_)));
}

}  // namespace chainlm
