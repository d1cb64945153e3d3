#include "io/hf_llama.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "core/error.h"
#include "core/json_excerpt.h"
#include "io/atomic_file.h"

namespace chainlm {

namespace fs = std::filesystem;

namespace {

nlohmann::json read_json(const std::string& path) {
  try {
    return nlohmann::json::parse(read_file(path));
  } catch (const nlohmann::json::exception& e) {
    fail(path, ": invalid JSON: ", e.what());
  }
}

bool null_or_absent(const nlohmann::json& j, const char* name) {
  return !j.contains(name) || j.at(name).is_null();
}

// A token id field: absent keeps the default, null is "none", else a non-negative integer or a
// non-empty list of them.
void read_token_ids(const nlohmann::json& j, const char* name, const std::string& path, HfTokenIds& out) {
  if (!j.contains(name)) return;
  const nlohmann::json& v = j.at(name);
  auto id_of = [&](const nlohmann::json& e) {
    // Unsigned values first: get<int64_t>() of one above 2^63 would wrap negative.
    const bool ok = e.is_number_unsigned() ? e.get<uint64_t>() <= (uint64_t)std::numeric_limits<int>::max()
                                           : e.is_number_integer() && e.get<int64_t>() >= 0 &&
                                                 e.get<int64_t>() <= std::numeric_limits<int>::max();
    CHAINLM_CHECK(ok, path, ": '", name, "' must be a token id (a non-negative integer) or a list of them (got ",
                  json_excerpt(v), ")");
    return (int)e.get<int64_t>();
  };
  out = HfTokenIds{};
  if (v.is_null()) return;
  if (v.is_array()) {
    CHAINLM_CHECK(!v.empty(), path, ": '", name, "' is an empty list: give at least one token id (or null)");
    out.list = true;
    for (const auto& e : v) out.ids.push_back(id_of(e));
  } else {
    out.ids.push_back(id_of(v));
  }
}

nlohmann::json token_ids_to_json(const HfTokenIds& t) {
  if (t.ids.empty()) return nullptr;
  if (t.list) return t.ids;
  return t.ids.front();
}

}  // namespace

bool is_hf_model_dir(const std::string& dir) {
  try {
    const fs::path config = fs::path(dir) / "config.json";
    std::error_code ec;
    if (!fs::is_regular_file(config, ec)) return false;
    const auto j = nlohmann::json::parse(read_file(config.string()));
    return j.is_object() && (j.contains("model_type") || j.contains("architectures"));
  } catch (const std::exception&) {
    return false;
  }
}

HfLlamaConfig read_hf_llama_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  const nlohmann::json j = read_json(path);
  CHAINLM_CHECK(j.is_object(), path, ": not a JSON object");
  if (j.contains("architectures")) {
    const auto& a = j.at("architectures");
    CHAINLM_CHECK(a.is_array() && a.size() == 1 && a[0].is_string(), path,
                  ": 'architectures' must list one architecture (got ", json_excerpt(a), ")");
    CHAINLM_CHECK(a[0] == "LlamaForCausalLM", path, ": unsupported architecture ",
                  json_excerpt(a[0]), ": chainlm reads LLaMA checkpoints (LlamaForCausalLM) only");
  }
  if (j.contains("model_type"))
    CHAINLM_CHECK(j.at("model_type") == "llama", path, ": unsupported model_type ",
                  json_excerpt(j.at("model_type")),
                  ": chainlm reads LLaMA checkpoints (\"llama\") only");
  // j.at(), not j.value(): value() returns a copy, and copying a hostile value recurses once
  // per nesting level (found by fuzzing).
  HfLlamaConfig c;
  if (j.contains("rope_scaling")) c.rope_scaling = rope_scaling_from_json(j.at("rope_scaling"), path, false);
  CHAINLM_CHECK(null_or_absent(j, "quantization_config"), path,
                ": quantized checkpoints (quantization_config) are not supported");
  if (j.contains("hidden_act"))
    CHAINLM_CHECK(j.at("hidden_act") == "silu", path, ": hidden_act ",
                  json_excerpt(j.at("hidden_act")), " is not supported: LLaMA's SwiGLU uses silu");
  for (const char* bias : {"attention_bias", "mlp_bias"})
    if (j.contains(bias))
      CHAINLM_CHECK(j.at(bias) == false, path, ": '", bias, "' is set: projections with biases are not supported");
  auto get_int = [&](const char* name, int& out, bool required) {
    if (null_or_absent(j, name)) {
      CHAINLM_CHECK(!required, path, ": missing required field '", name, "'");
      return;
    }
    CHAINLM_CHECK(j.at(name).is_number_integer(), path, ": field '", name,
                  "' must be an integer (got ", json_excerpt(j.at(name)), ")");
    const long v = j.at(name).get<long>();
    CHAINLM_CHECK(v > 0, path, ": field '", name, "' must be positive (got ", v, ")");
    CHAINLM_CHECK(v <= (1L << 30), path, ": field '", name, "' is too large (got ", v,
                  "; at most 2^30)");
    out = (int)v;
  };
  auto get_double = [&](const char* name, double& out) {
    if (null_or_absent(j, name)) return;
    CHAINLM_CHECK(j.at(name).is_number(), path, ": field '", name, "' must be a number");
    out = j.at(name).get<double>();
    // The model holds it as a float: a larger value would overflow the conversion.
    CHAINLM_CHECK(out > 0 && out <= std::numeric_limits<float>::max(), path, ": field '", name,
                  "' must be positive and within float range (got ", json_excerpt(j.at(name)), ")");
  };
  get_int("hidden_size", c.hidden_size, true);
  get_int("intermediate_size", c.intermediate_size, true);
  get_int("num_attention_heads", c.num_attention_heads, true);
  get_int("num_hidden_layers", c.num_hidden_layers, true);
  get_int("vocab_size", c.vocab_size, true);
  c.num_key_value_heads = c.num_attention_heads;
  get_int("num_key_value_heads", c.num_key_value_heads, false);
  get_int("max_position_embeddings", c.max_position_embeddings, false);
  get_double("rms_norm_eps", c.rms_norm_eps);
  get_double("rope_theta", c.rope_theta);
  if (j.contains("tie_word_embeddings")) {
    CHAINLM_CHECK(j.at("tie_word_embeddings").is_boolean(), path, ": 'tie_word_embeddings' must be true or false");
    c.tie_word_embeddings = j.at("tie_word_embeddings").get<bool>();
  }
  if (!null_or_absent(j, "torch_dtype")) {
    c.torch_dtype = j.at("torch_dtype").is_string() ? j.at("torch_dtype").get<std::string>()
                                                    : json_excerpt(j.at("torch_dtype"));
    CHAINLM_CHECK(c.torch_dtype == "float32" || c.torch_dtype == "float16" || c.torch_dtype == "bfloat16",
                  path, ": torch_dtype '", c.torch_dtype, "' is not supported (float32, float16 or bfloat16)");
  }
  CHAINLM_CHECK(c.hidden_size % c.num_attention_heads == 0, path, ": hidden_size ", c.hidden_size,
                " is not a multiple of num_attention_heads ", c.num_attention_heads);
  if (!null_or_absent(j, "head_dim"))
    CHAINLM_CHECK(j.at("head_dim") == c.hidden_size / c.num_attention_heads, path, ": head_dim ",
                  json_excerpt(j.at("head_dim")),
                  " differs from hidden_size/num_attention_heads = ",
                  c.hidden_size / c.num_attention_heads, ", which chainlm requires");
  read_token_ids(j, "bos_token_id", path, c.bos_token_id);
  read_token_ids(j, "eos_token_id", path, c.eos_token_id);
  return c;
}

