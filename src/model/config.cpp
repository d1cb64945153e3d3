#include "model/config.h"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <numeric>
#include <sstream>
#include <type_traits>

#include "core/error.h"
#include "core/json_document.h"
#include "core/json_excerpt.h"
#include "io/atomic_file.h"

namespace chainlm {

int ModelConfig::chain_sum() const { return std::accumulate(chains.begin(), chains.end(), 0); }

namespace {

// The top-level fields of config.json besides "phd" and "rope_scaling": one list drives reading (in this order,
// so the first missing required field is the one named), writing and the unknown-field check.
template <typename Config, typename Visit>  // visit(name, field, required)
void for_each_field(Config& c, const Visit& visit) {
  visit("dim", c.dim, true);
  visit("n_layers", c.n_layers, true);
  visit("n_heads", c.n_heads, true);
  visit("n_kv_heads", c.n_kv_heads, false);
  visit("ffn_dim", c.ffn_dim, true);
  visit("vocab_size", c.vocab_size, true);
  visit("chains", c.chains, false);
  visit("kv_share", c.kv_share, false);
  visit("rope_theta", c.rope_theta, false);
  visit("norm_eps", c.norm_eps, false);
  visit("tie_embeddings", c.tie_embeddings, false);
  visit("max_seq_len", c.max_seq_len, false);
}

bool is_known_field(const std::string& name) {
  bool known = name == "phd" || name == "rope_scaling";
  ModelConfig c;
  for_each_field(c, [&](const char* field, const auto&, bool) { known = known || name == field; });
  return known;
}

// Strict conversions: false for the wrong JSON type or a value outside the C++ type. (nlohmann's
// get<int>() converts 1e30 with undefined behaviour and 2^40 by silent truncation, and
// get<float>() overflows on 1e300; found by fuzzing.)
bool convert(const nlohmann::json& v, int& out) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > (uint64_t)std::numeric_limits<int>::max()) return false;
    out = (int)u;
    return true;
  }
  if (!v.is_number_integer()) return false;
  const int64_t i = v.get<int64_t>();
  if (i < std::numeric_limits<int>::min() || i > std::numeric_limits<int>::max()) return false;
  out = (int)i;
  return true;
}

bool convert(const nlohmann::json& v, float& out) {
  if (!v.is_number()) return false;
  const double d = v.get<double>();
  if (!std::isfinite(d) || std::fabs(d) > std::numeric_limits<float>::max()) return false;
  out = (float)d;
  return true;
}

bool convert(const nlohmann::json& v, bool& out) {
  if (!v.is_boolean()) return false;
  out = v.get<bool>();
  return true;
}

bool convert(const nlohmann::json& v, std::string& out) {
  if (!v.is_string()) return false;
  out = v.get<std::string>();
  return true;
}

bool convert(const nlohmann::json& v, std::vector<int>& out) {
  if (!v.is_array()) return false;
  std::vector<int> values(v.size());
  for (size_t i = 0; i < values.size(); ++i)
    if (!convert(v[i], values[i])) return false;
  out = std::move(values);
  return true;
}

template <typename T>
void read_field(const nlohmann::json& j, const char* name, T& out, const std::string& where,
                bool required) {
  if (!j.contains(name)) {
    CHAINLM_CHECK(!required, where, ": missing required field '", name, "'");
    return;
  }
  CHAINLM_CHECK(convert(j.at(name), out), where, ": field '", name,
                "' has the wrong type or is out of range (", json_excerpt(j.at(name)), ")");
}

PhdConfig phd_from_json(const nlohmann::json& j, const std::string& where) {
  CHAINLM_CHECK(j.is_object(), where, ": field 'phd' must be an object like {\"repeat\": 2, ",
                "\"window\": 16, \"chunk\": 32, \"position_ids\": \"extended\"} (got ",
                json_excerpt(j), ")");
  const std::string w = where + ": phd";
  for (auto it = j.begin(); it != j.end(); ++it)
    CHAINLM_CHECK(it.key() == "repeat" || it.key() == "window" || it.key() == "chunk" ||
                      it.key() == "position_ids",
                  w, ": unknown field '", it.key(), "' (known: repeat, window, chunk, position_ids)");
  PhdConfig p;
  read_field(j, "repeat", p.repeat, w, false);
  read_field(j, "window", p.window, w, false);
  read_field(j, "chunk", p.chunk, w, false);
  std::string ids = "extended";
  read_field(j, "position_ids", ids, w, false);
  CHAINLM_CHECK(ids == "extended" || ids == "shared", w, ": 'position_ids' must be \"extended\" ",
                "(copy c of position p at p*K + c) or \"shared\" (every copy at p), got \"", ids,
                "\"");
  p.shared_positions = ids == "shared";
  return p;
}

}  // namespace

