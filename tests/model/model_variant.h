#pragma once
// The model shapes the parameterized model and inference tests run over: chains, CoLM-Air, KV
// heads, tied embeddings, PHD repetition and RoPE scaling, on tiny_config's widths.
#include <gtest/gtest.h>

#include <ostream>
#include <sstream>
#include <string>
#include <vector>

#include "model_test_util.h"

namespace chainlm::test {

struct ModelVariant {
  std::vector<int> chains;
  bool kv_share = false;  // CoLM-Air
  int n_kv_heads = 0;     // 0: as many as query heads
  bool tie = false;       // tied embeddings
  // PHD (SPEC B1, B2): every token repeated K times, hidden-token window W within chunks of C
  // positions; K = 1 is the ordinary model.
  int K = 1, W = 0, C = 0;
  bool shared = false;  // PHD position_ids "shared" (else "extended")
  // llama3 RoPE scaling. On tiny_config's head size 8 (theta 10000) with original length 64,
  // low 1, high 4: pair 0 (wavelength 6.3) is kept, pair 1 (62.8) interpolated, pairs 2 and 3
  // slowed down by the factor, so every branch of the rule is used.
  bool rope_llama3 = false;

  // tiny_config of this shape with max_seq_len positions, validated.
  ModelConfig config(int max_seq_len = 32) const {
    ModelConfig c = tiny_config(chains, kv_share, n_kv_heads);
    c.tie_embeddings = tie;
    c.max_seq_len = max_seq_len;
    c.phd.repeat = K;
    c.phd.window = W;
    c.phd.chunk = C;
    c.phd.shared_positions = shared;
    if (rope_llama3)
      c.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8, .low_freq_factor = 1,
                        .high_freq_factor = 4, .original_max_position_embeddings = 64};
    validate_config(c, "test");
    return c;
  }
};

inline void PrintTo(const ModelVariant& v, std::ostream* os) {
  *os << "chains " << ::testing::PrintToString(v.chains) << (v.kv_share ? " Air" : "") << " kv "
      << v.n_kv_heads << (v.tie ? " tied" : "");
  if (v.K > 1)
    *os << " K " << v.K << " W " << v.W << " C " << v.C << (v.shared ? " shared" : " extended");
  if (v.rope_llama3) *os << " llama3 RoPE";
}

// The test-name suffix: "Air_1_2_1_kv2_tied_K2_W4_C8_extended".
inline std::string variant_name(const ::testing::TestParamInfo<ModelVariant>& info) {
  const ModelVariant& v = info.param;
  std::ostringstream os;
  os << (v.kv_share ? "Air" : v.chains.size() == 1 ? "LLaMA" : "CoLM");
  for (int c : v.chains) os << "_" << c;
  os << "_kv" << v.n_kv_heads << (v.tie ? "_tied" : "");
  if (v.K > 1)
    os << "_K" << v.K << "_W" << v.W << "_C" << v.C << (v.shared ? "_shared" : "_extended");
  if (v.rope_llama3) os << "_llama3rope";
  return os.str();
}

}  // namespace chainlm::test
