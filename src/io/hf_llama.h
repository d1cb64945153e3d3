#pragma once
// Hugging Face LLaMA checkpoints (docs/formats.md, "Hugging Face LLaMA directories"): a
// directory with config.json (LlamaForCausalLM) and model.safetensors, or sharded weights
// listed by model.safetensors.index.json. This file knows the format only; the conversion
// to and from a chainlm Model is src/model/hf_llama_convert.h.
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rope_scaling.h"
#include "io/safetensors.h"

namespace chainlm {

// A special token id as config.json gives it: an integer, a list of integers (LLaMA-3 instruct
// models list three end-of-turn ids as eos_token_id) or null. Kept as read so an export writes
// back what an import read.
struct HfTokenIds {
  std::vector<int> ids;  // empty: null
  bool list = false;     // given (and written) as a JSON list
  int first() const { return ids.empty() ? -1 : ids.front(); }
  bool operator==(const HfTokenIds&) const = default;
};

struct HfLlamaConfig {
  int hidden_size = 0, intermediate_size = 0, num_attention_heads = 0, num_key_value_heads = 0,
      num_hidden_layers = 0, vocab_size = 0;
  int max_position_embeddings = 2048;  // LlamaConfig's defaults for the optional fields
  double rms_norm_eps = 1e-6, rope_theta = 10000.0;
  RopeScaling rope_scaling;  // "rope_scaling": null, or llama3
  bool tie_word_embeddings = false;
  std::string torch_dtype = "float32";
  HfTokenIds bos_token_id{{1}}, eos_token_id{{2}};
};

// True when dir/config.json is a Hugging Face config (it names a model_type or architectures;
// a chainlm config.json never does). Never throws.
bool is_hf_model_dir(const std::string& dir);

// Reads and checks dir/config.json. Refuses, naming the field: an architecture other than
// LlamaForCausalLM (model_type other than "llama"), a rope_scaling type other than llama3 (or a
// llama3 one with missing or bad fields), an activation other than silu, attention or MLP
// biases, a head_dim other than hidden_size/num_attention_heads, quantization, a torch_dtype
// other than float32/float16/bfloat16, missing or non-positive sizes, bos/eos_token_id other
// than null, a non-negative integer or a non-empty list of them.
HfLlamaConfig read_hf_llama_config(const std::string& dir);
nlohmann::json hf_llama_config_to_json(const HfLlamaConfig& c);

// ---- Writing weights as transformers' save_pretrained does.

// The largest shard size when none is given: save_pretrained's default, "5GB" (5 * 10^9 bytes).
inline constexpr uint64_t kDefaultMaxShardBytes = 5'000'000'000ull;
// A shard size as save_pretrained's max_shard_size reads it: bytes ("500000"), or a number
// with a unit, case-insensitive: KB, MB, GB, TB (powers of 1000, as transformers counts them)
// or KiB, MiB, GiB, TiB (powers of 1024), e.g. "5GB", "500MB", "1.5GiB". A bare K/M/G is refused
// as ambiguous. Throws naming `what` (the option) on anything else.
uint64_t parse_max_shard_size(const std::string& text, const std::string& what);

// Groups tensors of the given byte sizes (in order) into shards of at most max_shard_bytes, as
// save_pretrained does: a shard is closed when the next tensor would overflow it, and a tensor
// larger than the limit gets a shard of its own (placed in order; save_pretrained emits it before
// the shard it is filling). Returns the indices of each shard's tensors; one shard when
// everything fits.
std::vector<std::vector<size_t>> split_into_shards(const std::vector<uint64_t>& bytes,
                                                   uint64_t max_shard_bytes);
// "model.safetensors" when n is 1, else "model-0000{i+1}-of-0000{n}.safetensors" (5 digits).
std::string hf_shard_file_name(size_t i, size_t n);
// model.safetensors.index.json: {"metadata": {"total_size": bytes}, "weight_map": {tensor: file}}.
nlohmann::json hf_shard_index(const std::map<std::string, std::string>& weight_map,
                              uint64_t total_size);

// The weights of a HF directory: model.safetensors, or the shards named by
// model.safetensors.index.json. Tensors are read as float from F32, F16 or BF16.
class HfWeights {
 public:
  explicit HfWeights(const std::string& dir);
  bool has(const std::string& name) const;
  std::vector<std::string> names() const;
  // Throws naming the file and tensor when it is missing, has another shape or dtype.
  void read(const std::string& name, const std::vector<int64_t>& shape, float* dst) const;
  const std::string& where() const { return where_; }
  // Bytes of tensor data over every file (what the tensors' data_offsets span).
  uint64_t tensor_bytes() const;

 private:
  std::string where_;
  std::vector<std::unique_ptr<SafetensorsReader>> files_;
  std::map<std::string, const SafetensorsReader*> by_name_;
};

// HF's q/k projections are stored in the "rotate half" RoPE layout: within each head, row
// t*(hd/2) + i of the HF weight is row 2i + t of the adjacent-pair layout (chainlm, Meta's
// original code, llama2.c), as the transformers conversion script's
// permute(w, n_heads, dim1, dim2) = w.view(n_heads, dim1//n_heads//2, 2, dim2).transpose(1, 2)
// makes it. `w` is (n_heads*head_dim, cols) row-major; the result is written to `out`.
void pairs_to_rotate_half(const float* w, float* out, int n_heads, int head_dim, int cols);
void rotate_half_to_pairs(const float* w, float* out, int n_heads, int head_dim, int cols);

}  // namespace chainlm
