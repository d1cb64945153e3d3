#include "model/gguf_convert.h"

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "core/error.h"
#include "core/tensor.h"
#include "io/gguf.h"
#include "io/tokenizer.h"
#include "kernels/quant.h"
#include "kernels/rope.h"
#include "model/checkpoint.h"
#include "model/hf_llama_convert.h"

namespace chainlm {

namespace {

constexpr const char* kWhat = "export --format gguf";
// The llama3 RoPE scaling parameters as chainlm's config.json writes "rope_scaling" (a JSON
// string): llama.cpp runs the per-pair factors of rope_freqs.weight alone, but chainlm's config
// holds the parameters, which cannot be recovered from the factors exactly.
constexpr const char* kRopeScalingKey = "chainlm.rope_scaling";

// llama.cpp's form of llama3 RoPE scaling (its HF converter's LLaMA model writes it): per pair i
// the divisor of the plain frequency theta^(-2i/hd), which ggml's rope applies as
// theta_i / rope_freqs[i]. Computed here from chainlm's own frequencies, so both agree.
std::vector<float> rope_freq_factors(const ModelConfig& c) {
  const std::vector<double> plain = rope_inv_frequencies(c.head_dim(), c.rope_theta, RopeScaling{});
  const std::vector<double> scaled = rope_inv_frequencies(c.head_dim(), c.rope_theta, c.rope_scaling);
  std::vector<float> factors(plain.size());
  for (size_t i = 0; i < plain.size(); ++i) factors[i] = (float)(plain[i] / scaled[i]);
  return factors;
}

// The RoPE scaling a GGUF file records: none, or chainlm's key with the rope_freqs.weight tensor
// that llama.cpp reads, which must agree with it. A rope_freqs.weight from another tool (llama.cpp's
// converter of LLaMA-3.1+) is refused: only factors are stored there, not the parameters.
RopeScaling read_rope_scaling(const GgufReader& g, const ModelConfig& plain, const std::string& path) {
  const GgufTensorInfo* t = g.find("rope_freqs.weight");
  if (!t && !g.has(kRopeScalingKey)) return RopeScaling{};
  CHAINLM_CHECK(g.has(kRopeScalingKey), path, ": tensor 'rope_freqs.weight' (per-pair RoPE frequency factors: "
                "LLaMA-3 RoPE scaling as llama.cpp converts it) comes without the llama3 parameters chainlm "
                "needs ('", kRopeScalingKey, "', which chainlm's own export writes); import the Hugging Face "
                "directory the file was converted from instead");
  CHAINLM_CHECK(t, path, ": metadata '", kRopeScalingKey, "' without the tensor 'rope_freqs.weight' that "
                "carries the scaling for llama.cpp: the file is inconsistent");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(g.get_string(kRopeScalingKey));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": metadata '", kRopeScalingKey, "' is not valid JSON: ", e.what());
  }
  ModelConfig c = plain;
  c.rope_scaling = rope_scaling_from_json(j, path + ": metadata '" + kRopeScalingKey + "'", true);
  CHAINLM_CHECK(c.rope_scaling.enabled(), path, ": metadata '", kRopeScalingKey, "' names no scaling");
  const std::vector<float> want = rope_freq_factors(c);
  CHAINLM_CHECK(t->type == kGgmlF32 && t->ne == std::vector<uint64_t>{want.size()}, path,
                ": tensor 'rope_freqs.weight' must be F32 with head_size/2 = ", want.size(), " elements");
  const uint8_t* data = g.data(*t);
  for (size_t i = 0; i < want.size(); ++i) {
    float got;
    std::memcpy(&got, data + i * sizeof(float), sizeof got);
    CHAINLM_CHECK(std::fabs(got - want[i]) <= 1e-6f * want[i], path, ": tensor 'rope_freqs.weight' holds ", got,
                  " for pair ", i, " but the scaling in '", kRopeScalingKey, "' gives ", want[i],
                  ": the file is inconsistent");
  }
  return c.rope_scaling;
}