std::string ModelConfig::architecture() const {
  const std::string base = kv_share ? "CoLM-Air" : n_chains() > 1 ? "CoLM" : "LLaMA";
  return phd.enabled() ? base + " + " + phd.name() : base;
}

std::string PhdConfig::name() const {
  if (repeat <= 1) return "";
  std::ostringstream os;
  os << (window == 0 ? "PHD-" : chunk == 0 ? "PHD-SWA-" : "PHD-CSWA-") << repeat;
  if (window > 0) os << "-" << window;
  if (chunk > 0) os << "-" << chunk;
  return os.str();
}

ModelConfig config_from_json(const nlohmann::json& j, const std::string& where) {
  CHAINLM_CHECK(j.is_object(), where, ": model config must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it)
    CHAINLM_CHECK(is_known_field(it.key()), where, ": unknown field '", it.key(), "'");
  ModelConfig c;
  for_each_field(c, [&](const char* name, auto& field, bool required) {
    read_field(j, name, field, where, required);
  });
  if (j.contains("phd") && !j.at("phd").is_null()) c.phd = phd_from_json(j.at("phd"), where);
  if (j.contains("rope_scaling")) c.rope_scaling = rope_scaling_from_json(j.at("rope_scaling"), where, true);
  // Left out, n_kv_heads is n_heads; written as 0 it is refused like any other count below 1.
  CHAINLM_CHECK(!j.contains("n_kv_heads") || c.n_kv_heads != 0, where,
                ": 'n_kv_heads' must be positive (got 0); leave it out for as many as 'n_heads'");
  if (c.n_kv_heads == 0) c.n_kv_heads = c.n_heads;
  validate_config(c, where);
  return c;
}

namespace {

// A float as the shortest decimal that reads back as it (1e-05, not the 9.999999747378752e-06
// its double is): what a person wrote, and the same float when read.
double as_written(float f) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof buf, f).ptr;
  return std::strtod(std::string(buf, end).c_str(), nullptr);
}

}  // namespace

namespace {

void add_differences(const nlohmann::json& mine, const nlohmann::json& other,
                     const std::string& prefix, const std::string& other_name, std::string& out) {
  auto add = [&](const std::string& name, const nlohmann::json* a, const nlohmann::json* b) {
    if (a && b && a->is_object() && b->is_object())
      return add_differences(*a, *b, name + ".", other_name, out);
    if (a && b && *a == *b) return;
    out += (out.empty() ? "" : ", ") + name + " " + (a ? a->dump() : "none") + " (" + other_name +
           ": " + (b ? b->dump() : "none") + ")";
  };
  for (const auto& [key, value] : mine.items())
    add(prefix + key, &value, other.contains(key) ? &other[key] : nullptr);
  for (const auto& [key, value] : other.items())
    if (!mine.contains(key)) add(prefix + key, nullptr, &value);
}

}  // namespace

std::string config_differences(const nlohmann::json& mine, const nlohmann::json& other,
                               const std::string& other_name) {
  std::string out;
  add_differences(mine, other, "", other_name, out);
  return out;
}

nlohmann::json config_to_json(const ModelConfig& c) {
  nlohmann::json j = nlohmann::json::object();
  for_each_field(c, [&](const char* name, const auto& field, bool) {
    if constexpr (std::is_same_v<std::decay_t<decltype(field)>, float>)
      j[name] = as_written(field);
    else
      j[name] = field;
  });
  // Written only when set: a chainlm that predates it refuses the unknown field instead of
  // running the model with unscaled frequencies.
  if (c.rope_scaling.enabled()) j["rope_scaling"] = rope_scaling_to_json(c.rope_scaling);
  if (c.phd.enabled())
    j["phd"] = {{"repeat", c.phd.repeat},
                {"window", c.phd.window},
                {"chunk", c.phd.chunk},
                {"position_ids", c.phd.shared_positions ? "shared" : "extended"}};
  return j;
}

