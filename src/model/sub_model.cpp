#include "model/sub_model.h"

#include <cstring>

#include "core/error.h"
#include "core/tensor.h"
#include "model/chain_layout.h"

namespace chainlm {

ModelConfig sub_model_config(const ModelConfig& c, int k) {
  CHAINLM_CHECK(k >= 1 && k <= c.n_chains(), "--chains ", k, " is outside 1..", c.n_chains());
  const ChainLayout L(c);
  ModelConfig s = c;
  s.chains.assign(c.chains.begin(), c.chains.begin() + k);
  s.dim = L.dim.prefix(k);
  s.ffn_dim = L.ffn.prefix(k);
  s.n_heads = L.heads.prefix(k);
  s.n_kv_heads = L.active_kv_width(k) / L.head_dim;
  validate_config(s, cat("sub-model of ", k, " chains"));
  return s;
}

std::unique_ptr<Model> extract_sub_model(const Model& model, int k) {
  CHAINLM_CHECK(!model.quantized() && !model.params().values_released(),
                "extract_sub_model: needs the fp32 weights (got ", model.weight_format(), ")");
  auto sub = std::make_unique<Model>(sub_model_config(model.config(), k));
  const ParamStore& src = model.params();
  ParamStore& dst = sub->params();
  for (int i = 0; i < (int)dst.infos().size(); ++i) {
    const ParamInfo& p = dst.info(i);
    const int j = src.find(p.name);
    CHAINLM_CHECK(j >= 0, "extract_sub_model: the source has no tensor '", p.name, "'");
    const ParamInfo& q = src.info(j);
    // Chain blocks and the shared K/V have the same shape; D-wide tensors keep their first
    // columns (rows of a matrix, elements of a vector).
    CHAINLM_CHECK(p.shape.size() == q.shape.size() && p.shape[0] <= q.shape[0] && p.cols() <= q.cols() &&
                      (p.shape.size() == 1 || p.shape[0] == q.shape[0]),
                  "extract_sub_model: tensor '", p.name, "' of shape ", shape_to_string(p.shape),
                  " is not a part of ", shape_to_string(q.shape));
    const size_t rows = p.numel() / p.cols();
    for (size_t r = 0; r < rows; ++r)
      std::memcpy(dst.value(i) + r * p.cols(), src.value(j) + r * q.cols(), sizeof(float) * p.cols());
  }
  return sub;
}

}  // namespace chainlm
