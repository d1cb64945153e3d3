#include "model/llama2c_import.h"

#include <algorithm>
#include <string>

#include "core/error.h"

namespace chainlm {

ModelConfig config_from_llama2c(const Llama2cHeader& h, const std::string& where) {
  // One chain, no PHD (ModelConfig's defaults), and run.c's fixed RoPE (theta, no scaling) and
  // norm epsilon.
  const ModelConfig c{.dim = h.dim,
                      .n_layers = h.n_layers,
                      .n_heads = h.n_heads,
                      .n_kv_heads = h.n_kv_heads,
                      .ffn_dim = h.hidden_dim,
                      .vocab_size = h.vocab_size,
                      .rope_theta = 10000.0f,
                      .rope_scaling = RopeScaling{},
                      .norm_eps = 1e-5f,
                      .tie_embeddings = h.shared_classifier,
                      .max_seq_len = h.seq_len,
                      .phd = PhdConfig{}};
  validate_config(c, where);
  return c;
}

std::unique_ptr<Model> model_from_llama2c(const Llama2cWeights& w, const std::string& source) {
  const Llama2cHeader& h = w.h;
  auto model = std::make_unique<Model>(config_from_llama2c(h, "llama2.c checkpoint"));
  ParamStore& ps = model->params();
  // Copies `layer`'s slice of a stacked [L, ...] array (or the whole array, layer -1) into the
  // parameter `name`, whose size must be the slice's.
  auto copy = [&](const std::string& name, const std::vector<float>& src, int layer) {
    const int idx = ps.find(name);
    CHAINLM_CHECK(idx >= 0, "llama2.c import: the model has no parameter ", name);
    const size_t n = ps.info(idx).numel();
    const size_t begin = layer < 0 ? 0 : static_cast<size_t>(layer) * n;
    const size_t total = layer < 0 ? n : n * static_cast<size_t>(h.n_layers);
    CHAINLM_CHECK(src.size() == total, "llama2.c import: ", name, " needs ", total,
                  " floats in the source array (all layers), it has ", src.size());
    std::copy(src.begin() + begin, src.begin() + begin + n, ps.value(idx));
    refuse_non_finite(ps.value(idx), n, source, name);
  };
  copy("tok_embeddings.weight", w.token_embedding, -1);
  for (int l = 0; l < h.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l);
    copy(p + ".attention_norm.weight", w.rms_att, l);
    copy(p + ".attention.wq.chain0.weight", w.wq, l);
    copy(p + ".attention.wk.chain0.weight", w.wk, l);
    copy(p + ".attention.wv.chain0.weight", w.wv, l);
    copy(p + ".attention.wo.chain0.weight", w.wo, l);
    copy(p + ".ffn_norm.weight", w.rms_ffn, l);
    copy(p + ".feed_forward.w1.chain0.weight", w.w1, l);
    copy(p + ".feed_forward.w2.chain0.weight", w.w2, l);
    copy(p + ".feed_forward.w3.chain0.weight", w.w3, l);
  }
  copy("norm.weight", w.rms_final, -1);
  if (!h.shared_classifier) copy("output.weight", w.wcls, -1);
  return model;
}

}  // namespace chainlm
