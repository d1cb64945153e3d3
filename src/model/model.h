#pragma once
// A LLaMA-style transformer with chains (CoLM, CoLM-Air; SPEC Part A). Forward and backward
// are hand-written per layer over activation buffers laid out once per (B, T) shape, as in
// llm.c: no autograd graph and no allocation inside a training step.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/precision.h"
#include "kernels/attention.h"
#include "kernels/bf16.h"
#include "kernels/weight_ref.h"
#include "model/chain_layout.h"
#include "model/config.h"
#include "model/param_store.h"

namespace chainlm {

struct StepLosses {
  std::vector<double> chain_loss;  // mean CE of sub-model k (index k-1); NaN if not computed
  double loss = 0.0;               // the weighted objective (SPEC A5)
  long tokens = 0;                 // targets counted (ignored targets excluded)
  double grad_norm = 0.0;          // filled by the trainer: pre-clip global norm
};

// Which parameters train (SPEC A7 chain tuning; head-only elastic fine-tuning, SPEC A5).
struct FreezeSpec {
  int chains = 0;          // the first `chains` chains are frozen (their blocks, norm-gain
                           // slices, embedding and head columns; with kv_share the shared wk, wv)
  bool head_only = false;  // only the (untied) output head trains
  // Chains the sub-models with a loss weight use (0: all). The later ones are never computed,
  // so they get no gradient, and are left as they are (not even weight decay moves them).
  int used_chains = 0;
  bool any() const { return chains > 0 || head_only; }
};

// Whether a chain boundary of c's residual stream falls inside a 32-weight quantization block:
// then the embedding's and the head's blocks would mix chains (Model::quantize_weights).
bool quantized_tables_straddle_chains(const ModelConfig& c);

class Model {
 public:
  explicit Model(const ModelConfig& config) : Model(config, true) {}
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const ChainLayout& layout() const { return layout_; }
  ParamStore& params() { return params_; }
  const ParamStore& params() const { return params_; }

  // Normal(0, 0.02) matrices (residual projections scaled by 1/sqrt(2L)), unit norm gains.
  void init_random(uint64_t seed);

  // Freezes parameters: marks ParamInfo::frozen_cols (so the optimizer leaves them alone)
  // and makes forward_backward skip their gradients: frozen chain blocks get no weight-
  // gradient GEMM, and since a frozen chain's activations depend on frozen parameters only
  // (chain causality), no input gradient flows into the frozen chains either; head-only
  // training stops the backward at the head. Frozen gradients stay exactly zero. Throws when
  // the spec freezes every chain or asks for a head-only run of a tied model.
  void set_freeze(const FreezeSpec& spec);
  const FreezeSpec& freeze() const { return freeze_; }

  // Allocates the gradient buffer (zero) on first use; forward_backward and the trainer call
  // it, so a model loaded for inference never holds gradients.
  void ensure_grads();

  // Forward + backward of the multi-chain objective (SPEC A5) on a (B, T) batch; gradients
  // are accumulated (+=) into params().grads(), scaled by grad_multiplier (e.g.
  // 1/accumulation_steps). chain_weights[k-1] weights sub-model k; the chains beyond the
  // last non-zero weight are not computed at all. targets < 0 are ignored.
  StepLosses forward_backward(const int* tokens, const int* targets, int B, int T,
                              const std::vector<float>& chain_weights, float grad_multiplier);

  // Called by forward_backward each time the backward pass has finished a suffix of the
  // gradient buffer: after layer l, every gradient from that layer's first parameter (offset
  // `ready_from`, one of gradient_ready_points()) to the end of the buffer holds its final
  // value for the batch (that layer, the layers above it, the final norm and the head; the
  // embedding, first in the buffer, is done last). Data-parallel training starts summing those
  // over the ranks while the backward goes on. An empty function removes the hook.
  void set_backward_hook(std::function<void(std::size_t ready_from)> hook);
  std::vector<std::size_t> gradient_ready_points() const;

  // Forward only: sum of CE losses of every sub-model k = 1..k_max (index k-1).
  std::vector<double> evaluate(const int* tokens, const int* targets, int B, int T, int k_max,
                               long* n_targets);

  // Logits (B*T, V) of sub-model k.
  void logits(const int* tokens, int B, int T, int k, float* out);

