// Hugging Face export beyond F32 in one file: llama3 RoPE scaling through import -> export ->
// import, bf16/f16 weights against a naive rounding reference, shards with their index, and the
// token ids written back as they were read.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/hf_llama_convert.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;

nlohmann::json read_json(const std::string& path) { return nlohmann::json::parse(testing::read_bytes(path)); }

std::vector<float> logits_of(Model& m, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), 1, out.data());
  return out;
}

std::vector<float> values_of(const Model& m) {
  return std::vector<float>(m.params().values(), m.params().values() + m.params().size());
}

// A LLaMA-3-style model: GQA, llama3 RoPE scaling (with an original length that puts this head
// size's pairs in every band), optionally tied embeddings.
ModelConfig llama3_config(bool tie) {
  ModelConfig c = test::llama_config(tie);
  c.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 32, .low_freq_factor = 1,
                    .high_freq_factor = 4, .original_max_position_embeddings = 256};
  validate_config(c, "test");
  return c;
}

TEST(HfLlamaExport, Llama3RopeScalingSurvivesImportExportImport) {
  for (bool tie : {false, true}) {
    TempDir dir;
    Model native(llama3_config(tie));
    test::randomize_trained_like(native, 3);
    export_hf_llama(native, 1, dir.file("a"));
    const nlohmann::json a = read_json(dir.file("a/config.json"));
    EXPECT_EQ(a["rope_scaling"], nlohmann::json::parse(R"({"rope_type": "llama3", "factor": 32.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 256})"));
    auto imported = load_model(dir.file("a"));
    EXPECT_EQ(imported->config().rope_scaling, native.config().rope_scaling);
    export_hf_llama(*imported, 1, dir.file("b"));
    EXPECT_EQ(read_json(dir.file("b/config.json")), a);
    auto again = load_model(dir.file("b"));
    const auto tokens = test::random_tokens(30, 37, 4);
    const auto want = logits_of(native, tokens);
    EXPECT_EQ(logits_of(*imported, tokens), want);
    EXPECT_EQ(logits_of(*again, tokens), want);
    // The scaling is what makes them equal: without it the same weights compute other logits.
    nlohmann::json plain = a;
    plain["rope_scaling"] = nullptr;
    testing::write_bytes(dir.file("b/config.json"), plain.dump());
    EXPECT_NE(logits_of(*load_model(dir.file("b")), tokens), want);
  }
}

// Round to nearest, ties to even, computed in double: a value's unit in the last place of the
// target type is 2^(e - mantissa bits) with e its binary exponent (at least the smallest normal
// exponent, below which the spacing stays that of the subnormals), and nearbyint rounds
// x / ulp to an integer, ties to even, exactly.
float naive_round(float x, int mantissa_bits, int min_exponent) {
  if (x == 0) return x;
  const int e = std::max((int)std::floor(std::log2(std::fabs((double)x))), min_exponent);
  const double ulp = std::ldexp(1.0, e - mantissa_bits);
  return (float)(std::nearbyint((double)x / ulp) * ulp);
}
float naive_bf16(float x) { return naive_round(x, 7, -126); }
float naive_f16(float x) { return naive_round(x, 10, -14); }

TEST(HfLlamaExport, Bf16AndF16HoldTheRoundedWeights) {
  for (const std::string dtype : {"bf16", "f16"}) {
    TempDir dir;
    Model native(llama3_config(false));
    test::randomize_trained_like(native, 5);
    // Ties of both types (to even: down, then up), an f16 subnormal, a negative value.
    float* w = native.params().values();
    const float ties[] = {1.0f + 0x1p-8f, 1.0f + 3 * 0x1p-8f, 1.0f + 0x1p-11f, 1.0f + 3 * 0x1p-11f,
                          3.1e-6f, -0.3337f, 1e-8f};
    std::memcpy(w, ties, sizeof ties);
    std::vector<float> want = values_of(native);
    for (float& v : want) v = dtype == "bf16" ? naive_bf16(v) : naive_f16(v);
    if (dtype == "bf16") {  // 1 + 2^-8 and 1 + 3*2^-8 lie halfway between bf16 neighbours 2^-7 apart
      EXPECT_EQ(want[0], 1.0f);
      EXPECT_EQ(want[1], 1.0f + 0x1p-6f);
    } else {  // 1 + 2^-11 and 1 + 3*2^-11, for f16's 2^-10
      EXPECT_EQ(want[2], 1.0f);
      EXPECT_EQ(want[3], 1.0f + 0x1p-9f);
    }

    const HfExportSummary s = export_hf_llama(native, {.chains = 1, .dtype = dtype}, dir.file("hf"));
    EXPECT_EQ(s.files, std::vector<std::string>{"model.safetensors"});
    EXPECT_EQ(read_json(dir.file("hf/config.json"))["torch_dtype"], dtype == "bf16" ? "bfloat16" : "float16");
    SafetensorsReader st(dir.file("hf/model.safetensors"));
    uint64_t bytes = 0;
    for (const auto& e : st.entries()) {
      EXPECT_EQ(e.dtype, dtype == "bf16" ? "BF16" : "F16") << e.name;
      bytes += e.end - e.begin;
    }
    EXPECT_EQ(bytes, native.params().size() * 2);
    EXPECT_EQ(s.total_bytes, bytes);
    auto back = load_model(dir.file("hf"));
    const std::vector<float> got = values_of(*back);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], want[i]) << dtype << " element " << i << " of " << w[i];
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(round_to_hf_dtype(w[i], dtype), want[i]) << dtype << " " << i;
    // The logits are those of the rounded weights exactly.
    Model rounded(native.config());
    std::memcpy(rounded.params().values(), want.data(), want.size() * sizeof(float));
    const auto tokens = test::random_tokens(20, 37, 6);
    EXPECT_EQ(logits_of(*back, tokens), logits_of(rounded, tokens));
  }
}

