#pragma once
// The model config (config.json). Field names are a public interface (DESIGN.md, Formats).
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/rope_scaling.h"

namespace chainlm {

// PHD-Transformer repetition (SPEC B1, B2): every token is repeated `repeat` (K) times; copy 0
// is the original, copies 1..K-1 are hidden decoding tokens. window (W) > 0 lets hidden tokens
// attend the W previous hidden tokens (PHD-SWA); chunk (C) > 0 restricts that window to the
// same chunk of C positions (PHD-CSWA). repeat 1 is the ordinary transformer.
struct PhdConfig {
  int repeat = 1;
  int window = 0;
  int chunk = 0;
  bool shared_positions = false;  // position_ids "shared" (every copy at p) vs "extended" (p*K + c)

  bool enabled() const { return repeat > 1; }
  // Row position of copy c of position p for RoPE.
  int position(int p, int c) const { return shared_positions ? p : p * repeat + c; }
  // "PHD-K", "PHD-SWA-K-W", "PHD-CSWA-K-W-C"; "" when repeat is 1.
  std::string name() const;
};

struct ModelConfig {
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // 0 in JSON or absent: same as n_heads
  int ffn_dim = 0;
  int vocab_size = 0;
  std::vector<int> chains{1};  // [1] = ordinary LLaMA
  bool kv_share = false;       // CoLM-Air: K and V from chain 1 only
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;  // config.json "rope_scaling" (llama3), absent: plain RoPE
  float norm_eps = 1e-5f;
  bool tie_embeddings = false;
  int max_seq_len = 256;  // positions (original tokens); PHD rows are repeat times more
  PhdConfig phd;

  int head_dim() const { return dim / n_heads; }
  int n_chains() const { return static_cast<int>(chains.size()); }
  // "LLaMA", "CoLM", "CoLM-Air" (kv_share), with " + PHD-CSWA-2-16-32" for a PHD model: what
  // `info` and the server's /v1/models call it.
  std::string architecture() const;
  int chain_sum() const;
};

// Parses and validates; `where` names the source (a file path) in error messages.
ModelConfig config_from_json(const nlohmann::json& j, const std::string& where);
nlohmann::json config_to_json(const ModelConfig& c);
// Where two configs (as config_to_json writes them) differ, field by field and nested fields by
// dotted name, each as "name VALUE (OTHER: VALUE)" joined by ", ": "phd.repeat 3 (the run's:
// 2)". A field one side lacks shows as "none". Empty when they are equal.
std::string config_differences(const nlohmann::json& mine, const nlohmann::json& other,
                               const std::string& other_name);
ModelConfig load_config(const std::string& path);

// Upper bounds validate_config enforces besides SPEC A1 (vocab_size is bounded by int).
inline constexpr int kMaxDim = 1 << 20;
inline constexpr int kMaxFfnDim = 1 << 22;
inline constexpr int kMaxLayers = 1 << 16;
inline constexpr int kMaxSeqLen = 1 << 24;
// PHD repeats each token 2-4 times in its paper; a repeat of 10^6 (a corrupt or mistyped config)
// made every token cost a million passes and `generate` run out of memory without a word.
inline constexpr int kMaxPhdRepeat = 64;

// Throws chainlm::Error naming the field and the SPEC A1 rule a config breaks.
void validate_config(const ModelConfig& c, const std::string& where);

}  // namespace chainlm
