#include "model/hf_llama_convert.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "kernels/bf16.h"
#include "kernels/quant.h"
#include "model/checkpoint.h"

namespace chainlm {

namespace fs = std::filesystem;

namespace {

using Mapping = LlamaTensorName;

}  // namespace

std::vector<LlamaTensorName> llama_tensor_names(const Model& model) {
  const ModelConfig& c = model.config();
  std::vector<Mapping> m;
  m.push_back({"model.embed_tokens.weight", "tok_embeddings.weight"});
  const std::string kv_suffix = c.kv_share ? ".weight" : ".chain0.weight";
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string h = "model.layers." + std::to_string(l), p = "layers." + std::to_string(l);
    m.push_back({h + ".input_layernorm.weight", p + ".attention_norm.weight"});
    m.push_back({h + ".self_attn.q_proj.weight", p + ".attention.wq.chain0.weight", Mapping::kQuery});
    m.push_back({h + ".self_attn.k_proj.weight", p + ".attention.wk" + kv_suffix, Mapping::kKey});
    m.push_back({h + ".self_attn.v_proj.weight", p + ".attention.wv" + kv_suffix});
    m.push_back({h + ".self_attn.o_proj.weight", p + ".attention.wo.chain0.weight"});
    m.push_back({h + ".post_attention_layernorm.weight", p + ".ffn_norm.weight"});
    m.push_back({h + ".mlp.gate_proj.weight", p + ".feed_forward.w1.chain0.weight"});
    m.push_back({h + ".mlp.up_proj.weight", p + ".feed_forward.w3.chain0.weight"});
    m.push_back({h + ".mlp.down_proj.weight", p + ".feed_forward.w2.chain0.weight"});
  }
  m.push_back({"model.norm.weight", "norm.weight"});
  if (!c.tie_embeddings) m.push_back({"lm_head.weight", "output.weight"});
  return m;
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A float as the shortest decimal that reads back as the same float (1e-05, not
// 9.999999747378752e-06), for config.json.
double json_float(float f) {
  char buf[32];
  for (int digits = 6; digits <= 9; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
    if (std::strtof(buf, nullptr) == f) break;
  }
  return std::strtod(buf, nullptr);
}

}  // namespace

ModelConfig config_from_hf_llama(const HfLlamaConfig& h, const std::string& where) {
  // One chain, no PHD (ModelConfig's defaults): a plain LLaMA.
  const ModelConfig c{.dim = h.hidden_size,
                      .n_layers = h.num_hidden_layers,
                      .n_heads = h.num_attention_heads,
                      .n_kv_heads = h.num_key_value_heads,
                      .ffn_dim = h.intermediate_size,
                      .vocab_size = h.vocab_size,
                      .rope_theta = (float)h.rope_theta,
                      .rope_scaling = h.rope_scaling,
                      .norm_eps = (float)h.rms_norm_eps,
                      .tie_embeddings = h.tie_word_embeddings,
                      .max_seq_len = h.max_position_embeddings,
                      .phd = PhdConfig{}};
  validate_config(c, where);
  return c;
}

std::unique_ptr<Model> load_hf_llama(const std::string& dir) {
  const HfLlamaConfig hc = read_hf_llama_config(dir);
  const ModelConfig config = config_from_hf_llama(hc, (fs::path(dir) / "config.json").string());
  // The weights' headers first: a config claiming more than the files hold is refused before
  // the model is allocated.
  const HfWeights weights(dir);
  check_weights_can_hold(config, weights.tensor_bytes(), weights.where());
  auto model = std::make_unique<Model>(config);
  const ModelConfig& c = model->config();
  ParamStore& ps = model->params();
  std::set<std::string> used;
  std::vector<float> tmp;
  for (const Mapping& m : llama_tensor_names(*model)) {
    const int idx = ps.find(m.native);
    CHAINLM_CHECK(idx >= 0, "HF import: no parameter ", m.native);
    const ParamInfo& p = ps.info(idx);
    used.insert(m.hf);
    if (m.kind == Mapping::kPlain) {
      weights.read(m.hf, p.shape, ps.value(idx));
      refuse_non_finite(ps.value(idx), p.numel(), weights.where(), m.hf);
      continue;
    }
    tmp.resize(p.numel());
    weights.read(m.hf, p.shape, tmp.data());
    refuse_non_finite(tmp.data(), tmp.size(), weights.where(), m.hf);
    const int heads = m.kind == Mapping::kQuery ? c.n_heads : c.n_kv_heads;
    rotate_half_to_pairs(tmp.data(), ps.value(idx), heads, c.head_dim(), (int)p.cols());
  }
  for (const std::string& name : weights.names()) {
    if (used.count(name) || ends_with(name, ".rotary_emb.inv_freq")) continue;
    if (name == "lm_head.weight" && c.tie_embeddings) continue;  // a saved copy of the tie
    // A whole layer past the config's count: the config and the weights disagree.
    int layer = -1;
    if (std::sscanf(name.c_str(), "model.layers.%d.", &layer) == 1 && layer >= c.n_layers)
      fail(weights.where(), ": tensor '", name, "' is of layer ", layer, ", beyond config.json's ",
           "num_hidden_layers = ", c.n_layers, " (layers 0..", c.n_layers - 1,
           "): the config and the weights do not belong together");
    fail(weights.where(), ": unexpected tensor '", name,
         "': not part of a LLaMA model (biases and other additions are not supported)");
  }
  return model;
}

HfLlamaConfig hf_llama_config_of(const Model& model, int k, const std::string& what) {
  const ModelConfig& c = model.config();
  const ChainLayout& L = model.layout();
  CHAINLM_CHECK(k >= 1 && k <= c.n_chains(), what, ": --chains ", k, " is outside 1..", c.n_chains());
  CHAINLM_CHECK(!c.phd.enabled(), what, ": a PHD-Transformer model (", c.phd.name(),
                ") repeats every token and attends through PHD masks, which the LLaMA "
                "architecture cannot express");
  CHAINLM_CHECK(k == 1, what, ": the sub-model of ", k, " chains (of ", c.n_chains(),
                ") normalizes every chain separately (per-chain RMSNorm), which the LLaMA "
                "architecture cannot express; only a 1-chain model or the 1-chain sub-model "
                "(--chains 1) can be exported");
  HfLlamaConfig h;
  h.hidden_size = L.dim.width(0);
  h.intermediate_size = L.ffn.width(0);
  h.num_attention_heads = L.heads.width(0);
  h.num_key_value_heads = (c.kv_share ? L.kv.total() : L.kv.width(0)) / L.head_dim;
  h.num_hidden_layers = c.n_layers;
  h.vocab_size = c.vocab_size;
  h.max_position_embeddings = c.max_seq_len;
  h.rms_norm_eps = json_float(c.norm_eps);
  h.rope_theta = json_float(c.rope_theta);
  h.rope_scaling = c.rope_scaling;
  h.tie_word_embeddings = c.tie_embeddings;
  h.torch_dtype = "float32";
  return h;
}

void check_hf_exportable(const Model& model, int k) {
  hf_llama_config_of(model, k, "export --format hf");
  CHAINLM_CHECK(!model.quantized(), "export --format hf: the model holds ", model.weight_format(),
                " weights, which a Hugging Face LLaMA directory (F32, BF16 or F16 safetensors) does not hold; "
                "export the fp32 checkpoint it was quantized from (or use --format gguf, which keeps them)");
}

namespace {

// The HF tensor of mapping m in fp32: chain 0's block, or the first D0 columns of a D-wide
// tensor (all of them for a 1-chain model); q and k rows permuted to rotate-half.
std::vector<float> hf_tensor_values(const Model& model, const HfLlamaConfig& h, const Mapping& m,
                                    std::vector<int64_t>* shape) {
  const ParamStore& ps = model.params();
  const ParamInfo& p = ps.info(ps.find(m.native));
  const float* src = ps.value(ps.find(m.native));
  const int64_t D = model.config().dim, D0 = h.hidden_size;
  *shape = p.shape;
  std::vector<float> data;
  if (p.chain < 0) {
    shape->back() = D0;
    const size_t rows = p.numel() / D;
    data.resize(rows * D0);
    for (size_t r = 0; r < rows; ++r) std::memcpy(data.data() + r * D0, src + r * D, sizeof(float) * D0);
  } else if (m.kind == Mapping::kPlain) {
    data.assign(src, src + p.numel());
  } else {
    data.resize(p.numel());
    const int heads = m.kind == Mapping::kQuery ? h.num_attention_heads : h.num_key_value_heads;
    pairs_to_rotate_half(src, data.data(), heads, model.layout().head_dim, (int)p.cols());
  }
  return data;
}

int64_t hf_tensor_numel(const Model& model, const HfLlamaConfig& h, const Mapping& m) {
  const ParamInfo& p = model.params().info(model.params().find(m.native));
  return p.chain < 0 ? (int64_t)p.numel() / model.config().dim * h.hidden_size : (int64_t)p.numel();
}

// v in a 16-bit `dtype` ("bf16", "f16"); a value the type cannot hold (it would round to
// infinity) is refused, naming the tensor, since no tool could run the result.
std::vector<uint16_t> to_half(const std::vector<float>& v, const std::string& dtype, const std::string& name) {
  std::vector<uint16_t> half(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    half[i] = dtype == "bf16" ? to_bf16(v[i]) : fp16_from_float(v[i]);
    const float back = dtype == "bf16" ? from_bf16(half[i]) : float_from_fp16(half[i]);
    CHAINLM_CHECK(std::isfinite(back) || !std::isfinite(v[i]), "export --format hf --dtype ", dtype,
                  ": tensor '", name, "' holds ", v[i], " at element ", i, ", beyond the range of ",
                  dtype == "bf16" ? "bfloat16" : "float16 (largest finite value 65504)",
                  "; export with ", dtype == "bf16" ? "--dtype f32" : "--dtype bf16 or f32", " (nothing was written)");
  }
  return half;
}

}  // namespace

std::string hf_torch_dtype(const std::string& dtype) {
  if (dtype == "f32") return "float32";
  if (dtype == "bf16") return "bfloat16";
  if (dtype == "f16") return "float16";
  fail("export --format hf: --dtype '", dtype, "' is not one of f32, bf16, f16");
}

float round_to_hf_dtype(float x, const std::string& dtype) {
  if (dtype == "bf16") return from_bf16(to_bf16(x));
  if (dtype == "f16") return float_from_fp16(fp16_from_float(x));
  return x;
}

HfExportSummary export_hf_llama(const Model& model, const HfExportOptions& o, const std::string& dir) {
  check_hf_exportable(model, o.chains);
  const std::string torch_dtype = hf_torch_dtype(o.dtype);  // refuses an unknown dtype
  const std::string safetensors_dtype = o.dtype == "f32" ? "F32" : o.dtype == "bf16" ? "BF16" : "F16";
  CHAINLM_CHECK(o.max_shard_bytes > 0, "export --format hf: the shard size must be positive");
  HfLlamaConfig h = hf_llama_config_of(model, o.chains, "export --format hf");
  h.torch_dtype = torch_dtype;
  h.bos_token_id = o.bos_token_id;
  h.eos_token_id = o.eos_token_id;
  const std::vector<Mapping> mappings = llama_tensor_names(model);
  const size_t element = o.dtype == "f32" ? 4 : 2;
  std::vector<uint64_t> bytes;
  for (const Mapping& m : mappings) bytes.push_back((uint64_t)hf_tensor_numel(model, h, m) * element);
  const std::vector<std::vector<size_t>> shards = split_into_shards(bytes, o.max_shard_bytes);

  HfExportSummary summary;
  std::map<std::string, std::string> weight_map;
  fs::create_directories(dir);
  // One shard's tensors in memory at a time: an export needs the model plus one shard.
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = hf_shard_file_name(s, shards.size());
    std::vector<std::vector<float>> f32;  // tensors point into these buffers: one of them per tensor
    std::vector<std::vector<uint16_t>> half;
    f32.reserve(shards[s].size());
    half.reserve(shards[s].size());
    std::vector<RawTensor> tensors;
    for (size_t i : shards[s]) {
      std::vector<int64_t> shape;
      f32.push_back(hf_tensor_values(model, h, mappings[i], &shape));
      const void* data = f32.back().data();
      if (o.dtype != "f32") {
        half.push_back(to_half(f32.back(), o.dtype, mappings[i].hf));
        f32.back() = {};
        data = half.back().data();
      }
      tensors.push_back({mappings[i].hf, safetensors_dtype, shape, data});
      weight_map[mappings[i].hf] = file;
      summary.total_bytes += bytes[i];
    }
    write_safetensors((fs::path(dir) / file).string(), tensors, {{"format", "pt"}});
    summary.files.push_back(file);
  }
  if (shards.size() > 1) {
    write_file_atomic((fs::path(dir) / "model.safetensors.index.json").string(),
                      hf_shard_index(weight_map, summary.total_bytes).dump(2) + "\n");
    summary.files.push_back("model.safetensors.index.json");
  }
  write_file_atomic((fs::path(dir) / "config.json").string(), hf_llama_config_to_json(h).dump(2) + "\n");
  return summary;
}

void export_hf_llama(const Model& model, int k, const std::string& dir) {
  export_hf_llama(model, HfExportOptions{.chains = k}, dir);
}

}  // namespace chainlm
