// The Hugging Face LLaMA format layer: config.json checks, the rotate-half permutation,
// single-file and sharded weights.
#include "io/hf_llama.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

#include "core/error.h"
#include "io/test_temp_dir.h"

namespace chainlm {
namespace {

using testing::TempDir;
using testing::write_bytes;

// The transformers conversion script's permute(w, n_heads, dim1, dim2):
//   w.view(n_heads, dim1 // n_heads // 2, 2, dim2).transpose(1, 2).reshape(dim1, dim2)
// emulated index by index: the result is the row-major order of the transposed 4-d view.
std::vector<float> torch_permute(const std::vector<float>& w, int n_heads, int dim1, int dim2) {
  const int half = dim1 / n_heads / 2;
  std::vector<float> out(w.size());
  size_t o = 0;
  for (int h = 0; h < n_heads; ++h)        // transposed shape (n_heads, 2, half, dim2)
    for (int t = 0; t < 2; ++t)
      for (int i = 0; i < half; ++i)
        for (int c = 0; c < dim2; ++c)        // element (h, t, i, c) = view element (h, i, t, c)
          out[o++] = w[(((size_t)h * half + i) * 2 + t) * dim2 + c];
  return out;
}

TEST(HfLlama, PermutationIsTheConversionScriptsAndItsInverse) {
  const int heads = 3, hd = 8, cols = 5, rows = heads * hd;
  std::vector<float> w(rows * cols);
  std::iota(w.begin(), w.end(), 0.0f);
  std::vector<float> hf(w.size()), back(w.size());
  pairs_to_rotate_half(w.data(), hf.data(), heads, hd, cols);
  EXPECT_EQ(hf, torch_permute(w, heads, rows, cols));
  rotate_half_to_pairs(hf.data(), back.data(), heads, hd, cols);
  EXPECT_EQ(back, w);
}

const char* kGood = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 48, "intermediate_size": 100, "num_attention_heads": 6, "num_key_value_heads": 2,
  "num_hidden_layers": 2, "vocab_size": 67, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "max_position_embeddings": 64, "tie_word_embeddings": true, "torch_dtype": "bfloat16",
  "hidden_act": "silu", "attention_bias": false, "rope_scaling": null, "use_cache": true})";

TEST(HfLlama, ReadsAConfig) {
  TempDir dir;
  write_bytes(dir.file("config.json"), kGood);
  EXPECT_TRUE(is_hf_model_dir(dir.path().string()));
  const HfLlamaConfig c = read_hf_llama_config(dir.path().string());
  EXPECT_EQ(c.hidden_size, 48);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_TRUE(c.tie_word_embeddings);
  // Defaults of LlamaConfig for what is absent.
  write_bytes(dir.file("config.json"), R"({"model_type": "llama", "hidden_size": 8, "intermediate_size": 8,
      "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 5})");
  const HfLlamaConfig d = read_hf_llama_config(dir.path().string());
  EXPECT_EQ(d.num_key_value_heads, 2);
  EXPECT_EQ(d.rms_norm_eps, 1e-6);
  EXPECT_EQ(d.rope_theta, 10000.0);
  EXPECT_FALSE(d.tie_word_embeddings);
  // A chainlm checkpoint's config is not a HF config.
  write_bytes(dir.file("config.json"), R"({"dim": 8, "n_layers": 1})");
  EXPECT_FALSE(is_hf_model_dir(dir.path().string()));
}

