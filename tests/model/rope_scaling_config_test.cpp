// "rope_scaling" in chainlm's model config: parsing, errors naming the field, round trips
// through config.json and checkpoints, the model computing with it, and chain expansion and
// sub-models keeping it.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "core/error.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/expand.h"
#include "model/sub_model.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;

const RopeScaling kLlama32{.type = RopeScaling::Type::kLlama3, .factor = 32, .low_freq_factor = 1,
                           .high_freq_factor = 4, .original_max_position_embeddings = 8192};

nlohmann::json base_json() {
  return nlohmann::json::parse(R"({"dim": 64, "n_layers": 2, "n_heads": 4, "ffn_dim": 96,
                                   "vocab_size": 40, "max_seq_len": 64})");
}

nlohmann::json llama3_json() {
  return nlohmann::json::parse(R"({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})");
}

ModelConfig with_scaling(const nlohmann::json& s) {
  nlohmann::json j = base_json();
  j["rope_scaling"] = s;
  return config_from_json(j, "cfg.json");
}

std::string error_of(const nlohmann::json& s) {
  try {
    with_scaling(s);
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "accepted " << s.dump();
  return "";
}

std::vector<float> logits_of(Model& m, int k, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), k, out.data());
  return out;
}

TEST(RopeScalingConfig, AbsentNullOrDefaultIsPlainRope) {
  EXPECT_FALSE(config_from_json(base_json(), "cfg.json").rope_scaling.enabled());
  EXPECT_FALSE(with_scaling(nullptr).rope_scaling.enabled());
  EXPECT_FALSE(with_scaling({{"rope_type", "default"}}).rope_scaling.enabled());
  // Not written when absent: older configs stay byte-identical.
  EXPECT_FALSE(config_to_json(config_from_json(base_json(), "cfg.json")).contains("rope_scaling"));
}

TEST(RopeScalingConfig, ParsesLlama3AndRoundTrips) {
  const ModelConfig c = with_scaling(llama3_json());
  EXPECT_EQ(c.rope_scaling, kLlama32);
  EXPECT_EQ(config_to_json(c)["rope_scaling"], llama3_json());
  EXPECT_EQ(config_from_json(config_to_json(c), "again").rope_scaling, kLlama32);
  // transformers' older key, and integers for the factors.
  auto old = llama3_json();
  old.erase("rope_type");
  old["type"] = "llama3";
  old["factor"] = 32;
  EXPECT_EQ(with_scaling(old).rope_scaling, kLlama32);
  EXPECT_EQ(kLlama32.describe(),
            "llama3 (factor 32, low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192)");
}

TEST(RopeScalingConfig, RefusesBadInputNamingTheField) {
  auto with = [](const char* key, const nlohmann::json& v) {
    auto j = llama3_json();
    if (v.is_discarded()) j.erase(key);
    else j[key] = v;
    return j;
  };
  const nlohmann::json gone = nlohmann::json(nlohmann::json::value_t::discarded);
  struct Case {
    nlohmann::json value;
    std::string expect;
  };
  const std::vector<Case> cases = {
      {{{"rope_type", "linear"}, {"factor", 2.0}}, "rope_scaling type \"linear\" is not supported"},
      {{{"type", "yarn"}, {"factor", 4.0}}, "rope_scaling type \"yarn\" is not supported"},
      {{{"rope_type", "dynamic"}, {"factor", 2.0}}, "\"dynamic\""},
      {{{"factor", 8.0}}, "names no type"},
      {{{"rope_type", "llama3"}, {"type", "linear"}}, "names two types"},
      {{{"rope_type", 3}}, "'rope_scaling.rope_type' must be a string"},
      {"llama3", "'rope_scaling' must be null or an object"},
      {with("factor", "big"), "'rope_scaling.factor' must be a number"},
      {with("factor", gone), "needs 'factor'"},
      {with("low_freq_factor", gone), "needs 'low_freq_factor'"},
      {with("high_freq_factor", gone), "needs 'high_freq_factor'"},
      {with("original_max_position_embeddings", gone), "needs 'original_max_position_embeddings'"},
      {with("original_max_position_embeddings", 8192.5),
       "'rope_scaling.original_max_position_embeddings' must be an integer"},
      {with("original_max_position_embeddings", 1e12), "must be an integer"},
      {with("original_max_position_embeddings", 0),
       "'rope_scaling.original_max_position_embeddings' must be positive"},
      {with("factor", 0), "'rope_scaling.factor' must be a positive number"},
      {with("factor", -8), "'rope_scaling.factor' must be a positive number"},
      {with("low_freq_factor", 0), "'rope_scaling.low_freq_factor' must be a positive number"},
      {with("high_freq_factor", 1.0),
       "'rope_scaling.high_freq_factor' (1) must be larger than 'rope_scaling.low_freq_factor' "
       "(1)"},
      {with("attention_factor", 1.0), "unknown field 'rope_scaling.attention_factor'"},
      // Dropped without a word: its writer may have believed scaling on.
      {{{"rope_type", "default"}, {"factor", 8.0}},
       "'rope_scaling.factor' has no meaning with rope_type \"default\""},
  };
  for (const Case& c : cases) {
    const std::string e = error_of(c.value);
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.value.dump() << ": " << e;
    EXPECT_EQ(e.rfind("cfg.json", 0), 0u) << e;
  }
  // A config built in code is validated too.
  ModelConfig c = test::llama_config(false);
  c.rope_scaling = kLlama32;
  c.rope_scaling.high_freq_factor = 0.5;
  EXPECT_THROW(validate_config(c, "test"), Error);
}

