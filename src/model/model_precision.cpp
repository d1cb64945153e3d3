// bf16 weights of a Model (model.h, docs/precision.md): the bf16 copy of every tensor, the
// forward GEMM operands bound to it, and dropping the fp32 matrices of an inference model; and
// an fp32 inference model's matrices in panels (gemm_panels.h).
#include <algorithm>
#include <cstring>
#include <optional>

#include "core/error.h"
#include "model/model.h"

namespace chainlm {

namespace {
constexpr std::size_t kNotPacked = static_cast<std::size_t>(-1);
}

WeightRef Model::weight_ref(int param) const {
  if (is_quantized(param)) return {nullptr, nullptr, quantized_blocks(param), quant_types_[param]};
  const ParamInfo& p = params_.info(param);
  WeightRef r{p.released ? nullptr : params_.value(param),
              bf16_.empty() ? nullptr : bf16_.data() + bf16_offset_[param]};
  if (!panels_.empty() && panel_offset_[param] != kNotPacked)
    r.panels = panels_.data() + panel_offset_[param];
  return r;
}

void Model::use_fp32_panels() {
  if (!gemm_panels_native() || quantized() || !bf16_.empty() || !panels_.empty()) return;
  CHAINLM_CHECK(
      !params_.values_released() && !params_.has_grads(),
      "fp32 panels are for a fresh inference model (this one dropped weights or holds gradients)");
  const auto& infos = params_.infos();
  const int head_param = output_ >= 0 ? output_ : tok_embeddings_;
  // Every matrix a GEMM reads: the chain blocks and the head (the embedding only when tied).
  panel_offset_.assign(infos.size(), kNotPacked);
  std::size_t total = 0;
  for (size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].shape.size() != 2 || ((int)i == tok_embeddings_ && (int)i != head_param)) continue;
    panel_offset_[i] = total;
    total += panel_floats((int)infos[i].shape[0], (int)infos[i].shape[1]);
  }
  panels_.assign(total, 0.0f);
  std::vector<bool> keep(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) {
    keep[i] = panel_offset_[i] == kNotPacked || (int)i == tok_embeddings_;
    if (panel_offset_[i] == kNotPacked) continue;
    const int N = (int)infos[i].shape[0], K = (int)infos[i].shape[1];
    pack_panels(N, K, params_.value((int)i), K, panels_.data() + panel_offset_[i]);
  }
  params_.release_values_except(keep);
  bind_forward_weights();
}

// Points every layer's fp32 blocks (v_*) and forward operands (r_*) at the current buffers.
void Model::bind_forward_weights() {
  for (auto& li : layers_) {
    auto bind = [&](const std::vector<int>& idx, std::vector<float*>& v, std::vector<WeightRef>& r) {
      v.clear();
      r.clear();
      for (int i : idx) {
        const WeightRef w = weight_ref(i);
        v.push_back(const_cast<float*>(w.f32));
        r.push_back(w);
      }
    };
    bind(li.wq, li.v_wq, li.r_wq);
    bind(li.wk, li.v_wk, li.r_wk);
    bind(li.wv, li.v_wv, li.r_wv);
    bind(li.wo, li.v_wo, li.r_wo);
    bind(li.w1, li.v_w1, li.r_w1);
    bind(li.w2, li.v_w2, li.r_w2);
    bind(li.w3, li.v_w3, li.r_w3);
  }
}

void Model::use_bf16_weights(bool keep_fp32) {
  CHAINLM_CHECK(!quantized(), "this model holds ", weight_format(),
                " weights; bf16 applies to fp32 models only: use the fp32 checkpoint the model "
                "was quantized from (docs/quantization.md)");
  CHAINLM_CHECK(!params_.values_released(), "this model already dropped its fp32 weights");
  const auto& infos = params_.infos();
  bf16_offset_.resize(infos.size());
  for (size_t i = 0; i < infos.size(); ++i) bf16_offset_[i] = infos[i].offset;
  bf16_.assign(params_.size(), 0);
  refresh_bf16_weights();
  if (!keep_fp32) {
    CHAINLM_CHECK(!params_.has_grads(), "a model holding gradients keeps its fp32 weights");
    // Norm gains stay fp32 (a few floats per layer; RMSNorm runs in fp32).
    std::vector<bool> keep(infos.size());
    for (size_t i = 0; i < infos.size(); ++i) keep[i] = infos[i].shape.size() == 1;
    params_.release_values_except(keep);
  }
  bind_forward_weights();
}

void Model::refresh_bf16_weights() {
  if (bf16_.empty()) return;
  CHAINLM_CHECK(!params_.values_released(), "refresh_bf16_weights: the fp32 weights are gone");
  // The buffers share one layout until fp32 values are released (the padding converts too).
  to_bf16(params_.values(), bf16_.data(), params_.size());
}

std::size_t Model::weight_bytes() const {
  return params_.size() * sizeof(float) + bf16_.size() * sizeof(bf16_t) + quant_.size() +
         panels_.size() * sizeof(float);
}

void Model::copy_weights_from(const Model& other) {
  CHAINLM_CHECK(other.params_.infos().size() == params_.infos().size(),
                "copy_weights_from: models of different shapes");
  if (other.quantized()) {
    CHAINLM_CHECK(!params_.values_released() && !params_.has_grads(),
                  "copy_weights_from: the destination must be a fresh fp32 model");
    for (size_t i = 0; i < params_.infos().size(); ++i)
      if (!other.is_quantized((int)i))
        std::copy_n(other.params_.value((int)i), params_.info((int)i).numel(), params_.value((int)i));
    // Each matrix as the source holds it: its own block type, or fp32 (a GGUF's F32/F16
    // tensors, copied above). Without the types every matrix was taken for quantized, and a
    // copy of a GGUF with F16 tensors (eval's per-thread models) failed.
    std::vector<std::optional<QuantType>> types(params_.infos().size());
    for (size_t i = 0; i < types.size(); ++i)
      if (other.is_quantized((int)i)) types[i] = other.tensor_quant_type((int)i);
    load_quantized_weights(
        other.quant_type_,
        [&](int param, uint8_t* dst, std::size_t bytes) {
          std::copy_n(other.quantized_blocks(param), bytes, dst);
        },
        types);
    return;
  }
  CHAINLM_CHECK(!params_.values_released() && !params_.has_grads(),
                "copy_weights_from: the destination must be a fresh fp32 model");
  if (!other.params_.values_released()) {
    CHAINLM_CHECK(other.params_.size() == params_.size(), "copy_weights_from: different sizes");
    std::copy_n(other.params_.values(), params_.size(), params_.values());
  }
  if (other.bf16_.empty() && other.panels_.empty()) {
    bind_forward_weights();
    return;
  }
  if (other.params_.values_released()) {
    // Keep the same fp32 tensors (the norm gains) and the same bf16 copy.
    std::vector<bool> keep(params_.infos().size());
    for (size_t i = 0; i < keep.size(); ++i) {
      keep[i] = !other.params_.info((int)i).released;
      if (keep[i])
        std::copy_n(other.params_.value((int)i), params_.info((int)i).numel(), params_.value((int)i));
    }
    params_.release_values_except(keep);
  }
  bf16_ = other.bf16_;
  bf16_offset_ = other.bf16_offset_;
  panels_ = other.panels_;
  panel_offset_ = other.panel_offset_;
  bind_forward_weights();
}

}  // namespace chainlm