ModelConfig load_config(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  CHAINLM_CHECK(
      !fs::is_directory(path, ec), path, " is a directory, not a model config JSON file",
      fs::exists(fs::path(path) / "config.json", ec)
          ? cat(" (a model: train starts from its weights with --init, other commands read it with "
                "--model; its config alone is ",
                (fs::path(path) / "config.json").string(), ")")
      : fs::exists(fs::path(path) / "latest", ec)
          ? std::string(" (a training run: train starts from its latest weights with --init, other "
                        "commands read them with --model)")
          : std::string());
  CHAINLM_CHECK(fs::exists(path, ec), path, ": cannot open model config (no such file)");
  return config_from_json(parse_json_document(read_file(path), path), path);
}

namespace {

// SPEC B1/B2. The hidden-token stream of a max_seq_len sequence holds (K-1)*max_seq_len tokens:
// a window must fit inside it, and a chunk inside the sequence.
void validate_phd(const ModelConfig& c, const std::string& where) {
  const PhdConfig& p = c.phd;
  CHAINLM_CHECK(p.repeat >= 1, where, ": 'phd.repeat' (K) must be >= 1 (got ", p.repeat,
                "); K = 1 is the ordinary transformer");
  CHAINLM_CHECK(p.repeat <= kMaxPhdRepeat, where, ": 'phd.repeat' (K) is ", p.repeat,
                ", more than ", kMaxPhdRepeat,
                ", the most this engine accepts (the PHD paper repeats tokens 2-4 "
                "times; each repeat costs a whole pass of the model per token)");
  CHAINLM_CHECK(p.window >= 0, where, ": 'phd.window' (W) must be >= 0 (got ", p.window,
                "); 0 means plain PHD without a hidden-token window");
  CHAINLM_CHECK(p.chunk >= 0, where, ": 'phd.chunk' (C) must be >= 0 (got ", p.chunk,
                "); 0 means no chunking");
  CHAINLM_CHECK(p.chunk == 0 || p.window > 0, where, ": 'phd.chunk' (", p.chunk,
                ") needs 'phd.window' > 0: chunks restrict the hidden-token window (PHD-CSWA)");
  CHAINLM_CHECK(p.window == 0 || p.repeat >= 2, where, ": 'phd.window' (", p.window,
                ") needs 'phd.repeat' >= 2: with K = 1 there are no hidden tokens to attend");
  const long hidden = (long)(p.repeat - 1) * c.max_seq_len;
  CHAINLM_CHECK(p.window < hidden || p.window == 0, where, ": 'phd.window' (", p.window,
                ") is larger than the sequence: it must be < (repeat-1)*max_seq_len = ", hidden,
                ", the hidden tokens of a whole max_seq_len sequence");
  // CSWA: the window reaches only into the query's chunk, which holds (K-1)*C hidden tokens.
  const long chunk_hidden = (long)(p.repeat - 1) * p.chunk;
  CHAINLM_CHECK(
      p.chunk == 0 || p.window < chunk_hidden, where, ": 'phd.window' (", p.window,
      ") is larger than a chunk: it must be < (repeat-1)*chunk = ", chunk_hidden,
      ", the hidden tokens of one chunk, which the window never reaches past (a larger one could "
      "never be filled)");
  CHAINLM_CHECK(p.chunk <= c.max_seq_len, where, ": 'phd.chunk' (", p.chunk,
                ") is larger than the sequence: it must be <= max_seq_len (", c.max_seq_len, ")");
  CHAINLM_CHECK(
      (long)p.repeat * c.max_seq_len <= (1L << 30), where, ": 'phd.repeat' (", p.repeat,
      ") times max_seq_len (", c.max_seq_len,
      ") is too many rows: at most 2^30, so 'phd.repeat' <= ", (1L << 30) / c.max_seq_len);
}

}  // namespace

