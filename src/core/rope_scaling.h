#pragma once
// RoPE frequency scaling, as Hugging Face transformers configures it in config.json's
// "rope_scaling" (docs/formats.md). chainlm implements the "llama3" type (LLaMA-3.1/3.2/3.3):
// every inverse frequency of RoPE is rescaled by a rule of its wavelength
// (transformers' _compute_llama3_parameters; kernels/rope.h computes it). It lives in core
// because both the model config (model/) and the Hugging Face config reader (io/, which depends
// on core only) read and write the same JSON object.
#include <nlohmann/json.hpp>
#include <string>

namespace chainlm {

struct RopeScaling {
  enum class Type { kNone, kLlama3 };
  Type type = Type::kNone;
  // kLlama3: wavelengths longer than original_max_position_embeddings / low_freq_factor are
  // slowed down by `factor`, those shorter than original / high_freq_factor kept, the band in
  // between interpolated. Unused (zero) for kNone.
  double factor = 0, low_freq_factor = 0, high_freq_factor = 0;
  int original_max_position_embeddings = 0;

  bool enabled() const { return type != Type::kNone; }
  bool operator==(const RopeScaling&) const = default;
  // "llama3 (factor 32, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings
  // 8192)", or "none".
  std::string describe() const;
};

// Parses a "rope_scaling" value: null (or {"rope_type": "default"}) is plain RoPE; an object
// names its type in "rope_type" (or "type", transformers' older key) and, for "llama3", holds
// factor, low_freq_factor, high_freq_factor and original_max_position_embeddings. Throws
// chainlm::Error naming `where` and the field for a missing or wrong field, or a type chainlm
// does not implement (linear, dynamic, yarn, longrope, ...), naming it. Keys it does not know are
// an error when `strict` (chainlm's own config.json), ignored otherwise (a Hugging Face
// config.json, as transformers ignores them).
RopeScaling rope_scaling_from_json(const nlohmann::json& j, const std::string& where, bool strict);
// The object rope_scaling_from_json reads back ("rope_type" spelled as transformers writes it
// today); null for plain RoPE.
nlohmann::json rope_scaling_to_json(const RopeScaling& s);
// Throws naming `where` and the field when a value makes the frequencies undefined or meaningless:
// factor and low_freq_factor must be positive and finite, high_freq_factor larger than
// low_freq_factor (the interpolation divides by their difference), the original length positive.
void validate_rope_scaling(const RopeScaling& s, const std::string& where);

}  // namespace chainlm
