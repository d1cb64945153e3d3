#pragma once
// chainlm Model <-> Hugging Face LLaMA directory (io/hf_llama.h). A LLaMA model is chains [1]
// with whole-vector RMSNorm, which is exactly chainlm's per-chain RMSNorm for one chain.
#include <memory>
#include <string>

#include "io/hf_llama.h"
#include "model/model.h"

namespace chainlm {

// chains [1], no KV sharing, dim = hidden_size, ffn_dim = intermediate_size, n_kv_heads =
// num_key_value_heads, norm_eps = rms_norm_eps, rope_theta, rope_scaling, tie_embeddings =
// tie_word_embeddings, max_seq_len = max_position_embeddings.
ModelConfig config_from_hf_llama(const HfLlamaConfig& c, const std::string& where);

// Loads a HF LLaMA directory: every tensor present with its exact shape (F32, F16 or BF16),
// q_proj/k_proj rows un-permuted from rotate-half to chainlm's adjacent pairs, nothing
// unexpected (except rotary_emb.inv_freq buffers, and lm_head.weight beside a tied head).
std::unique_ptr<Model> load_hf_llama(const std::string& dir);

// The HF LLaMA config of sub-model k of `model`. Only a single chain is a LLaMA model: a
// sub-model with k > 1 chains normalizes each chain separately (per-chain RMSNorm), which
// LLaMA cannot express, so k must be 1 (or the model a 1-chain model), and the model must not
// use PHD repetition. Throws otherwise, the message starting with `what` ("export --format hf").
HfLlamaConfig hf_llama_config_of(const Model& model, int k, const std::string& what);
// hf_llama_config_of, and the weights must be fp32 (not quantized). Throws otherwise.
void check_hf_exportable(const Model& model, int k);

// A LLaMA tensor by its Hugging Face name and chainlm's (for sub-model 1: chain 0's blocks, the
// D-wide tensors cut to chain 0's columns); q and k change RoPE layout between the two.
struct LlamaTensorName {
  std::string hf, native;
  enum Kind { kPlain, kQuery, kKey } kind = kPlain;
};
std::vector<LlamaTensorName> llama_tensor_names(const Model& model);

// What `chainlm export --format hf` writes (docs/formats.md).
struct HfExportOptions {
  int chains = 1;              // the sub-model (only 1, or a 1-chain model: hf_llama_config_of)
  std::string dtype = "f32";   // "f32", "bf16" or "f16": every tensor, rounded to nearest even
  uint64_t max_shard_bytes = kDefaultMaxShardBytes;  // beyond it: model-0000N-of-0000M shards
  HfTokenIds bos_token_id{{1}}, eos_token_id{{2}};   // config.json's, e.g. as an imported model had them
};
struct HfExportSummary {
  std::vector<std::string> files;  // the weight files written (and the index when sharded)
  uint64_t total_bytes = 0;        // tensor data over every shard
};

// "float32", "bfloat16", "float16" (config.json's torch_dtype) for "f32", "bf16", "f16"; throws
// for anything else.
std::string hf_torch_dtype(const std::string& dtype);
// x as `dtype` stores it, widened back to float (round to nearest, ties to even).
float round_to_hf_dtype(float x, const std::string& dtype);

// Writes config.json and the weights (metadata format "pt") of the sub-model into dir:
// model.embed_tokens.weight, model.layers.N.self_attn.{q,k,v,o}_proj.weight (q, k permuted to
// rotate-half), model.layers.N.mlp.{gate,up,down}_proj.weight,
// model.layers.N.{input,post_attention}_layernorm.weight, model.norm.weight and, untied,
// lm_head.weight, all in options.dtype; rope_scaling and the token ids in config.json. The
// weights are one model.safetensors when they fit max_shard_bytes, else shards split as
// transformers' save_pretrained splits them, plus model.safetensors.index.json. Only one shard's
// converted tensors are held in memory at a time. A value a 16-bit dtype cannot hold is refused.
HfExportSummary export_hf_llama(const Model& model, const HfExportOptions& options, const std::string& dir);
// The F32 export of sub-model k with default options.
void export_hf_llama(const Model& model, int k, const std::string& dir);

}  // namespace chainlm