  // Parameter indices of one layer, and the per-chain block pointers the kernels take
  // (into the value and gradient buffers; a null gradient pointer marks a frozen block).
  struct LayerIndex {
    int attention_norm = -1, ffn_norm = -1;
    std::vector<int> wq, wk, wv, wo, w1, w2, w3;
    std::vector<float*> v_wq, v_wk, v_wv, v_wo, v_w1, v_w2, v_w3;
    std::vector<float*> g_wq, g_wk, g_wv, g_wo, g_w1, g_w2, g_w3;
    // The operands of the forward GEMMs: bf16 blocks once use_bf16_weights ran, else the
    // fp32 values (v_* are null once a bf16 inference model dropped its fp32 matrices).
    std::vector<WeightRef> r_wq, r_wk, r_wv, r_wo, r_w1, r_w2, r_w3;
  };
  // Read access for inference paths (src/infer), which run their own forward over a cache.
  const LayerIndex& layer(int l) const { return layers_[l]; }
  WeightRef embedding() const { return weight_ref(tok_embeddings_); }
  const float* final_norm() const { return params_.value(norm_); }
  WeightRef head() const { return weight_ref(output_ >= 0 ? output_ : tok_embeddings_); }

  // bf16 weights (docs/precision.md, model_precision.cpp): converts every weight to bf16,
  // after which the forward passes run bf16 GEMMs. keep_fp32 = false (inference) drops the
  // fp32 matrices and embedding (norm gains stay fp32): half the memory and half the bytes per
  // decoded token; such a model cannot train, save or export. keep_fp32 = true (a bf16
  // training run) keeps them as the master weights: refresh_bf16_weights() converts them
  // again after each optimizer step.
  void use_bf16_weights(bool keep_fp32);
  void refresh_bf16_weights();
  Precision precision() const { return bf16_.empty() ? Precision::Fp32 : Precision::Bf16; }
  // fp32 inference weights in panels (gemm_panels.h, model_precision.cpp): every weight matrix a
  // GEMM reads (chain blocks and the head) is repacked into panels of kPanel rows and its
  // row-major copy dropped (a tied embedding keeps it for the lookup), so the memory stays that
  // of the fp32 model. Every fp32 product then runs the panel kernel: batched decoding steps,
  // PHD copies and prompts at the FMA peak instead of the few-row dot products' ~half of it.
  // Such a model runs inference only (no training, saving, export, bf16 or quantization).
  // Does nothing where the build has no 512-bit panel kernel, or on a quantized or bf16 model.
  void use_fp32_panels();
  bool fp32_panels() const { return !panels_.empty(); }
  // Block-quantized weights (docs/quantization.md, model_quant.cpp): every weight matrix
  // (chain blocks, embedding, head) in Q8_0 or Q4_0, each row quantized on its own, so sub-model
  // k still reads only its own blocks; the norm gains stay fp32. The fp32 matrices are dropped:
  // such a model runs inference only (no training, saving in fp32 or HF export).
  //
  // The embedding and the head are rows across every chain: quantized in 32-weight blocks, a
  // block straddling a chain boundary takes its scale from both chains, and sub-model k then
  // depends on chain k+1 (it changed as tuned later chains trained; `quantize --chains k` gave
  // other logits than sub-model k). With tables_fp32 they stay fp32; by default that is so when
  // the model's chain boundaries are not block-aligned (quantized_tables_straddle_chains).
  void quantize_weights(QuantType type, std::optional<bool> tables_fp32 = std::nullopt);
  // What Q4_0's scale search weighs each input column of matrix `param` by: the squared gains
  // of the RMSNorm that feeds it (attention/FFN norms for wq, wk, wv, w1, w3; the final norm for
  // an untied head), or empty (all ones) for matrices no norm feeds directly.
  std::vector<float> quant_importance(int param) const;
  // The same from stored blocks (a quantized checkpoint): fill(param, dst, bytes) writes the
  // blocks of each weight matrix; the norm gains must already hold their values. tensor_types,
  // when given (one entry per parameter), sets each matrix's block type instead of the rule
  // above, or keeps it fp32 (nullopt: a GGUF tensor stored in F32/F16, which must already hold
  // its values).
  void load_quantized_weights(QuantType type,
                              const std::function<void(int, uint8_t*, std::size_t)>& fill,
                              const std::vector<std::optional<QuantType>>& tensor_types = {},
                              bool tables_fp32 = false);
  bool quantized() const { return !quant_.empty(); }
  // The type asked for (`quantize --type`). With Q4_0 the embedding and the output head are
  // kept in Q8_0: they are a large share of a small model's error at 4 bits and a small share
  // of its bytes per token (the embedding reads one row); tensor_quant_type says which.
  QuantType quant_type() const { return quant_type_; }
  QuantType tensor_quant_type(int param) const;
  // Whether tensor `param` is held quantized (a weight matrix of a quantized model), and its
  // blocks.
  bool is_quantized(int param) const;
  const uint8_t* quantized_blocks(int param) const;
  // "fp32", "bf16", "q8_0" or "q4_0": the form the weight matrices are held in, and its bytes
  // per weight (4, 2, 34/32 or 18/32).
  std::string weight_format() const;
  double bytes_per_weight() const;
  // Bytes the weights occupy in memory (fp32 buffer plus bf16 copies or quantized blocks).
  std::size_t weight_bytes() const;
  // Copies the weights of a model of the same shape, in whatever precision it holds them.
  void copy_weights_from(const Model& other);
  // The attention of sub-model k under the model's mask (causal, or its PHD mask): its active
  // query heads over rows of q and o (dim floats apart) and of K and V (the K/V width apart);
  // `batch` sequences of q_len query rows from position q_offset over kv_len key rows.
  AttentionShape attention_shape(int k, int batch, int q_len, int kv_len, int q_offset) const;