TEST(HfLlama, RefusesWhatIsNotPlainLlama) {
  struct Case {
    std::string key, value, expect;
  };
  const std::vector<Case> cases = {
      {"architectures", R"(["MistralForCausalLM"])", "unsupported architecture \"MistralForCausalLM\""},
      {"model_type", R"("gpt2")", "unsupported model_type \"gpt2\""},
      {"rope_scaling", R"({"type": "linear", "factor": 2.0})", "rope_scaling type \"linear\" is not supported"},
      {"rope_scaling", R"({"rope_type": "yarn", "factor": 4.0})", "rope_scaling type \"yarn\" is not supported"},
      {"rope_scaling", R"({"rope_type": "llama3", "factor": 8.0})", "needs 'low_freq_factor'"},
      {"rope_scaling", R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                         "original_max_position_embeddings": 8192})", "'rope_scaling.high_freq_factor' (1) must be larger"},
      {"bos_token_id", R"("<s>")", "'bos_token_id' must be a token id (a non-negative integer) or a list of them"},
      {"eos_token_id", "[]", "'eos_token_id' is an empty list"},
      {"eos_token_id", "[128001, -1]", "'eos_token_id' must be a token id"},
      {"eos_token_id", "-2", "'eos_token_id' must be a token id"},
      {"eos_token_id", "[128001, \"x\"]", "'eos_token_id' must be a token id"},
      {"bos_token_id", "1.5", "'bos_token_id' must be a token id"},
      {"bos_token_id", "true", "'bos_token_id' must be a token id"},
      {"bos_token_id", "[[1]]", "'bos_token_id' must be a token id"},
      {"bos_token_id", "4294967297", "'bos_token_id' must be a token id"},
      {"hidden_act", R"("gelu")", "hidden_act"},
      {"attention_bias", "true", "biases"},
      {"mlp_bias", "true", "biases"},
      {"torch_dtype", R"("int8")", "torch_dtype 'int8'"},
      {"head_dim", "16", "head_dim 16"},
      {"quantization_config", R"({"bits": 4})", "quantized"},
      {"hidden_size", "0", "'hidden_size' must be positive"},
      {"num_attention_heads", R"("six")", "'num_attention_heads' must be an integer"},
      {"hidden_size", "50", "not a multiple of num_attention_heads"},
      // Held as floats by the model: converting a larger double was undefined behaviour
      // (UBSan report found by fuzzing).
      {"rope_theta", "1e300", "'rope_theta' must be positive and within float range (got 1e+300)"},
      {"rms_norm_eps", "3.5e38", "'rms_norm_eps' must be positive and within float range"},
  };
  for (const auto& c : cases) {
    TempDir dir;
    auto j = nlohmann::json::parse(kGood);
    j[c.key] = nlohmann::json::parse(c.value);
    write_bytes(dir.file("config.json"), j.dump());
    try {
      read_hf_llama_config(dir.path().string());
      ADD_FAILURE() << c.key << " = " << c.value << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    }
  }
  // Values nested a million deep are quoted as a bounded excerpt (dump() overflowed the stack).
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  for (const char* key : {"architectures", "model_type", "hidden_size", "rope_scaling", "head_dim"}) {
    TempDir dir;
    auto j = nlohmann::json::parse(kGood);
    j[key] = "DEEP";
    std::string text = j.dump();  // (dumping the deep value itself would recurse a million deep)
    text.replace(text.find("\"DEEP\""), 6, deep);
    write_bytes(dir.file("config.json"), text);
    try {
      read_hf_llama_config(dir.path().string());
      ADD_FAILURE() << key << " accepted a nested array";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("[[[[[[[[[...]]]]]]]]]"), std::string::npos) << key;
    }
  }
  TempDir dir;
  auto j = nlohmann::json::parse(kGood);
  j.erase("vocab_size");
  write_bytes(dir.file("config.json"), j.dump());
  EXPECT_THROW(read_hf_llama_config(dir.path().string()), Error);
}

