#include "cli/model_info.h"

#include "core/error.h"
#include "infer/kv_cache.h"
#include "infer/session.h"

namespace chainlm::cli {

std::string describe_model(const Model& model) {
  const ModelConfig& c = model.config();
  const std::string kind = c.n_chains() == 1 ? "LLaMA" : c.kv_share ? "CoLM-Air" : "CoLM";
  char params[32];
  std::snprintf(params, sizeof params, "%.3gM", model.params().numel() / 1e6);
  return cat("chains ", nlohmann::json(c.chains).dump(), " ", kind, ", dim ", c.dim, ", ", c.n_heads,
             " heads (", c.n_kv_heads, " KV), ffn ", c.ffn_dim, ", ", c.n_layers, " layers, vocab ",
             c.vocab_size, ", ", params, " parameters", c.tie_embeddings ? " (tied head)" : "",
             c.phd.enabled() ? cat(", ", c.phd.name()) : std::string());
}

std::vector<long> params_per_chain(const Model& model) {
  const ChainLayout& L = model.layout();
  std::vector<long> per(L.n, 0);
  for (const ParamInfo& p : model.params().infos()) {
    if (p.chain >= 0) {
      per[p.chain] += (long)p.numel();
    } else {  // D-wide: columns by chain
      const long rows = (long)(p.numel() / p.cols());
      for (int i = 0; i < L.n; ++i) per[i] += rows * L.dim.width(i);
    }
  }
  return per;
}

nlohmann::json model_info_json(const Model& model) {
  const ModelConfig& c = model.config();
  const ChainLayout& L = model.layout();
  const int hd = L.head_dim;
  nlohmann::json j = config_to_json(c);
  j["head_dim"] = hd;
  j["architecture"] = c.architecture();
  if (c.phd.enabled()) {
    j["phd_name"] = c.phd.name();  // e.g. PHD-CSWA-2-16-32 (its settings: "phd")
    // Beside the cache a session holds a ring of hidden-token K/V (fp32): at a short context
    // it can be as large as the cache itself, which the per-token figures do not show.
    j["phd_ring_rows"] = InferenceSession::phd_ring_rows(c);
    j["phd_ring_bytes"] = (long)InferenceSession::phd_ring_bytes(c);
  }
  j["params"] = model.params().numel();
  j["weights"] = {{"format", model.weight_format()}, {"bytes", model.weight_bytes()}};
  // A quantized model's matrices by the type each is held in: q4_0 keeps the embedding and the
  // head in q8_0, and rows that are not whole 32-blocks too (a dim-48 model's q4_0 is almost
  // all q8_0); a GGUF may hold some in f32. "format" alone called such a model q4_0. Given
  // for every model, so scripts find it ({"fp32": 30}).
  nlohmann::json types = nlohmann::json::object();
  for (int i = 0; i < (int)model.params().infos().size(); ++i) {
    if (!model.is_quantized(i) && model.params().info(i).shape.size() != 2) continue;
    const std::string t = model.is_quantized(i) ? quant_type_name(model.tensor_quant_type(i))
                          : model.quantized()   ? "fp32"
                                                : model.weight_format();
    types[t] = types.value(t, 0) + 1;
  }
  j["weights"]["matrices"] = types;
  const std::vector<long> per = params_per_chain(model);
  nlohmann::json chains = nlohmann::json::array();
  for (int i = 0; i < L.n; ++i)
    chains.push_back({{"chain", i + 1},
                      {"heads", L.heads.width(i)},
                      {"dim", L.dim.width(i)},
                      {"ffn_dim", L.ffn.width(i)},
                      {"kv_heads", c.kv_share ? (i == 0 ? c.n_kv_heads : 0) : L.kv.width(i) / hd},
                      // CoLM-Air: chains past the first own no K/V heads and attend chain 1's
                      // (the text output says "shared"; kv_heads 0 alone read as none).
                      {"kv_shared", c.kv_share && i > 0},
                      {"params", per[i]}});
  j["per_chain"] = chains;
  // The KV cache inference gives this model by default (--kv-cache auto: halves for bf16 and
  // quantized weights).
  const KvCacheType kv_cache = resolve_kv_cache_type(KvCacheType::Auto, model);
  j["kv_cache"] = kv_cache_type_name(kv_cache);
  nlohmann::json subs = nlohmann::json::array();
  for (int k = 1; k <= L.n; ++k)
    subs.push_back({{"chains", k},
                    {"dim", L.dim.prefix(k)},
                    {"heads", L.heads.prefix(k)},
                    {"kv_heads", L.active_kv_width(k) / hd},
                    {"params", model.num_params(k)},
                    {"matmul_params", model.matmul_params(k)},
                    // What a decode step reads of it: its matrices in the model's weight format.
                    {"matmul_weight_bytes", (long)(model.bytes_per_weight() * model.matmul_params(k))},
                    {"kv_cache_bytes_per_token",
                     2L * (long)kv_cache_element_bytes(kv_cache) * c.n_layers * L.active_kv_width(k)}});
  j["sub_models"] = subs;
  if (model.freeze().any()) {
    const ParamStore& ps = model.params();
    j["trainable"] = {{"freeze_chains", model.freeze().chains},
                      {"train_only", model.freeze().head_only ? "head" : ""},
                      {"params", ps.trainable_numel()},
                      {"fraction", (double)ps.trainable_numel() / (double)ps.numel()}};
  }
  return j;
}

}  // namespace chainlm::cli
