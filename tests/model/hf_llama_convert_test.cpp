// Hugging Face LLaMA interchange: export -> import round trips, a HF directory built by the
// test itself (rotate-half q/k, GQA, F32/F16/BF16), the 1-chain sub-model, and bad input.
#include "model/hf_llama_convert.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "io/test_temp_dir.h"
#include "model/checkpoint.h"
#include "model_test_util.h"

namespace chainlm {
namespace {

namespace fs = std::filesystem;
using test::random_tokens;
using testing::TempDir;
using testing::write_bytes;

ModelConfig llama_config(bool tie) { return test::llama_config(tie); }
void randomize(Model& m, uint64_t seed) { test::randomize_trained_like(m, seed); }

std::vector<float> logits_of(Model& m, int k, const std::vector<int>& tokens) {
  std::vector<float> out(tokens.size() * m.config().vocab_size);
  m.logits(tokens.data(), 1, (int)tokens.size(), k, out.data());
  return out;
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, (double)std::fabs(a[i] - b[i]));
  return m;
}

TEST(HfLlamaConvert, ExportThenImportIsIdentical) {
  for (bool tie : {false, true}) {
    TempDir dir;
    Model m(llama_config(tie));
    randomize(m, 3);
    export_hf_llama(m, 1, dir.file("hf"));
    const auto config = nlohmann::json::parse(testing::read_bytes(dir.file("hf/config.json")));
    EXPECT_EQ(config["architectures"], nlohmann::json({"LlamaForCausalLM"}));
    EXPECT_EQ(config["num_key_value_heads"], 2);
    EXPECT_EQ(config["rms_norm_eps"], 1e-6);
    EXPECT_EQ(config["rope_theta"], 500000.0);
    EXPECT_EQ(config["tie_word_embeddings"], tie);
    SafetensorsReader st(dir.file("hf/model.safetensors"));
    EXPECT_EQ(st.metadata().at("format"), "pt");
    EXPECT_EQ(st.has("lm_head.weight"), !tie);
    EXPECT_EQ(st.entry("model.layers.1.self_attn.k_proj.weight").shape, (std::vector<int64_t>{16, 48}));
    auto back = load_model(dir.file("hf"));
    ASSERT_EQ(back->params().size(), m.params().size());
    EXPECT_EQ(0, std::memcmp(back->params().values(), m.params().values(), m.params().size() * sizeof(float)));
    auto tokens = random_tokens(20, 37, 4);
    EXPECT_EQ(logits_of(*back, 1, tokens), logits_of(m, 1, tokens));
  }
}

TEST(HfLlamaConvert, ExportsTheOneChainSubModelOnly) {
  for (bool kv_share : {false, true}) {
    TempDir dir;
    // 8 heads as [4, 2, 2]; CoLM: 4 KV heads, 2 of them chain 1's; Air: 2 shared KV heads.
    ModelConfig c = test::tiny_config({2, 1, 1}, kv_share, kv_share ? 2 : 4);
    Model m(c);
    randomize(m, 5);
    try {
      export_hf_llama(m, 2, dir.file("no"));
      ADD_FAILURE() << "exported a 2-chain sub-model";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("per-chain RMSNorm"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir.file("no")));
    EXPECT_THROW(export_hf_llama(m, 4, dir.file("no")), Error);
    ModelConfig phd = llama_config(false);
    phd.phd.repeat = 2;
    Model p(phd);
    try {
      export_hf_llama(p, 1, dir.file("no"));
      ADD_FAILURE() << "exported a PHD model";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("PHD-2"), std::string::npos) << e.what();
    }
    export_hf_llama(m, 1, dir.file("hf"));
    auto sub = load_model(dir.file("hf"));
    EXPECT_EQ(sub->config().dim, m.layout().dim.width(0));
    EXPECT_EQ(sub->config().n_heads, m.layout().heads.width(0));
    EXPECT_EQ(sub->config().n_kv_heads, 2);
    auto tokens = random_tokens(15, c.vocab_size, 6);
    EXPECT_LE(max_diff(logits_of(*sub, 1, tokens), logits_of(m, 1, tokens)), 1e-5);
  }
}

