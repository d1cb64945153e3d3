#include "model/expand.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>

#include "core/error.h"
#include "core/number_format.h"

namespace chainlm {

ModelConfig expanded_config(const ModelConfig& base, const ExpandOptions& o) {
  CHAINLM_CHECK(!o.add_chains.empty(), "expand: --add-chains lists no chain");
  for (int a : o.add_chains)
    CHAINLM_CHECK(a > 0, "expand: every entry of --add-chains must be a positive number of "
                  "query heads (got ", a, ")");
  const ChainLayout base_layout(base);
  if (base.n_chains() > 1)
    CHAINLM_CHECK(o.kv_share == base.kv_share, "expand: the base already has ", base.n_chains(),
                  " chains and is ", base.kv_share ? "CoLM-Air (kv_share)" : "CoLM (no kv_share)",
                  "; the expanded model keeps its KV layout, so ",
                  base.kv_share ? "pass --kv-share" : "do not pass --kv-share");
  ModelConfig c = base;
  c.chains.clear();
  for (int i = 0; i < base_layout.n; ++i) c.chains.push_back(base_layout.heads.width(i));
  long added = 0;
  for (int a : o.add_chains) {
    c.chains.push_back(a);
    added += a;
  }
  const int H = base.n_heads, hd = base.head_dim(), F = base.ffn_dim;
  const std::string where = cat("expand: chains ", nlohmann::json(c.chains).dump(),
                                o.kv_share ? " (CoLM-Air)" : " (CoLM)");
  // The grown widths in 64 bits first: chains of a billion heads wrapped an int and were
  // refused for values nobody gave ("'n_heads' must be positive (got -2147483646)", a trial).
  const long dim = (long)hd * (H + added), ffn = (long)F * (H + added) / H;
  CHAINLM_CHECK(dim <= kMaxDim, where, ": 'dim' (", dim, ") exceeds ", kMaxDim,
                ", the largest this engine accepts; check --add-chains");
  CHAINLM_CHECK(ffn <= kMaxFfnDim, where, ": 'ffn_dim' (", ffn, ") exceeds ", kMaxFfnDim,
                ", the largest this engine accepts; check --add-chains");
  c.n_heads = (int)(H + added);
  c.dim = (int)dim;
  c.kv_share = o.kv_share;
  if (o.kv_share) {
    for (int a : o.add_chains)
      CHAINLM_CHECK(a % base.n_kv_heads == 0, where, ": CoLM-Air (kv_share) shares the base's ",
                    base.n_kv_heads,
                    " KV heads with every chain, so every chain's query-head count ",
                    "must be a multiple of n_kv_heads (", base.n_kv_heads, "); a new chain of ",
                    count_of(a, "head"), " is not (SPEC A1)");
  } else {
    // CoLM: every chain owns n_kv_heads/n_heads of its query heads' worth of KV heads, as the
    // base chain does.
    for (int a : o.add_chains)
      CHAINLM_CHECK((long)base.n_kv_heads * a % H == 0, where, ": CoLM (no kv_share) gives every ",
                    "chain its own KV heads in the base's proportion (", base.n_kv_heads, " per ",
                    H, " query heads); a new chain of ", count_of(a, "head"), " would own ",
                    base.n_kv_heads, "*", a, "/", H, " KV heads, not an integer (SPEC A1)");
    c.n_kv_heads = (int)((long)base.n_kv_heads * c.n_heads / H);
  }
  for (size_t j = 0; j < o.add_chains.size(); ++j) {
    const int a = o.add_chains[j];
    CHAINLM_CHECK((long)F * a % H == 0, where, ": a new chain of ", count_of(a, "head"),
                  " needs an FFN width of ", "ffn_dim*", a, "/n_heads = ", F, "*", a, "/", H,
                  ", which is not an integer (SPEC A1: ffn_dim*c_i/sum(chains) must be whole)");
  }
  c.ffn_dim = (int)ffn;
  // Zero head columns for the new chains and random embedding columns cannot share a matrix.
  c.tie_embeddings = false;
  validate_config(c, where);
  return c;
}

namespace {

// The expanded model's name for a base tensor: CoLM-Air stores the shared K/V projections as
// plain "<base>.weight", CoLM as chain blocks; a 1-chain base may be either.
std::string expanded_name(const Model& expanded, const std::string& base_name) {
  if (expanded.params().find(base_name) >= 0) return base_name;
  auto swap_suffix = [&](const std::string& from, const std::string& to) -> std::string {
    if (base_name.size() > from.size() &&
        base_name.compare(base_name.size() - from.size(), from.size(), from) == 0)
      return base_name.substr(0, base_name.size() - from.size()) + to;
    return "";
  };
  for (const auto& [from, to] : {std::pair<std::string, std::string>{".chain0.weight", ".weight"},
                                 {".weight", ".chain0.weight"}}) {
    const std::string n = swap_suffix(from, to);
    if (!n.empty() && expanded.params().find(n) >= 0) return n;
  }
  fail("expand: the expanded model has no tensor for the base's ", base_name);
}

}  // namespace

std::unique_ptr<Model> expand_model(const Model& base, const ExpandOptions& o) {
  CHAINLM_CHECK(!base.quantized(), "expand: the base holds ", base.weight_format(),
                " weights (a quantized checkpoint or GGUF file); expand an fp32 model (the "
                "checkpoint it was quantized from, or an F32/F16 export of it), then quantize the "
                "result");
  const ModelConfig config = expanded_config(base.config(), o);
  auto model = std::make_unique<Model>(config);
  model->init_random(o.seed);
  ParamStore& ps = model->params();
  const ParamStore& bs = base.params();
  const int64_t D0 = base.config().dim, D = config.dim;
  for (int i = 0; i < (int)bs.infos().size(); ++i) {
    const ParamInfo& bp = bs.info(i);
    const int idx = ps.find(expanded_name(*model, bp.name));
    const ParamInfo& p = ps.info(idx);
    const float* src = bs.value(i);
    float* dst = ps.value(idx);
    if (p.shape == bp.shape) {  // a chain block: unchanged
      std::memcpy(dst, src, sizeof(float) * p.numel());
    } else {  // D-wide (embedding, gains, head): the base fills the first D0 columns
      CHAINLM_CHECK(bp.cols() == D0 && p.cols() == D && p.numel() / D == bp.numel() / D0,
                    "expand: cannot place the base's ", bp.name, " ", shape_to_string(bp.shape),
                    " into ", p.name, " ", shape_to_string(p.shape));
      for (size_t r = 0; r < p.numel() / D; ++r)
        std::memcpy(dst + r * D, src + r * D0, sizeof(float) * D0);
    }
  }
  // The head: the base's head (its embedding when tied) in the first D0 columns, zeros after.
  const int out = ps.find("output.weight");
  const int base_head = bs.find(base.config().tie_embeddings ? "tok_embeddings.weight" : "output.weight");
  float* head = ps.value(out);
  const float* bh = bs.value(base_head);
  for (int64_t r = 0; r < config.vocab_size; ++r) {
    std::memcpy(head + r * D, bh + r * D0, sizeof(float) * D0);
    std::fill(head + r * D + D0, head + (r + 1) * D, 0.0f);
  }
  return model;
}

}  // namespace chainlm