TEST(HfLlamaExport, ValuesBeyondTheDtypeAreRefusedNamingTheTensor) {
  TempDir dir;
  Model m(test::llama_config(false));
  test::randomize_trained_like(m, 2);
  const int idx = m.params().find("layers.1.feed_forward.w2.chain0.weight");
  m.params().value(idx)[7] = 70000.0f;  // beyond float16's 65504, fine for bfloat16
  try {
    export_hf_llama(m, {.chains = 1, .dtype = "f16"}, dir.file("f16"));
    ADD_FAILURE() << "exported 70000 as float16";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.layers.1.mlp.down_proj.weight' holds 70000 at element 7, beyond "
                                         "the range of float16 (largest finite value 65504)"),
              std::string::npos)
        << e.what();
  }
  EXPECT_NO_THROW(export_hf_llama(m, {.chains = 1, .dtype = "bf16"}, dir.file("bf16")));
  m.params().value(idx)[7] = 3.4e38f;  // rounds up to infinity in bfloat16
  EXPECT_THROW(export_hf_llama(m, {.chains = 1, .dtype = "bf16"}, dir.file("bf16-2")), Error);
  EXPECT_THROW(export_hf_llama(m, {.chains = 1, .dtype = "f64"}, dir.file("f64")), Error);
}

TEST(HfLlamaExport, ShardsPastTheLimitWithAnIndexTheImporterReads) {
  for (const std::string dtype : {"f32", "bf16"}) {
    TempDir dir;
    Model native(llama3_config(true));
    test::randomize_trained_like(native, 8);
    const uint64_t limit = 12000;  // the largest tensor (embedding 37 x 48 F32) is 7104 bytes
    const HfExportSummary s = export_hf_llama(native, {.chains = 1, .dtype = dtype, .max_shard_bytes = limit},
                                              dir.file("hf"));
    const size_t n = s.files.size() - 1;
    ASSERT_GE(n, 3u) << dtype;
    EXPECT_EQ(s.files.back(), "model.safetensors.index.json");
    EXPECT_FALSE(fs::exists(dir.file("hf/model.safetensors")));
    const nlohmann::json index = read_json(dir.file("hf/model.safetensors.index.json"));
    EXPECT_EQ(index["metadata"]["total_size"], s.total_bytes);
    std::set<std::string> mapped;
    uint64_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      char name[64];
      std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
      EXPECT_EQ(s.files[i], name);
      SafetensorsReader st(dir.file("hf/" + std::string(name)));
      uint64_t bytes = 0;
      for (const auto& e : st.entries()) {
        EXPECT_EQ(index["weight_map"][e.name], std::string(name)) << e.name;
        EXPECT_TRUE(mapped.insert(e.name).second) << e.name;
        bytes += e.end - e.begin;
      }
      EXPECT_LE(bytes, limit) << name;
      EXPECT_EQ(st.metadata().at("format"), "pt");
      total += bytes;
    }
    EXPECT_EQ(total, s.total_bytes);
    EXPECT_EQ(mapped.size(), index["weight_map"].size());
    auto back = load_model(dir.file("hf"));
    std::vector<float> want = values_of(native);
    for (float& v : want) v = round_to_hf_dtype(v, dtype);
    EXPECT_EQ(values_of(*back), want) << dtype;
    EXPECT_EQ(back->config().rope_scaling, native.config().rope_scaling);
  }
  // Up to the limit, one file and no index.
  TempDir dir;
  Model m(test::llama_config(false));
  HfExportOptions o;
  o.max_shard_bytes = m.params().size() * 4;
  const HfExportSummary s = export_hf_llama(m, o, dir.file("hf"));
  EXPECT_EQ(s.files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(dir.file("hf/model.safetensors.index.json")));
}

TEST(HfLlamaExport, WritesTheTokenIdsItIsGiven) {
  TempDir dir;
  Model m(test::llama_config(false));
  HfExportOptions o;
  o.bos_token_id = {{128000}};
  o.eos_token_id = {{128001, 128008, 128009}, true};
  export_hf_llama(m, o, dir.file("hf"));
  const nlohmann::json j = read_json(dir.file("hf/config.json"));
  EXPECT_EQ(j["bos_token_id"], 128000);
  EXPECT_EQ(j["eos_token_id"], nlohmann::json::parse("[128001, 128008, 128009]"));
  const HfLlamaConfig back = read_hf_llama_config(dir.file("hf"));
  EXPECT_EQ(back.eos_token_id.ids, (std::vector<int>{128001, 128008, 128009}));
  // Defaults: LlamaConfig's 1 and 2, as before.
  export_hf_llama(m, 1, dir.file("plain"));
  EXPECT_EQ(read_json(dir.file("plain/config.json"))["eos_token_id"], 2);
  EXPECT_EQ(read_json(dir.file("plain/config.json"))["torch_dtype"], "float32");
}

}  // namespace
}  // namespace chainlm