// llama.cpp's name for a LLaMA tensor (llama-arch.cpp, LLM_ARCH_LLAMA), from its HF name.
std::string gguf_name(const std::string& hf) {
  static const std::map<std::string, std::string> fixed = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  static const std::map<std::string, std::string> per_layer = {
      {"input_layernorm.weight", "attn_norm.weight"},  {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},    {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},     {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"}};
  if (auto it = fixed.find(hf); it != fixed.end()) return it->second;
  const std::string prefix = "model.layers.";
  const size_t dot = hf.find('.', prefix.size());
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  return "blk." + layer + "." + per_layer.at(hf.substr(dot + 1));
}

// general.file_type (llama.h's llama_ftype) of each type chainlm writes.
uint32_t file_type_number(const std::string& type) {
  static const std::map<std::string, uint32_t> m = {{"f32", 0}, {"f16", 1}, {"q4_0", 2}, {"q8_0", 7}};
  return m.at(type);
}

std::vector<uint8_t> as_bytes(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  return std::vector<uint8_t>(b, b + n);
}

// The output type of the file: the requested one, or the model's own.
std::string file_type_of(const Model& model, const std::string& requested) {
  if (!requested.empty()) return requested;
  return model.quantized() ? quant_type_name(model.quant_type()) : "f32";
}

void add_tokenizer(GgufWriter& w, const std::string& spec, int vocab_size) {
  if (spec.empty()) {  // weights only: llama.cpp loads it and cannot tokenize text
    w.add_string("tokenizer.ggml.model", "no_vocab");
    return;
  }
  const std::string bytes = sentencepiece_model_bytes(spec);
  SentencePieceVocab v = sentencepiece_vocab(bytes, spec);
  CHAINLM_CHECK((int)v.pieces.size() <= vocab_size, kWhat, ": the tokenizer ", spec, " has ",
                v.pieces.size(), " tokens but the model has ", vocab_size,
                ": it is not the tokenizer this model was trained with");
  // A vocabulary padded past the tokenizer's (vocab_size rounded up): llama.cpp wants a token
  // for every row, so the padding rows get unused ones ([PAD<id>], type 5, score -1000, as
  // its own converter pads), which no text tokenizes to.
  for (int id = (int)v.pieces.size(); id < vocab_size; ++id) {
    v.pieces.push_back("[PAD" + std::to_string(id) + "]");
    v.scores.push_back(-1000.0f);
    v.types.push_back(5);
  }
  // llama.cpp's SentencePiece tokenizer ("llama"): pieces, scores, types and special ids.
  w.add_string("tokenizer.ggml.model", "llama");
  w.add_strings("tokenizer.ggml.tokens", v.pieces);
  w.add_float32s("tokenizer.ggml.scores", v.scores);
  w.add_int32s("tokenizer.ggml.token_type", v.types);
  if (v.bos_id >= 0) w.add_uint32("tokenizer.ggml.bos_token_id", (uint32_t)v.bos_id);
  if (v.eos_id >= 0) w.add_uint32("tokenizer.ggml.eos_token_id", (uint32_t)v.eos_id);
  if (v.unk_id >= 0) w.add_uint32("tokenizer.ggml.unknown_token_id", (uint32_t)v.unk_id);
  w.add_bool("tokenizer.ggml.add_bos_token", true);  // every chainlm sequence starts with BOS
  w.add_bool("tokenizer.ggml.add_eos_token", false);
  w.add_bool("tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
  // The model itself, so chainlm reads back exactly the tokenizer it was trained with.
  w.add_uint8s(kGgufSentencePieceKey, bytes);
}

}  // namespace

void check_gguf_exportable(const Model& model, const GgufExportOptions& o) {
  hf_llama_config_of(model, o.chains, kWhat);
  if (!o.type.empty())
    CHAINLM_CHECK(o.type == "f32" || o.type == "f16" || o.type == "q8_0" || o.type == "q4_0", kWhat, ": --type '",
                  o.type, "' is not one of f32, f16, q8_0, q4_0");
  const std::string type = file_type_of(model, o.type);
  if (model.quantized() && type != "f32" && type != "f16")
    CHAINLM_CHECK(type == quant_type_name(model.quant_type()), kWhat, ": the model holds ", model.weight_format(),
                  " weights; writing them as ", type, " would quantize already quantized weights a second time. "
                  "Export the fp32 checkpoint it was quantized from with --type ", type, ", or leave --type out "
                  "to keep its ", model.weight_format(), " blocks");
}

GgufExportSummary export_gguf(const Model& model, const GgufExportOptions& o, const std::string& path) {
  check_gguf_exportable(model, o);
  const HfLlamaConfig h = hf_llama_config_of(model, o.chains, kWhat);
  const std::string type = file_type_of(model, o.type);
  const bool quantized_file = type == "q8_0" || type == "q4_0";
  GgufExportSummary summary;
  summary.file_type = type;

  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_string("general.name", o.name.empty() ? "chainlm" : o.name);
  w.add_uint32("general.file_type", file_type_number(type));
  if (quantized_file) w.add_uint32("general.quantization_version", 2);
  w.add_uint32("llama.vocab_size", (uint32_t)h.vocab_size);
  w.add_uint32("llama.context_length", (uint32_t)h.max_position_embeddings);
  w.add_uint32("llama.embedding_length", (uint32_t)h.hidden_size);
  w.add_uint32("llama.block_count", (uint32_t)h.num_hidden_layers);
  w.add_uint32("llama.feed_forward_length", (uint32_t)h.intermediate_size);
  w.add_uint32("llama.attention.head_count", (uint32_t)h.num_attention_heads);
  w.add_uint32("llama.attention.head_count_kv", (uint32_t)h.num_key_value_heads);
  w.add_uint32("llama.rope.dimension_count", (uint32_t)(h.hidden_size / h.num_attention_heads));
  w.add_float32("llama.rope.freq_base", model.config().rope_theta);
  w.add_float32("llama.attention.layer_norm_rms_epsilon", model.config().norm_eps);
  add_tokenizer(w, o.tokenizer, h.vocab_size);
  // llama.cpp's server and chainlm's read the chat format from here.
  if (!o.tokenizer.empty() && !o.chat_template.empty())
    w.add_string("tokenizer.chat_template", o.chat_template);
  if (h.rope_scaling.enabled()) {
    // Not llama.rope.scaling.*: llama.cpp would take those for linear/YaRN scaling on top.
    w.add_string(kRopeScalingKey, rope_scaling_to_json(h.rope_scaling).dump());
    const std::vector<float> factors = rope_freq_factors(model.config());
    w.add_tensor("rope_freqs.weight", kGgmlF32, {(uint64_t)factors.size()},
                 as_bytes(factors.data(), factors.size() * sizeof(float)));
    ++summary.tensors;
  }

  const ParamStore& ps = model.params();
  const int64_t D0 = h.hidden_size;
  std::vector<float> row;
  // chainlm's q and k rows are in the adjacent-pair RoPE layout, which is llama.cpp's for LLaMA
  // (rope type "norm"): no permutation, unlike the HF export.
  for (const LlamaTensorName& m : llama_tensor_names(model)) {
    const int idx = ps.find(m.native);
    const ParamInfo& p = ps.info(idx);
    const std::string name = gguf_name(m.hf);
    ++summary.tensors;
    const int64_t cols = p.chain < 0 ? D0 : p.cols();  // D-wide tensors: chain 0's columns
    if (p.shape.size() == 1) {  // norm gains: F32
      w.add_tensor(name, kGgmlF32, {(uint64_t)cols}, as_bytes(ps.value(idx), sizeof(float) * cols));
      continue;
    }
    const int64_t rows = p.shape[0], full = p.cols();
    const bool table = m.native == "tok_embeddings.weight" || m.native == "output.weight";
    // The tensor's GGUF type, as `chainlm quantize` would choose it.
    bool blocks = quantized_file;
    const QuantType qt = !quantized_file ? QuantType::kQ8_0
                         : table && type == "q4_0" ? QuantType::kQ8_0 : parse_quant_type(type);
    const bool source_blocks = model.is_quantized(idx);
    // What a quantized model holds in fp32 (its embedding and head when a chain boundary falls
    // inside a block) goes in as F32, exactly: quantized here it would make another model than
    // the one exported (a trial: "logits differ ... a bug"), and rounded to F16 another again.
    const bool kept_fp32 = model.quantized() && !source_blocks && quantized_file;
    if (kept_fp32) {
      blocks = false;
      ++summary.fp32_tensors;
    } else if (blocks && cols % kQuantBlock != 0) {
      blocks = false;
      ++summary.fallback_tensors;
    }
    // A quantized model's blocks go in as they are when the types agree.
    if (blocks && source_blocks) {
      CHAINLM_CHECK(model.tensor_quant_type(idx) == qt, kWhat, ": tensor '", p.name, "' is held in ",
                    quant_type_name(model.tensor_quant_type(idx)), ", not ", quant_type_name(qt),
                    "; export the fp32 checkpoint instead");
      const size_t src_row = quant_row_bytes(qt, full), dst_row = quant_row_bytes(qt, cols);
      std::vector<uint8_t> data(rows * dst_row);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(data.data() + r * dst_row, model.quantized_blocks(idx) + r * src_row, dst_row);
      w.add_tensor(name, qt == QuantType::kQ8_0 ? kGgmlQ8_0 : kGgmlQ4_0, {(uint64_t)cols, (uint64_t)rows},
                   std::move(data));
      summary.copied_blocks = true;
      continue;
    }
    // Otherwise from fp32 values: the model's, or its blocks dequantized (exactly).
    std::vector<float> values(rows * cols);
    row.resize(full);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src;
      if (source_blocks) {
        const QuantType st = model.tensor_quant_type(idx);
        dequantize_row(st, model.quantized_blocks(idx) + r * quant_row_bytes(st, full), full, row.data());
        src = row.data();
      } else {
        src = ps.value(idx) + r * full;
      }
      std::memcpy(values.data() + r * cols, src, sizeof(float) * cols);
    }
    const std::vector<uint64_t> ne = {(uint64_t)cols, (uint64_t)rows};
    if (blocks) {
      std::vector<uint8_t> data(rows * quant_row_bytes(qt, cols));
      // The same importance as `chainlm quantize` (its first cols entries: this sub-model's).
      const std::vector<float> importance = model.quant_importance(idx);
      quantize_rows(qt, values.data(), rows, cols, data.data(), importance.empty() ? nullptr : importance.data());
      w.add_tensor(name, qt == QuantType::kQ8_0 ? kGgmlQ8_0 : kGgmlQ4_0, ne, std::move(data));
    } else if (type == "f16" || (quantized_file && !model.quantized())) {
      std::vector<uint16_t> half(values.size());
      for (size_t e = 0; e < values.size(); ++e) half[e] = fp16_from_float(values[e]);
      w.add_tensor(name, kGgmlF16, ne, as_bytes(half.data(), half.size() * 2));
    } else {
      w.add_tensor(name, kGgmlF32, ne, as_bytes(values.data(), values.size() * sizeof(float)));
    }
  }
  w.write(path);
  return summary;
}

std::unique_ptr<Model> load_gguf_model(const std::string& path) {
  const GgufReader g(path);
  const std::string arch = g.has("general.architecture") ? g.get_string("general.architecture") : "";
  CHAINLM_CHECK(arch == "llama", path, ": GGUF architecture '", arch,
                "' is not supported: chainlm reads LLaMA models (general.architecture \"llama\")");
  auto get_int = [&](const std::string& key, int fallback) -> int {
    if (!g.has(key)) {
      CHAINLM_CHECK(fallback > 0, path, ": GGUF metadata has no '", key, "', which a LLaMA model needs");
      return fallback;
    }
    const uint64_t v = g.get_uint(key);
    CHAINLM_CHECK(v > 0 && v <= (1u << 30), path, ": metadata '", key, "' is ", v, ", not a usable size");
    return (int)v;
  };
  for (const char* key : {"llama.expert_count", "llama.rope.scaling.factor"})
    if (g.has(key) && g.value(key).describe() != "0" && g.value(key).describe() != "1")
      fail(path, ": metadata '", key, "' is ", g.value(key).describe(),
           ": mixtures of experts and RoPE scaling are not supported (chainlm implements plain LLaMA)");
  HfLlamaConfig h;
  h.hidden_size = get_int("llama.embedding_length", 0);
  h.num_hidden_layers = get_int("llama.block_count", 0);
  h.intermediate_size = get_int("llama.feed_forward_length", 0);
  h.num_attention_heads = get_int("llama.attention.head_count", 0);
  h.num_key_value_heads = get_int("llama.attention.head_count_kv", h.num_attention_heads);
  h.max_position_embeddings = get_int("llama.context_length", 2048);
  const GgufTensorInfo* embd = g.find("token_embd.weight");
  CHAINLM_CHECK(embd && embd->ne.size() == 2, path, ": no 2-D tensor 'token_embd.weight' (not a LLaMA GGUF?)");
  h.vocab_size = g.has("llama.vocab_size") ? get_int("llama.vocab_size", 0) : (int)std::min<uint64_t>(embd->ne[1], 1u << 30);
  h.rms_norm_eps = g.get_float("llama.attention.layer_norm_rms_epsilon");
  if (g.has("llama.rope.freq_base")) h.rope_theta = g.get_float("llama.rope.freq_base");
  CHAINLM_CHECK(std::isfinite(h.rms_norm_eps) && h.rms_norm_eps > 0 && std::isfinite(h.rope_theta) && h.rope_theta > 0,
                path, ": layer_norm_rms_epsilon and rope.freq_base must be positive");
  CHAINLM_CHECK(h.hidden_size % h.num_attention_heads == 0, path, ": embedding_length ", h.hidden_size,
                " is not a multiple of head_count ", h.num_attention_heads);
  if (g.has("llama.rope.dimension_count"))
    CHAINLM_CHECK((int64_t)g.get_uint("llama.rope.dimension_count") == h.hidden_size / h.num_attention_heads, path,
                  ": rope.dimension_count ", g.get_uint("llama.rope.dimension_count"),
                  " differs from the head size: partial RoPE is not supported");
  h.tie_word_embeddings = g.find("output.weight") == nullptr;
  h.rope_scaling = read_rope_scaling(g, config_from_hf_llama(h, path), path);
  const ModelConfig config = config_from_hf_llama(h, path);
  check_weights_can_hold(config, g.tensor_bytes(), path);
  auto model = std::make_unique<Model>(config);
  ParamStore& ps = model->params();

  std::vector<std::optional<QuantType>> types(ps.infos().size());
  std::map<int, const GgufTensorInfo*> blocks;
  std::set<std::string> used;
  std::map<QuantType, int> counts;
  if (config.rope_scaling.enabled()) used.insert("rope_freqs.weight");  // checked by read_rope_scaling
  for (const LlamaTensorName& m : llama_tensor_names(*model)) {
    const std::string name = gguf_name(m.hf);
    const int idx = ps.find(m.native);
    const ParamInfo& p = ps.info(idx);
    const GgufTensorInfo* t = g.find(name);
    CHAINLM_CHECK(t, path, ": missing tensor '", name, "', which the metadata's LLaMA shape needs");
    used.insert(name);
    std::vector<uint64_t> ne(p.shape.rbegin(), p.shape.rend());  // innermost first
    CHAINLM_CHECK(t->ne == ne, path, ": tensor '", name, "' has dimensions ", shape_to_string(std::vector<int64_t>(t->ne.begin(), t->ne.end())),
                  " but the metadata's LLaMA shape needs ", shape_to_string(std::vector<int64_t>(ne.begin(), ne.end())),
                  " (innermost first)");
    const uint8_t* src = g.data(*t);
    const size_t n = p.numel();
    float* dst = ps.value(idx);
    if (t->type == kGgmlQ8_0 || t->type == kGgmlQ4_0) {
      CHAINLM_CHECK(p.shape.size() == 2, path, ": tensor '", name, "' is a vector stored as ", ggml_type_name(t->type),
                    "; chainlm keeps norm gains in F32 (or F16)");
      types[idx] = t->type == kGgmlQ8_0 ? QuantType::kQ8_0 : QuantType::kQ4_0;
      ++counts[*types[idx]];
      blocks[idx] = t;
      continue;
    }
    if (t->type == kGgmlF32) {
      std::memcpy(dst, src, n * sizeof(float));
    } else if (t->type == kGgmlF16 || t->type == 30 /* BF16 */) {
      for (size_t e = 0; e < n; ++e) {
        uint16_t x;
        std::memcpy(&x, src + 2 * e, 2);
        dst[e] = t->type == kGgmlF16 ? float_from_fp16(x) : std::bit_cast<float>(static_cast<uint32_t>(x) << 16);
      }
    } else {
      fail(path, ": tensor '", name, "' is ", ggml_type_name(t->type),
           ", which chainlm does not run (it reads F32, F16, BF16, Q8_0 and Q4_0 tensors); convert "
           "the model "
           "with llama.cpp's llama-quantize to one of those types for every tensor: with --pure "
           "(e.g. llama-quantize --pure model-f32.gguf model-q8_0.gguf Q8_0), as without it the "
           "output and embedding tensors get other types (Q6_K)");
    }
    refuse_non_finite(dst, n, path, name);
  }
  for (const GgufTensorInfo& t : g.tensors())
    CHAINLM_CHECK(used.count(t.name), path, ": unexpected tensor '", t.name, "': not part of a LLaMA model as chainlm "
                  "runs it");
  if (blocks.empty()) return model;
  // The model's type: the file's (general.file_type), else its most common block type.
  QuantType type = counts.rbegin()->first;
  for (const auto& [t, c] : counts) if (c > counts[type]) type = t;
  if (g.has("general.file_type")) {
    const uint64_t ft = g.get_uint("general.file_type");
    if (ft == 7) type = QuantType::kQ8_0;
    if (ft == 2) type = QuantType::kQ4_0;
  }
  model->load_quantized_weights(type, [&](int param, uint8_t* dst, std::size_t bytes) {
    const GgufTensorInfo* t = blocks.at(param);
    CHAINLM_CHECK(t->bytes == bytes, path, ": tensor '", t->name, "' holds ", t->bytes, " bytes, its shape needs ", bytes);
    std::memcpy(dst, g.data(*t), bytes);
    check_finite_block_scales(*types[param], dst, bytes, path, t->name);
  }, types);
  return model;
}

}  // namespace chainlm