// ---- A HF directory written by hand, as transformers would save it.

uint16_t to_bf16(float f) {  // exact for floats whose low 16 bits are zero
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}
float round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u &= 0xffff0000u;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t to_f16(float f) {  // exact for normal halves (k/1024 with 0 < |k| < 2048) and zero
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) == 0) return (uint16_t)(u >> 16);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int exponent = (int)((u >> 23) & 0xff) - 127 + 15;
  return (uint16_t)(sign | (uint32_t)exponent << 10 | ((u >> 13) & 0x3ffu));
}
float round_f16(float f) { return std::round(std::clamp(f, -1.9f, 1.9f) * 1024.0f) / 1024.0f; }

struct RawTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

// A safetensors file with every tensor in `dtype` ("F32", "F16", "BF16", or anything else,
// written with F32's bytes under that name... only used for the F64/I32 refusals with 8/4 bytes).
void write_raw_safetensors(const std::string& path, const std::vector<RawTensor>& tensors,
                           const std::string& dtype) {
  nlohmann::json header = {{"__metadata__", {{"format", "pt"}}}};
  std::string data;
  for (const RawTensor& t : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      if (dtype == "F32" || dtype == "I32") {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else if (dtype == "F64") {
        const double d = v;
        data.append(reinterpret_cast<const char*>(&d), 8);
      } else {
        const uint16_t h = dtype == "BF16" ? to_bf16(v) : to_f16(v);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[t.name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string out(8, '\0');
  const uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  write_bytes(path, out + h + data);
}

// The conversion script's permute, index by index (see tests/io/hf_llama_test.cpp).
std::vector<float> permute(const float* w, int n_heads, int dim1, int dim2) {
  const int half = dim1 / n_heads / 2;
  std::vector<float> out((size_t)dim1 * dim2);
  size_t o = 0;
  for (int h = 0; h < n_heads; ++h)
    for (int t = 0; t < 2; ++t)
      for (int i = 0; i < half; ++i)
        for (int c = 0; c < dim2; ++c) out[o++] = w[(((size_t)h * half + i) * 2 + t) * dim2 + c];
  return out;
}

std::vector<RawTensor> hf_tensors(const Model& m) {
  const ModelConfig& c = m.config();
  const ParamStore& ps = m.params();
  auto get = [&](const std::string& name) {
    const int i = ps.find(name);
    EXPECT_GE(i, 0) << name;
    return RawTensor{"", ps.info(i).shape, std::vector<float>(ps.value(i), ps.value(i) + ps.info(i).numel())};
  };
  auto named = [](RawTensor t, const std::string& name) {
    t.name = name;
    return t;
  };
  std::vector<RawTensor> v;
  v.push_back(named(get("tok_embeddings.weight"), "model.embed_tokens.weight"));
  const int hd = c.head_dim();
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers." + std::to_string(l) + ".", h = "model.layers." + std::to_string(l) + ".";
    RawTensor q = get(p + "attention.wq.chain0.weight"), k = get(p + "attention.wk.chain0.weight");
    q.values = permute(q.values.data(), c.n_heads, c.n_heads * hd, c.dim);
    k.values = permute(k.values.data(), c.n_kv_heads, c.n_kv_heads * hd, c.dim);
    v.push_back(named(q, h + "self_attn.q_proj.weight"));
    v.push_back(named(k, h + "self_attn.k_proj.weight"));
    v.push_back(named(get(p + "attention.wv.chain0.weight"), h + "self_attn.v_proj.weight"));
    v.push_back(named(get(p + "attention.wo.chain0.weight"), h + "self_attn.o_proj.weight"));
    v.push_back(named(get(p + "feed_forward.w1.chain0.weight"), h + "mlp.gate_proj.weight"));
    v.push_back(named(get(p + "feed_forward.w3.chain0.weight"), h + "mlp.up_proj.weight"));
    v.push_back(named(get(p + "feed_forward.w2.chain0.weight"), h + "mlp.down_proj.weight"));
    v.push_back(named(get(p + "attention_norm.weight"), h + "input_layernorm.weight"));
    v.push_back(named(get(p + "ffn_norm.weight"), h + "post_attention_layernorm.weight"));
  }
  v.push_back(named(get("norm.weight"), "model.norm.weight"));
  if (!c.tie_embeddings) v.push_back(named(get("output.weight"), "lm_head.weight"));
  return v;
}

nlohmann::json hf_config(const ModelConfig& c, const std::string& torch_dtype) {
  return {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
          {"hidden_size", c.dim}, {"intermediate_size", c.ffn_dim},
          {"num_attention_heads", c.n_heads}, {"num_key_value_heads", c.n_kv_heads},
          {"num_hidden_layers", c.n_layers}, {"vocab_size", c.vocab_size},
          {"rms_norm_eps", 1e-6}, {"rope_theta", 500000.0}, {"max_position_embeddings", c.max_seq_len},
          {"tie_word_embeddings", c.tie_embeddings}, {"torch_dtype", torch_dtype},
          {"hidden_act", "silu"}, {"transformers_version", "4.40.0"}};
}

void write_hf_dir(const std::string& dir, const Model& m, const std::string& dtype,
                  std::vector<RawTensor> tensors = {}) {
  fs::create_directories(dir);
  if (tensors.empty()) tensors = hf_tensors(m);
  write_raw_safetensors(dir + "/model.safetensors", tensors, dtype);
  const std::string torch = dtype == "BF16" ? "bfloat16" : dtype == "F16" ? "float16" : "float32";
  write_bytes(dir + "/config.json", hf_config(m.config(), torch).dump(2));
}

TEST(HfLlamaConvert, HandWrittenHfDirectoryImportsToTheNativeLogits) {
  for (const std::string dtype : {"F32", "BF16", "F16"}) {
    for (bool tie : {false, true}) {
      TempDir dir;
      Model native(llama_config(tie));
      randomize(native, 7);
      // Make the weights exactly representable in the stored dtype.
      for (size_t i = 0; i < native.params().size(); ++i) {
        float& v = native.params().values()[i];
        if (dtype == "BF16") v = round_bf16(v);
        if (dtype == "F16") v = round_f16(v);
      }
      write_hf_dir(dir.file("hf"), native, dtype);
      auto imported = load_model(dir.file("hf"));
      auto tokens = random_tokens(25, 37, 8);
      EXPECT_EQ(logits_of(*imported, 1, tokens), logits_of(native, 1, tokens)) << dtype << (tie ? " tied" : "");
      EXPECT_EQ(imported->config().n_kv_heads, 2);
      EXPECT_EQ(imported->config().rope_theta, 500000.0f);
    }
  }
}

// docs/formats.md: weights that are not finite are refused on load whatever wrote them. A HF
// directory with a NaN or an infinity used to load and generate token 0 forever (ppl nan), and
// export and quantize then wrote it on.
TEST(HfLlamaConvert, NonFiniteWeightsAreRefusedNamingTheTensor) {
  for (const auto& [native_name, hf_name] :
       {std::pair<std::string, std::string>{"norm.weight", "model.norm.weight"},
        {"layers.1.attention.wq.chain0.weight", "model.layers.1.self_attn.q_proj.weight"}}) {
    for (float bad :
         {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
      TempDir dir;
      Model native(llama_config(false));
      randomize(native, 7);
      native.params().value(native.params().find(native_name))[3] = bad;
      write_hf_dir(dir.file("hf"), native, "F32");
      try {
        load_model(dir.file("hf"));
        ADD_FAILURE() << native_name << " holding " << bad << " was loaded";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("tensor '" + hf_name + "' holds a non-finite value"),
                  std::string::npos)
            << e.what();
      }
    }
  }
}

TEST(HfLlamaConvert, ImportWithoutThePermutationWouldBeWrong) {
  // Guards the test above: skipping the q/k permutation changes the logits.
  TempDir dir;
  Model native(llama_config(false));
  randomize(native, 9);
  std::vector<RawTensor> t = hf_tensors(native);
  for (RawTensor& r : t)
    if (r.name.find("q_proj") != std::string::npos || r.name.find("k_proj") != std::string::npos) {
      const int i = native.params().find(r.name.find("q_proj") != std::string::npos
                                             ? "layers." + r.name.substr(13, 1) + ".attention.wq.chain0.weight"
                                             : "layers." + r.name.substr(13, 1) + ".attention.wk.chain0.weight");
      r.values.assign(native.params().value(i), native.params().value(i) + r.values.size());
    }
  write_hf_dir(dir.file("hf"), native, "F32", t);
  auto imported = load_model(dir.file("hf"));
  auto tokens = random_tokens(25, 37, 8);
  EXPECT_GT(max_diff(logits_of(*imported, 1, tokens), logits_of(native, 1, tokens)), 1e-3);
}

void expect_load_error(const std::string& dir, const std::string& needle) {
  try {
    load_model(dir);
    ADD_FAILURE() << "loaded " << dir << "; expected an error containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(HfLlamaConvert, RefusesBadDirectories) {
  TempDir dir;
  Model native(llama_config(false));
  randomize(native, 11);
  const std::vector<RawTensor> good = hf_tensors(native);

  write_hf_dir(dir.file("f64"), native, "F64");
  expect_load_error(dir.file("f64"), "dtype F64; only F32, F16 and BF16");
  write_hf_dir(dir.file("i32"), native, "I32");
  expect_load_error(dir.file("i32"), "dtype I32");

  auto missing = good;
  missing.erase(missing.begin() + 3);
  write_hf_dir(dir.file("missing"), native, "F32", missing);
  expect_load_error(dir.file("missing"), "missing tensor 'model.layers.0.self_attn.v_proj.weight'");

  auto reshaped = good;
  reshaped[1].shape = {24, 96};
  write_hf_dir(dir.file("shape"), native, "F32", reshaped);
  expect_load_error(dir.file("shape"), "has shape [24, 96], expected [48, 48]");

  auto bias = good;
  bias.push_back({"model.layers.0.self_attn.q_proj.bias", {48}, std::vector<float>(48, 0.0f)});
  write_hf_dir(dir.file("bias"), native, "F32", bias);
  expect_load_error(dir.file("bias"), "unexpected tensor 'model.layers.0.self_attn.q_proj.bias'");

  // A layer past the config's num_hidden_layers: the config and the weights disagree.
  auto extra_layer = good;
  extra_layer.push_back(
      {"model.layers.2.input_layernorm.weight", {48}, std::vector<float>(48, 1.0f)});
  write_hf_dir(dir.file("extra_layer"), native, "F32", extra_layer);
  expect_load_error(dir.file("extra_layer"),
                    "is of layer 2, beyond config.json's num_hidden_layers = 2");

  auto inv_freq = good;  // older checkpoints save RoPE buffers: ignored
  inv_freq.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {4}, std::vector<float>(4, 1.0f)});
  write_hf_dir(dir.file("inv_freq"), native, "F32", inv_freq);
  EXPECT_NO_THROW(load_model(dir.file("inv_freq")));

  write_hf_dir(dir.file("mistral"), native, "F32");
  auto cfg = hf_config(native.config(), "float32");
  cfg["architectures"] = {"MistralForCausalLM"};
  write_bytes(dir.file("mistral/config.json"), cfg.dump());
  expect_load_error(dir.file("mistral"), "unsupported architecture");
  cfg = hf_config(native.config(), "float32");
  cfg["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  write_bytes(dir.file("mistral/config.json"), cfg.dump());
  expect_load_error(dir.file("mistral"), "rope_scaling");
  cfg = hf_config(native.config(), "float32");
  cfg["num_key_value_heads"] = 4;  // 6 heads are not a multiple of 4
  write_bytes(dir.file("mistral/config.json"), cfg.dump());
  expect_load_error(dir.file("mistral"), "n_kv_heads");
}

}  // namespace
}  // namespace chainlm