nlohmann::json hf_llama_config_to_json(const HfLlamaConfig& c) {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_size", c.hidden_size},
          {"intermediate_size", c.intermediate_size},
          {"num_attention_heads", c.num_attention_heads},
          {"num_key_value_heads", c.num_key_value_heads},
          {"num_hidden_layers", c.num_hidden_layers},
          {"vocab_size", c.vocab_size},
          {"rms_norm_eps", c.rms_norm_eps},
          {"rope_theta", c.rope_theta},
          {"rope_scaling", rope_scaling_to_json(c.rope_scaling)},
          {"max_position_embeddings", c.max_position_embeddings},
          {"tie_word_embeddings", c.tie_word_embeddings},
          {"hidden_act", "silu"},
          {"attention_bias", false},
          {"mlp_bias", false},
          {"bos_token_id", token_ids_to_json(c.bos_token_id)},
          {"eos_token_id", token_ids_to_json(c.eos_token_id)},
          {"torch_dtype", c.torch_dtype}};
}

HfWeights::HfWeights(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::is_regular_file(single, ec)) {
    where_ = single.string();
    files_.push_back(std::make_unique<SafetensorsReader>(single.string()));
  } else if (fs::is_regular_file(index, ec)) {
    where_ = index.string();
    const nlohmann::json j = read_json(index.string());
    CHAINLM_CHECK(j.is_object() && j.contains("weight_map") && j.at("weight_map").is_object(), where_,
                  ": no 'weight_map' object");
    std::map<std::string, const SafetensorsReader*> by_file;
    std::vector<std::pair<std::string, std::string>> mapped;  // (tensor, file), checked below
    for (auto it = j.at("weight_map").begin(); it != j.at("weight_map").end(); ++it) {
      CHAINLM_CHECK(it.value().is_string(), where_, ": weight_map entry '", it.key(), "' is not a file name");
      const std::string file = it.value().get<std::string>();
      CHAINLM_CHECK(file.find('/') == std::string::npos && file != ".." && !file.empty(), where_,
                    ": shard name '", file, "' must be a file in the directory");
      if (!by_file.count(file)) {
        // A shard the index names but the directory lacks: an incomplete download, said so.
        CHAINLM_CHECK(fs::exists(fs::path(dir) / file, ec), where_, " lists ", file, " (tensor '",
                      it.key(), "' and maybe more), which is not in ", dir,
                      ": the download is incomplete");
        files_.push_back(std::make_unique<SafetensorsReader>((fs::path(dir) / file).string()));
        by_file[file] = files_.back().get();
      }
      mapped.emplace_back(it.key(), file);
    }
    // An index that names the wrong shard for a tensor belongs with other shards (files of two
    // revisions mixed): refuse it rather than load whatever the files hold.
    for (const auto& [tensor, file] : mapped) {
      bool found = false;
      for (const auto& e : by_file.at(file)->entries()) found = found || e.name == tensor;
      CHAINLM_CHECK(found, where_, ": the index puts tensor '", tensor, "' in ", file,
                    ", which does not hold it (the index and the shards do not belong together)");
    }
  } else {
    CHAINLM_CHECK(!fs::exists(fs::path(dir) / "pytorch_model.bin", ec), dir,
                  ": only safetensors weights are supported (found pytorch_model.bin; convert it "
                  "to model.safetensors first)");
    // Shards without their index: name what is there, and what is missing.
    std::string shard;
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      if (name.size() > 12 && name.compare(name.size() - 12, 12, ".safetensors") == 0) {
        shard = name;
        break;
      }
    }
    CHAINLM_CHECK(shard.empty(), dir, ": found ", shard,
                  " but no model.safetensors.index.json, which says which shard holds each tensor "
                  "(it ships beside the shards)");
    fail(dir, ": no model.safetensors (nor model.safetensors.index.json)");
  }
  for (const auto& f : files_)
    for (const auto& e : f->entries()) {
      CHAINLM_CHECK(!by_name_.count(e.name), where_, ": tensor '", e.name, "' appears in two shards");
      by_name_[e.name] = f.get();
    }
}