// LLaMA-3.1/3.2 as transformers saves them: llama3 RoPE scaling, and (instruct models) several
// EOS ids.
TEST(HfLlama, ReadsLlama3SettingsAndWritesThemBack) {
  TempDir dir;
  auto j = nlohmann::json::parse(kGood);
  j["rope_scaling"] = nlohmann::json::parse(R"({"factor": 32.0, "high_freq_factor": 4.0,
      "low_freq_factor": 1.0, "original_max_position_embeddings": 8192, "rope_type": "llama3"})");
  j["bos_token_id"] = 128000;
  j["eos_token_id"] = nlohmann::json::parse("[128001, 128008, 128009]");
  write_bytes(dir.file("config.json"), j.dump());
  const HfLlamaConfig c = read_hf_llama_config(dir.path().string());
  EXPECT_EQ(c.rope_scaling.type, RopeScaling::Type::kLlama3);
  EXPECT_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.bos_token_id.ids, std::vector<int>{128000});
  EXPECT_FALSE(c.bos_token_id.list);
  EXPECT_EQ(c.bos_token_id.first(), 128000);
  EXPECT_EQ(c.eos_token_id.ids, (std::vector<int>{128001, 128008, 128009}));
  EXPECT_TRUE(c.eos_token_id.list);
  EXPECT_EQ(c.eos_token_id.first(), 128001);
  const nlohmann::json back = hf_llama_config_to_json(c);
  EXPECT_EQ(back["rope_scaling"], j["rope_scaling"]);
  EXPECT_EQ(back["bos_token_id"], 128000);
  EXPECT_EQ(back["eos_token_id"], j["eos_token_id"]);
  // transformers' older key "type", and a key it does not use (ignored in a HF config, as
  // transformers ignores it); a one-element list stays a list; null stays null.
  j["rope_scaling"].erase("rope_type");
  j["rope_scaling"]["type"] = "llama3";
  j["rope_scaling"]["note"] = "ignored";
  j["bos_token_id"] = nlohmann::json::parse("[1]");
  j["eos_token_id"] = nullptr;
  write_bytes(dir.file("config.json"), j.dump());
  const HfLlamaConfig d = read_hf_llama_config(dir.path().string());
  EXPECT_EQ(d.rope_scaling, c.rope_scaling);
  EXPECT_EQ(hf_llama_config_to_json(d)["bos_token_id"], nlohmann::json::parse("[1]"));
  EXPECT_TRUE(hf_llama_config_to_json(d)["eos_token_id"].is_null());
  EXPECT_EQ(d.eos_token_id.first(), -1);
  // Without the fields: LlamaConfig's defaults 1 and 2, and plain RoPE written as null.
  j.erase("bos_token_id");
  j.erase("eos_token_id");
  j["rope_scaling"] = nlohmann::json::parse(R"({"rope_type": "default"})");
  write_bytes(dir.file("config.json"), j.dump());
  const nlohmann::json e = hf_llama_config_to_json(read_hf_llama_config(dir.path().string()));
  EXPECT_EQ(e["bos_token_id"], 1);
  EXPECT_EQ(e["eos_token_id"], 2);
  EXPECT_TRUE(e["rope_scaling"].is_null());
}

TEST(HfLlama, ShardSizesAsTransformersWritesThem) {
  EXPECT_EQ(parse_max_shard_size("5GB", "--max-shard-size"), 5000000000ull);
  EXPECT_EQ(parse_max_shard_size("500MB", "x"), 500000000ull);
  EXPECT_EQ(parse_max_shard_size("500mb", "x"), 500000000ull);
  EXPECT_EQ(parse_max_shard_size("2GiB", "x"), 2147483648ull);
  EXPECT_EQ(parse_max_shard_size("1.5KiB", "x"), 1536ull);
  EXPECT_EQ(parse_max_shard_size("10KB", "x"), 10000ull);
  EXPECT_EQ(parse_max_shard_size("1TB", "x"), 1000000000000ull);
  EXPECT_EQ(parse_max_shard_size("123", "x"), 123ull);
  EXPECT_EQ(parse_max_shard_size("123B", "x"), 123ull);
  EXPECT_EQ(kDefaultMaxShardBytes, 5000000000ull);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"", "'' is not a size"},          {"GB", "'GB' is not a size"},
      {"5G", "'5G' is ambiguous: write 5GB"}, {"5 GB", "unknown unit ' GB'"},
      {"5PB", "unknown unit 'PB'"},      {"-5GB", "'-5GB' is not a size"},
      {"0", "'0' must be a positive size"}, {"0.1B", "must be a positive size"},
      {"1.2.3MB", "not a size"},         {"1e9", "unknown unit 'e9'"},
      {"99999999999TB", "must be a positive size"}};
  for (const auto& [text, expect] : bad) {
    try {
      parse_max_shard_size(text, "--max-shard-size");
      ADD_FAILURE() << "accepted '" << text << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expect), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("--max-shard-size: ", 0), 0u) << e.what();
    }
  }
}

