// llama3 RoPE scaling in GGUF files: the export writes llama.cpp's rope_freqs.weight (per-pair
// frequency divisors, as llama.cpp's convert_hf_to_gguf.py computes them for LLaMA) beside the
// parameters in chainlm.rope_scaling, reads both back to the same logits, and refuses files where
// the two are missing or disagree.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "io/gguf.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model/gguf_convert.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

using testing::TempDir;

// Head size 16 (8 pairs), theta 500000; with original length 256 pairs 0-1 keep their
// frequency, pair 2 is interpolated and pairs 3-7 are slowed down by the factor.
ModelConfig scaled_config() {
  ModelConfig c = test::llama_config(false, 64, 96, 4);
  c.rope_scaling = {.type = RopeScaling::Type::kLlama3, .factor = 32, .low_freq_factor = 1,
                    .high_freq_factor = 4, .original_max_position_embeddings = 256};
  validate_config(c, "test");
  return c;
}

GgufExportOptions options() {
  return {.chains = 1, .type = "f32", .tokenizer = "", .name = "test", .chat_template = ""};
}

std::vector<float> logits_of(Model& m, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), 1, out.data());
  return out;
}

using test::error_of;

// The rope factors as llama.cpp's converter computes them for LLaMA (in double here): 1 for a
// wavelength below original/high, factor above original/low, 1/((1 - smooth)/factor + smooth)
// in between.
std::vector<double> llama_cpp_rope_factors(int dim, double base, const RopeScaling& s) {
  std::vector<double> factors;
  const double old_context_len = s.original_max_position_embeddings;
  const double low_freq_wavelen = old_context_len / s.low_freq_factor;
  const double high_freq_wavelen = old_context_len / s.high_freq_factor;
  for (int i = 0; i < dim; i += 2) {
    const double freq = 1.0 / std::pow(base, (double)i / dim);
    const double wavelen = 2 * M_PI / freq;
    if (wavelen < high_freq_wavelen) {
      factors.push_back(1);
    } else if (wavelen > low_freq_wavelen) {
      factors.push_back(s.factor);
    } else {
      const double smooth = (old_context_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      factors.push_back(1 / ((1 - smooth) / s.factor + smooth));
    }
  }
  return factors;
}

TEST(GgufRopeScaling, ExportWritesLlamaCppsRopeFreqsAndReadsBackTheSameModel) {
  TempDir dir;
  Model m(scaled_config());
  test::randomize_trained_like(m, 3);
  const GgufExportSummary s = export_gguf(m, options(), dir.file("m.gguf"));
  EXPECT_EQ(s.tensors, 2 + 2 * 9 + 1 + 1);
  GgufReader g(dir.file("m.gguf"));
  const GgufTensorInfo* t = g.find("rope_freqs.weight");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->type, (uint32_t)kGgmlF32);
  EXPECT_EQ(t->ne, std::vector<uint64_t>{8});
  const std::vector<double> want = llama_cpp_rope_factors(16, 500000.0, m.config().rope_scaling);
  EXPECT_EQ(want[0], 1.0);
  EXPECT_EQ(want[7], 32.0);
  EXPECT_GT(want[2], 1.0);
  EXPECT_LT(want[2], 32.0);
  for (size_t i = 0; i < want.size(); ++i) {
    float got;
    std::memcpy(&got, g.data(*t) + 4 * i, 4);
    EXPECT_NEAR(got, want[i], 1e-6 * want[i]) << "pair " << i;
  }
  EXPECT_EQ(nlohmann::json::parse(g.get_string("chainlm.rope_scaling")),
            nlohmann::json::parse(R"({"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0, "original_max_position_embeddings": 256})"));
  // Not llama.rope.scaling.*: llama.cpp would apply those (linear, YaRN) on top of rope_freqs.
  for (const std::string& key : g.keys()) EXPECT_EQ(key.find("rope.scaling"), std::string::npos) << key;
  auto back = load_model(dir.file("m.gguf"));
  EXPECT_EQ(back->config().rope_scaling, m.config().rope_scaling);
  const auto tokens = test::random_tokens(30, 37, 2);
  EXPECT_EQ(logits_of(*back, tokens), logits_of(m, tokens));
}

// Copies a GGUF file, dropping a key or a tensor, or changing a tensor's bytes.
void rewrite(const std::string& from, const std::string& to, const std::string& drop_key,
             const std::string& drop_tensor, const std::function<void(const std::string&, std::vector<uint8_t>&)>& edit) {
  GgufReader base(from);
  GgufWriter w;
  for (const std::string& key : base.keys()) {
    const GgufValue& v = base.value(key);
    if (key == drop_key || key == kGgufMetadataCrcKey) continue;  // the writer adds its own
    if (v.type == GgufType::kString) w.add_string(key, v.s);
    else if (v.type == GgufType::kFloat32) w.add_float32(key, (float)v.f);
    else if (v.type == GgufType::kUint32) w.add_uint32(key, (uint32_t)v.u);
  }
  for (const GgufTensorInfo& t : base.tensors()) {
    if (t.name == drop_tensor) continue;
    std::vector<uint8_t> data(base.data(t), base.data(t) + t.bytes);
    edit(t.name, data);
    w.add_tensor(t.name, t.type, t.ne, std::move(data));
  }
  w.write(to);
}

TEST(GgufRopeScaling, RefusesFactorsWithoutParametersAndDisagreement) {
  TempDir dir;
  Model m(scaled_config());
  test::randomize_trained_like(m, 4);
  export_gguf(m, options(), dir.file("m.gguf"));
  auto keep = [](const std::string&, std::vector<uint8_t>&) {};
  // As llama.cpp's converter writes a LLaMA-3.1+ model: the factors alone.
  rewrite(dir.file("m.gguf"), dir.file("foreign.gguf"), "chainlm.rope_scaling", "", keep);
  std::string e = error_of([&] { load_model(dir.file("foreign.gguf")); });
  EXPECT_NE(e.find("tensor 'rope_freqs.weight' (per-pair RoPE frequency factors"), std::string::npos) << e;
  EXPECT_NE(e.find("import the Hugging Face directory"), std::string::npos) << e;
  rewrite(dir.file("m.gguf"), dir.file("no-tensor.gguf"), "", "rope_freqs.weight", keep);
  e = error_of([&] { load_model(dir.file("no-tensor.gguf")); });
  EXPECT_NE(e.find("metadata 'chainlm.rope_scaling' without the tensor 'rope_freqs.weight'"), std::string::npos) << e;
  rewrite(dir.file("m.gguf"), dir.file("edited.gguf"), "", "", [](const std::string& name, std::vector<uint8_t>& d) {
    if (name != "rope_freqs.weight") return;
    const float eight = 8.0f;
    std::memcpy(d.data() + 4 * 7, &eight, 4);
  });
  e = error_of([&] { load_model(dir.file("edited.gguf")); });
  EXPECT_NE(e.find("tensor 'rope_freqs.weight' holds 8 for pair 7 but the scaling in 'chainlm.rope_scaling' gives 32"),
            std::string::npos)
      << e;
  // A plain model's file has neither.
  Model plain(test::llama_config(false, 64, 96, 4));
  export_gguf(plain, options(), dir.file("plain.gguf"));
  GgufReader g(dir.file("plain.gguf"));
  EXPECT_EQ(g.find("rope_freqs.weight"), nullptr);
  EXPECT_FALSE(g.has("chainlm.rope_scaling"));
}

}  // namespace
}  // namespace chainlm