bool HfWeights::has(const std::string& name) const { return by_name_.count(name) > 0; }

uint64_t HfWeights::tensor_bytes() const {
  uint64_t bytes = 0;
  for (const auto& f : files_)
    for (const auto& e : f->entries()) bytes += e.end - e.begin;  // each within its file
  return bytes;
}

std::vector<std::string> HfWeights::names() const {
  std::vector<std::string> v;
  for (const auto& [name, file] : by_name_) v.push_back(name);
  return v;
}

void HfWeights::read(const std::string& name, const std::vector<int64_t>& shape, float* dst) const {
  auto it = by_name_.find(name);
  CHAINLM_CHECK(it != by_name_.end(), where_, ": missing tensor '", name, "' (shape ",
                shape_to_string(shape), ")");
  it->second->read_f32(name, shape, dst);
}

void pairs_to_rotate_half(const float* w, float* out, int n_heads, int head_dim, int cols) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h)
    for (int i = 0; i < half; ++i)
      for (int t = 0; t < 2; ++t)
        std::memcpy(out + ((size_t)h * head_dim + t * half + i) * cols,
                    w + ((size_t)h * head_dim + 2 * i + t) * cols, sizeof(float) * cols);
}

void rotate_half_to_pairs(const float* w, float* out, int n_heads, int head_dim, int cols) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h)
    for (int i = 0; i < half; ++i)
      for (int t = 0; t < 2; ++t)
        std::memcpy(out + ((size_t)h * head_dim + 2 * i + t) * cols,
                    w + ((size_t)h * head_dim + t * half + i) * cols, sizeof(float) * cols);
}