TEST(HfLlama, SplitsShardsAsSavePretrained) {
  using Shards = std::vector<std::vector<size_t>>;
  EXPECT_EQ(split_into_shards({10, 20, 30}, 100), (Shards{{0, 1, 2}}));
  EXPECT_EQ(split_into_shards({10, 20, 30}, 60), (Shards{{0, 1, 2}}));  // exactly full
  EXPECT_EQ(split_into_shards({10, 20, 30}, 59), (Shards{{0, 1}, {2}}));
  EXPECT_EQ(split_into_shards({10, 20, 30, 5}, 35), (Shards{{0, 1}, {2, 3}}));
  // A tensor above the limit gets a shard of its own; order is kept.
  EXPECT_EQ(split_into_shards({10, 500, 10, 10}, 25), (Shards{{0}, {1}, {2, 3}}));
  EXPECT_EQ(split_into_shards({}, 25), (Shards{{}}));
  EXPECT_EQ(hf_shard_file_name(0, 1), "model.safetensors");
  EXPECT_EQ(hf_shard_file_name(0, 3), "model-00001-of-00003.safetensors");
  EXPECT_EQ(hf_shard_file_name(11, 12), "model-00012-of-00012.safetensors");
  EXPECT_EQ(hf_shard_index({{"a", "model-00001-of-00002.safetensors"}}, 42),
            nlohmann::json::parse(R"({"metadata": {"total_size": 42},
                                      "weight_map": {"a": "model-00001-of-00002.safetensors"}})"));
}

TEST(HfLlama, ReadsShardedWeightsAndRefusesOtherLayouts) {
  TempDir dir;
  std::vector<float> a = {1, 2, 3, 4}, b = {5, 6};
  write_safetensors(dir.file("model-00001-of-00002.safetensors"), {{"a", {2, 2}, a.data()}}, {{"format", "pt"}});
  write_safetensors(dir.file("model-00002-of-00002.safetensors"), {{"b", {2}, b.data()}}, {{"format", "pt"}});
  write_bytes(dir.file("model.safetensors.index.json"),
              R"({"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                  "b": "model-00002-of-00002.safetensors"}})");
  HfWeights w(dir.path().string());
  EXPECT_TRUE(w.has("a"));
  EXPECT_TRUE(w.has("b"));
  std::vector<float> got(2);
  w.read("b", {2}, got.data());
  EXPECT_EQ(got, b);
  EXPECT_THROW(w.read("a", {4}, got.data()), Error);  // wrong shape
  try {
    w.read("c", {1}, got.data());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'c'"), std::string::npos) << e.what();
  }
  // An index that puts a tensor in a shard that does not hold it.
  write_bytes(dir.file("model.safetensors.index.json"),
              R"({"metadata": {}, "weight_map": {"a": "model-00002-of-00002.safetensors",
                  "b": "model-00002-of-00002.safetensors"}})");
  try {
    HfWeights{dir.path().string()};
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(
                  "puts tensor 'a' in model-00002-of-00002.safetensors, which does not hold it"),
              std::string::npos)
        << e.what();
  }
  // What opening the directory's weights throws ("" when it opens).
  auto open_error = [&] {
    try {
      HfWeights{dir.path().string()};
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // A shard the index names but that is not there: an incomplete download, said so.
  write_bytes(dir.file("model.safetensors.index.json"), R"({"weight_map": {"a": "gone.safetensors"}})");
  std::string error = open_error();
  EXPECT_NE(error.find("model.safetensors.index.json lists gone.safetensors"), std::string::npos) << error;
  EXPECT_NE(error.find("incomplete"), std::string::npos) << error;
  // Shards without their index: the message names a shard found and the missing index.
  std::filesystem::remove(dir.file("model.safetensors.index.json"));
  error = open_error();
  EXPECT_NE(error.find("safetensors but no model.safetensors.index.json"), std::string::npos) << error;

  TempDir torch;
  write_bytes(torch.file("pytorch_model.bin"), "not read");
  try {
    HfWeights{torch.path().string()};
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("only safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace chainlm