  // Floats the parameter buffer of a model with this config holds (weights; the gradient
  // buffer is the same size), and the activation arena of a (B, T) training step, worked out
  // without allocating either (src/model/memory_estimate.h).
  static std::size_t parameter_floats(const ModelConfig& config);
  // forward_only: the arena of a forward pass alone (evaluate, logits on a model that has not
  // trained): two layers' activations, used in turn, and no backward scratch.
  static std::size_t activation_floats(const ModelConfig& config, int B, int T,
                                       bool forward_only = false);
  // With bf16 weights: the bf16 copies of the layers' GEMM inputs a step keeps besides.
  static std::size_t bf16_activation_elements(const ModelConfig& config, int B, int T,
                                              bool forward_only = false);

  // Parameters a token touches in the matmuls of sub-model k (for FLOP accounting).
  long matmul_params(int k) const;
  // Parameter count of sub-model k (embedding and head included once each).
  long num_params(int k) const;

 private:
  Model(const ModelConfig& config, bool allocate);  // allocate = false: shapes only
  struct Buffers;
  // forward_only: a pass no backward follows (evaluate, logits); it runs on whatever arena
  // the model has for (B, T), and allocates only a forward pass's when it has none.
  void forward_trunk(const int* tokens, int B, int T, int k, bool forward_only = false);
  void ensure_buffers(int B, int T, bool forward_only = false);
  bool bf16_activations() const;  // whether the forward rounds its GEMM inputs once (bf16 weights)
  void ensure_bf16_activations();
  void bind_grads();
  void bind_forward_weights();
  WeightRef weight_ref(int param) const;
  float* head_grad();

  ModelConfig config_;
  ChainLayout layout_;
  ParamStore params_;
  int tok_embeddings_ = -1, norm_ = -1, output_ = -1;
  FreezeSpec freeze_;
  std::vector<LayerIndex> layers_;
  std::unique_ptr<Buffers> buf_;
  AlignedVector<bf16_t> bf16_;             // every tensor in bf16 (empty in fp32)
  std::vector<std::size_t> bf16_offset_;   // where each tensor starts in bf16_
  AlignedVector<float> panels_;            // weight matrices in panels (empty unless packed)
  std::vector<std::size_t> panel_offset_;  // where each tensor starts in panels_ (npos: not packed)
  AlignedVector<uint8_t> quant_;            // quantized weight matrices (empty unless quantized)
  std::vector<std::size_t> quant_offset_;   // where each tensor starts in quant_ (npos: fp32)
  std::vector<QuantType> quant_types_;      // each tensor's block type
  QuantType quant_type_ = QuantType::kQ8_0;
  std::function<void(std::size_t)> backward_hook_;
};

}  // namespace chainlm