TEST(RopeScalingConfig, TheModelComputesWithItAndCheckpointsKeepIt) {
  ModelConfig plain = test::llama_config(false);
  ModelConfig scaled = plain;
  // A short original length puts this head size's pairs in every band (see model_variant.h).
  scaled.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8, .low_freq_factor = 1,
                         .high_freq_factor = 4, .original_max_position_embeddings = 64};
  Model a(plain), b(scaled);
  test::randomize_trained_like(a, 4);
  b.copy_weights_from(a);
  const auto tokens = test::random_tokens(24, plain.vocab_size, 3);
  EXPECT_NE(logits_of(a, 1, tokens), logits_of(b, 1, tokens));
  TempDir dir;
  save_model(b, dir.file("ckpt"));
  const auto j = nlohmann::json::parse(testing::read_bytes(dir.file("ckpt/config.json")));
  EXPECT_EQ(j["rope_scaling"]["rope_type"], "llama3");
  auto back = load_model(dir.file("ckpt"));
  EXPECT_EQ(back->config().rope_scaling, scaled.rope_scaling);
  EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(b, 1, tokens));
}

TEST(RopeScalingConfig, ExpansionAndSubModelsKeepIt) {
  ModelConfig c = test::llama_config(true);
  c.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 8, .low_freq_factor = 1,
                    .high_freq_factor = 4, .original_max_position_embeddings = 64};
  Model base(c);
  test::randomize_trained_like(base, 6);
  const auto tokens = test::random_tokens(20, c.vocab_size, 8);
  for (bool air : {false, true}) {
    // Chains whose shares of 6 heads, 2 KV heads and ffn 40 are whole (SPEC A1).
    auto expanded = expand_model(base, {.add_chains = air ? std::vector<int>{6} : std::vector<int>{3, 3},
                                        .kv_share = air, .seed = 3});
    EXPECT_EQ(expanded->config().rope_scaling, c.rope_scaling);
    // SPEC A6: the expanded model computes what the base computed, with the same frequencies.
    const auto want = logits_of(base, 1, tokens);
    const auto got = logits_of(*expanded, expanded->config().n_chains(), tokens);
    double diff = 0;
    for (size_t i = 0; i < want.size(); ++i) diff = std::max(diff, (double)std::fabs(want[i] - got[i]));
    EXPECT_LE(diff, 1e-4) << (air ? "CoLM-Air" : "CoLM");
    EXPECT_EQ(sub_model_config(expanded->config(), 1).rope_scaling, c.rope_scaling);
    EXPECT_EQ(extract_sub_model(*expanded, 1)->config().rope_scaling, c.rope_scaling);
  }
}

}  // namespace
}  // namespace chainlm