void validate_config(const ModelConfig& c, const std::string& where) {
  auto positive = [&](int v, const char* name) {
    CHAINLM_CHECK(v > 0, where, ": '", name, "' must be positive (got ", v, ")");
  };
  positive(c.dim, "dim");
  positive(c.n_layers, "n_layers");
  positive(c.n_heads, "n_heads");
  positive(c.n_kv_heads, "n_kv_heads");
  positive(c.ffn_dim, "ffn_dim");
  positive(c.vocab_size, "vocab_size");
  positive(c.max_seq_len, "max_seq_len");
  // Far beyond any model a CPU trains or serves, and small enough that no size computed from
  // them overflows 64 bits: a corrupt or hostile config is refused here, not by the allocator.
  auto at_most = [&](int v, int hi, const char* name) {
    CHAINLM_CHECK(v <= hi, where, ": '", name, "' (", v, ") exceeds ", hi,
                  ", the largest this engine accepts");
  };
  at_most(c.dim, kMaxDim, "dim");
  at_most(c.ffn_dim, kMaxFfnDim, "ffn_dim");
  at_most(c.n_layers, kMaxLayers, "n_layers");
  at_most(c.max_seq_len, kMaxSeqLen, "max_seq_len");
  CHAINLM_CHECK(c.rope_theta > 0, where, ": 'rope_theta' must be positive");
  validate_rope_scaling(c.rope_scaling, where);
  CHAINLM_CHECK(c.norm_eps > 0, where, ": 'norm_eps' must be positive");
  CHAINLM_CHECK(!c.chains.empty(), where, ": 'chains' must list at least one chain");
  for (int ci : c.chains)
    CHAINLM_CHECK(ci > 0, where, ": every entry of 'chains' must be a positive integer");
  CHAINLM_CHECK(c.dim % c.n_heads == 0, where, ": 'dim' (", c.dim,
                ") must be a multiple of 'n_heads' (", c.n_heads, ")");
  CHAINLM_CHECK(c.head_dim() % 2 == 0, where, ": head dimension dim/n_heads = ", c.head_dim(),
                " must be even for RoPE");
  CHAINLM_CHECK(c.n_heads % c.n_kv_heads == 0, where, ": 'n_heads' (", c.n_heads,
                ") must be a multiple of 'n_kv_heads' (", c.n_kv_heads, ")");
  validate_phd(c, where);
  const int s = c.chain_sum();
  CHAINLM_CHECK(c.n_heads % s == 0, where, ": 'n_heads' (", c.n_heads,
                ") must be a multiple of sum(chains) (", s,
                ") so that every head lies in exactly one chain (SPEC A1)");
  const int m = c.n_heads / s;
  for (size_t i = 0; i < c.chains.size(); ++i) {
    const int ci = c.chains[i];
    // Chains count from 1 in messages, as in the papers and the CLI (--chains k).
    CHAINLM_CHECK((long)c.dim * ci % s == 0, where, ": chain ", i + 1, ": dim*c_i/sum(chains) = ",
                  c.dim, "*", ci, "/", s, " is not an integer (SPEC A1)");
    CHAINLM_CHECK((long)c.ffn_dim * ci % s == 0, where, ": chain ", i + 1,
                  ": ffn_dim*c_i/sum(chains) = ", c.ffn_dim, "*", ci, "/", s,
                  " is not an integer (SPEC A1)");
    if (c.kv_share) {
      CHAINLM_CHECK(
          (m * ci) % c.n_kv_heads == 0, where, ": chain ", i + 1, " owns ", m * ci,
          m * ci == 1 ? " query head" : " query heads", ", which is not a multiple of n_kv_heads (",
          c.n_kv_heads,
          c.n_kv_heads == c.n_heads ? ", as many as n_heads: its value when left out" : "",
          "), as CoLM-Air (kv_share) requires (SPEC A1)");
    } else {
      CHAINLM_CHECK((long)c.n_kv_heads * ci % s == 0, where, ": chain ", i + 1,
                    ": n_kv_heads*c_i/sum(chains) = ", c.n_kv_heads, "*", ci, "/", s,
                    " is not an integer: with GQA every chain must own whole KV heads (SPEC A1)");
    }
  }
}

}  // namespace chainlm