uint64_t parse_max_shard_size(const std::string& text, const std::string& what) {
  const std::string examples = " (examples: 5GB, 500MB, 2GiB, 1000000)";
  size_t pos = 0;
  while (pos < text.size() && (std::isdigit((unsigned char)text[pos]) || text[pos] == '.')) ++pos;
  const std::string number = text.substr(0, pos);
  std::string unit = text.substr(pos);
  const bool well_formed = !number.empty() && number != "." && number.find('.') == number.rfind('.');
  CHAINLM_CHECK(well_formed, what, ": '", text, "' is not a size", examples);
  for (char& ch : unit) ch = (char)std::toupper((unsigned char)ch);
  double scale = 0;
  if (unit.empty() || unit == "B") scale = 1;
  const char* decimal[] = {"KB", "MB", "GB", "TB"};
  const char* binary[] = {"KIB", "MIB", "GIB", "TIB"};
  for (int i = 0; i < 4; ++i) {
    if (unit == decimal[i]) scale = std::pow(1000.0, i + 1);
    if (unit == binary[i]) scale = std::pow(1024.0, i + 1);
  }
  if (unit == "K" || unit == "M" || unit == "G" || unit == "T")
    fail(what, ": '", text, "' is ambiguous: write ", number, unit, "B (powers of 1000, as transformers' ",
         "max_shard_size counts) or ", number, unit, "iB (powers of 1024)");
  CHAINLM_CHECK(scale > 0, what, ": unknown unit '", text.substr(pos), "' in '", text,
                "' (use B, KB, MB, GB, TB or KiB, MiB, GiB, TiB)");
  const double bytes = std::floor(std::strtod(number.c_str(), nullptr) * scale);
  CHAINLM_CHECK(bytes >= 1 && bytes < 1.8e19, what, ": '", text, "' must be a positive size", examples);
  return (uint64_t)bytes;
}

std::vector<std::vector<size_t>> split_into_shards(const std::vector<uint64_t>& bytes, uint64_t max_shard_bytes) {
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_bytes = 0;
  auto close = [&] {
    if (!current.empty()) shards.push_back(std::move(current));
    current.clear();
    current_bytes = 0;
  };
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (bytes[i] > max_shard_bytes) {  // too large for any shard: alone
      close();
      shards.push_back({i});
      continue;
    }
    if (current_bytes + bytes[i] > max_shard_bytes) close();
    current.push_back(i);
    current_bytes += bytes[i];
  }
  close();
  if (shards.empty()) shards.emplace_back();  // no tensors: still one (empty) file
  return shards;
}

std::string hf_shard_file_name(size_t i, size_t n) {
  if (n == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return buf;
}

nlohmann::json hf_shard_index(const std::map<std::string, std::string>& weight_map, uint64_t total_size) {
  return {{"metadata", {{"total_size", total_size}}}, {"weight_map", weight_map}};
}

}  // namespace chainlm
