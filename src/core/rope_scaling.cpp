#include "core/rope_scaling.h"

#include <cmath>
#include <cstdint>
#include <limits>

#include "core/error.h"
#include "core/json_excerpt.h"

namespace chainlm {

namespace {

constexpr const char* kLlama3Fields[] = {"factor", "low_freq_factor", "high_freq_factor",
                                         "original_max_position_embeddings"};

// The type named by "rope_type" or "type"; both present must agree.
std::string type_of(const nlohmann::json& j, const std::string& where) {
  std::string type;
  for (const char* key : {"rope_type", "type"}) {
    if (!j.contains(key)) continue;
    const nlohmann::json& v = j.at(key);
    CHAINLM_CHECK(v.is_string(), where, ": 'rope_scaling.", key, "' must be a string (got ",
                  json_excerpt(v), ")");
    CHAINLM_CHECK(type.empty() || type == v.get<std::string>(), where,
                  ": 'rope_scaling' names two types, \"", type, "\" and \"", v.get<std::string>(), "\"");
    type = v.get<std::string>();
  }
  CHAINLM_CHECK(!type.empty(), where, ": 'rope_scaling' ", json_excerpt(j),
                " names no type (\"rope_type\": \"llama3\", as LLaMA-3.1 and later write it)");
  return type;
}

double number_field(const nlohmann::json& j, const char* name, const std::string& where) {
  CHAINLM_CHECK(j.contains(name), where, ": 'rope_scaling' of type llama3 needs '", name,
                "' (it has ", json_excerpt(j), ")");
  const nlohmann::json& v = j.at(name);
  CHAINLM_CHECK(v.is_number(), where, ": 'rope_scaling.", name, "' must be a number (got ",
                json_excerpt(v), ")");
  return v.get<double>();
}

}  // namespace

std::string RopeScaling::describe() const {
  if (type == Type::kNone) return "none";
  return cat("llama3 (factor ", factor, ", low_freq_factor ", low_freq_factor, ", high_freq_factor ",
             high_freq_factor, ", original_max_position_embeddings ", original_max_position_embeddings, ")");
}

RopeScaling rope_scaling_from_json(const nlohmann::json& j, const std::string& where, bool strict) {
  RopeScaling s;
  if (j.is_null()) return s;
  CHAINLM_CHECK(j.is_object(), where, ": 'rope_scaling' must be null or an object like {\"rope_type\": ",
                "\"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, ",
                "\"original_max_position_embeddings\": 8192} (got ", json_excerpt(j), ")");
  const std::string type = type_of(j, where);
  if (type == "default") {  // transformers' name for plain RoPE
    // Which takes no parameters: a "factor" beside it was dropped without a word, and its
    // writer may have believed scaling on.
    if (strict)
      for (auto it = j.begin(); it != j.end(); ++it)
        CHAINLM_CHECK(
            it.key() == "rope_type" || it.key() == "type", where, ": 'rope_scaling.", it.key(),
            "' has no meaning with rope_type \"default\" (plain RoPE takes no parameters; "
            "\"llama3\" is the scaling chainlm implements)");
    return s;
  }
  CHAINLM_CHECK(type == "llama3", where, ": rope_scaling type \"", type,
                "\" is not supported: chainlm implements plain RoPE and \"llama3\" scaling only");
  if (strict)
    for (auto it = j.begin(); it != j.end(); ++it) {
      bool known = it.key() == "rope_type" || it.key() == "type";
      for (const char* f : kLlama3Fields) known = known || it.key() == f;
      CHAINLM_CHECK(known, where, ": unknown field 'rope_scaling.", it.key(),
                    "' (known: rope_type, factor, low_freq_factor, high_freq_factor, "
                    "original_max_position_embeddings)");
    }
  s.type = RopeScaling::Type::kLlama3;
  s.factor = number_field(j, "factor", where);
  s.low_freq_factor = number_field(j, "low_freq_factor", where);
  s.high_freq_factor = number_field(j, "high_freq_factor", where);
  const char* original = "original_max_position_embeddings";
  CHAINLM_CHECK(j.contains(original), where, ": 'rope_scaling' of type llama3 needs '", original,
                "' (it has ", json_excerpt(j), ")");
  const nlohmann::json& v = j.at(original);
  // Unsigned values are checked apart: get<int64_t>() of one above 2^63 would wrap negative.
  const bool in_range = v.is_number_unsigned() ? v.get<uint64_t>() <= (uint64_t)std::numeric_limits<int>::max()
                        : v.is_number_integer() && v.get<int64_t>() >= std::numeric_limits<int>::min() &&
                              v.get<int64_t>() <= std::numeric_limits<int>::max();
  CHAINLM_CHECK(in_range, where, ": 'rope_scaling.", original,
                "' must be an integer number of positions (got ", json_excerpt(v), ")");
  s.original_max_position_embeddings = (int)v.get<int64_t>();
  validate_rope_scaling(s, where);
  return s;
}

nlohmann::json rope_scaling_to_json(const RopeScaling& s) {
  if (!s.enabled()) return nullptr;
  return {{"rope_type", "llama3"},
          {"factor", s.factor},
          {"low_freq_factor", s.low_freq_factor},
          {"high_freq_factor", s.high_freq_factor},
          {"original_max_position_embeddings", s.original_max_position_embeddings}};
}

void validate_rope_scaling(const RopeScaling& s, const std::string& where) {
  if (!s.enabled()) return;
  auto finite_positive = [&](double v, const char* name) {
    CHAINLM_CHECK(std::isfinite(v) && v > 0, where, ": 'rope_scaling.", name,
                  "' must be a positive number (got ", v, ")");
  };
  finite_positive(s.factor, "factor");
  finite_positive(s.low_freq_factor, "low_freq_factor");
  finite_positive(s.high_freq_factor, "high_freq_factor");
  // Equal factors would divide by zero in the interpolation; a smaller high factor makes the
  // band between the two wavelengths empty and the interpolation weights leave [0, 1].
  CHAINLM_CHECK(s.high_freq_factor > s.low_freq_factor, where, ": 'rope_scaling.high_freq_factor' (",
                s.high_freq_factor, ") must be larger than 'rope_scaling.low_freq_factor' (",
                s.low_freq_factor, ")");
  CHAINLM_CHECK(s.original_max_position_embeddings > 0, where,
                ": 'rope_scaling.original_max_position_embeddings' must be positive (got ",
                s.original_max_position_embeddings, ")");
}

}  // namespace chainlm
