#include "model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <optional>
#include <set>
#include <nlohmann/json.hpp>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "model/gguf_convert.h"
#include "model/hf_llama_convert.h"
#include "model/llama2c_import.h"

namespace chainlm {

namespace fs = std::filesystem;

namespace {

// A quantized checkpoint (docs/quantization.md) names its block type in the metadata.
constexpr const char* kQuantKey = "chainlm.quant";

// The stored form of a weight matrix of a quantized checkpoint: U8 [rows, bytes per row].
std::vector<int64_t> quantized_shape(const ParamInfo& p, QuantType type) {
  return {p.shape[0], static_cast<int64_t>(quant_row_bytes(type, p.shape[1]))};
}

// The weight matrices whose form differs from the checkpoint's type: Q8_0 tables of a Q4_0
// model, and "f32" for a matrix held in fp32 (a GGUF's F32/F16 tensors).
nlohmann::json tensor_types(const Model& model) {
  nlohmann::json j = nlohmann::json::object();
  for (int i = 0; i < (int)model.params().infos().size(); ++i) {
    const ParamInfo& p = model.params().info(i);
    if (p.shape.size() != 2) continue;
    if (!model.is_quantized(i)) j[p.name] = "f32";
    else if (model.tensor_quant_type(i) != model.quant_type()) j[p.name] = quant_type_name(model.tensor_quant_type(i));
  }
  return j;
}

// Each weight matrix's form in a quantized checkpoint: its tensor_types entry, else the type
// (save_model lists every matrix that differs, the Q8_0 tables of a Q4_0 model included).
std::vector<std::optional<QuantType>> stored_tensor_types(const Model& model, QuantType type,
                                                          const nlohmann::json& listed, const std::string& file) {
  std::vector<std::optional<QuantType>> types;
  for (const ParamInfo& p : model.params().infos()) {
    if (p.shape.size() != 2 || !listed.is_object() || !listed.contains(p.name)) {
      types.push_back(p.shape.size() == 2 ? std::optional<QuantType>(type) : std::nullopt);
      continue;
    }
    const nlohmann::json& t = listed.at(p.name);
    CHAINLM_CHECK(t.is_string(), file, ": tensor_types entry of '", p.name, "' is not a string");
    types.push_back(t == "f32" ? std::nullopt : std::optional<QuantType>(parse_quant_type(t.get<std::string>())));
  }
  return types;
}

}  // namespace

void load_model_weights(Model& model, const std::string& file) {
  SafetensorsReader reader(file);
  ParamStore& ps = model.params();
  const auto quant = reader.metadata().find(kQuantKey);
  const bool quantized = quant != reader.metadata().end();
  QuantType type = QuantType::kQ8_0;
  std::vector<std::optional<QuantType>> types;
  if (quantized) {
    try {
      const nlohmann::json q = nlohmann::json::parse(quant->second);
      type = parse_quant_type(q.at("type").get<std::string>());
      types = stored_tensor_types(model, type, q.contains("tensor_types") ? q.at("tensor_types") : nlohmann::json(),
                                  file);
    } catch (const nlohmann::json::exception&) {
      fail(file, ": metadata '", kQuantKey, "' is not {\"type\": ...} (corrupt header?)");
    }
  }
  std::set<std::string> expected;
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    expected.insert(p.name);
    CHAINLM_CHECK(reader.has(p.name), file, ": missing tensor '", p.name, "' (shape ",
                  shape_to_string(p.shape), ") required by the model config");
    if (quantized && types[i]) continue;  // read as blocks below
    reader.read_f32(p.name, p.shape, ps.value(i));
    refuse_non_finite(ps.value(i), p.numel(), file, p.name);
  }
  for (const auto& e : reader.entries())
    CHAINLM_CHECK(expected.count(e.name), file, ": unexpected tensor '", e.name,
                  "': the checkpoint does not match its config.json");
  if (!quantized) return;
  model.load_quantized_weights(type, [&](int param, uint8_t* dst, std::size_t bytes) {
    const ParamInfo& p = ps.info(param);
    const QuantType t = model.tensor_quant_type(param);
    const uint8_t* src = reader.read_raw(p.name, "U8", quantized_shape(p, t));
    std::copy_n(src, bytes, dst);
    // Every block's fp16 scale must be finite, as every fp32 weight must be.
    check_finite_block_scales(t, dst, bytes, file, p.name);
  }, types);
}

std::unique_ptr<Model> load_model(const std::string& checkpoint_dir) {
  // A llama2.c checkpoint is one file. A .bin file that is not one gets read_llama2c's
  // specific complaint (truncated, bad header) rather than "not a directory".
  std::error_code ec;
  if (fs::is_regular_file(checkpoint_dir, ec) &&
      (is_gguf_file(checkpoint_dir) || fs::path(checkpoint_dir).extension() == ".gguf"))
    return load_gguf_model(checkpoint_dir);
  if (fs::is_regular_file(checkpoint_dir, ec) &&
      (is_llama2c_checkpoint(checkpoint_dir) || fs::path(checkpoint_dir).extension() == ".bin"))
    return model_from_llama2c(read_llama2c(checkpoint_dir), checkpoint_dir);
  const std::string dir = resolve_checkpoint_dir(checkpoint_dir);
  if (is_hf_model_dir(dir)) return load_hf_llama(dir);
  // A corrupt checkpoint of a run (a config or weights cut short, a checksum that fails): name
  // the newest earlier one that is intact.
  auto point_to_earlier = [&](const Error& e) {
    const std::string message = with_intact_earlier(e.what(), dir);
    if (message == e.what()) throw;  // the Error being handled, as it was
    fail(message);
  };
  ModelConfig config;
  try {
    config = load_config((fs::path(dir) / "config.json").string());
  } catch (const Error& e) {
    point_to_earlier(e);
  }
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  const auto weight_bytes = fs::file_size(weights, ec);
  try {  // before the model is allocated: a corrupt config may describe a huge one
    if (!ec) check_weights_can_hold(config, weight_bytes, weights);  // else the reader says why
  } catch (const Error& e) {
    point_to_earlier(e);
  }
  auto model = std::make_unique<Model>(config);
  try {
    load_model_weights(*model, weights);
  } catch (const Error& e) {
    point_to_earlier(e);
  }
  return model;
}

std::string with_intact_earlier(const std::string& message, const std::string& checkpoint_dir) {
  if (message.find(" is intact: to resume from it") != std::string::npos) return message;
  const std::string earlier = intact_earlier_checkpoint(checkpoint_dir);
  if (earlier.empty()) return message;
  const fs::path run = fs::path(earlier).parent_path();
  return cat(message, ". The earlier checkpoint ", earlier, " is intact: to resume from it, echo ",
             fs::path(earlier).filename().string(), " > ", (run / "latest").string());
}

std::string intact_earlier_checkpoint(const std::string& checkpoint_dir) {
  const fs::path dir = fs::path(checkpoint_dir).lexically_normal();
  const std::string name = (dir.has_filename() ? dir : dir.parent_path()).filename().string();
  if (name.rfind("step-", 0) != 0) return std::string();
  const fs::path run = (dir.has_filename() ? dir : dir.parent_path()).parent_path();
  std::vector<std::string> earlier;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n.size() == name.size() && n < name && e.is_directory(ec))
      earlier.push_back(n);
  }
  std::sort(earlier.rbegin(), earlier.rend());  // newest first
  for (const std::string& n : earlier) {
    try {
      SafetensorsReader reader((run / n / "model.safetensors").string());
      if (!reader.has_checksums()) continue;  // cannot tell
      reader.verify_checksums();
      // The rest a resume reads from it must be whole too (it was named intact with its
      // optimizer moments cut short).
      load_config((run / n / "config.json").string());
      const fs::path optimizer = run / n / "optimizer.safetensors",
                     state = run / n / "trainer_state.json";
      if (fs::exists(optimizer, ec)) {
        SafetensorsReader moments(optimizer.string());
        if (moments.has_checksums()) moments.verify_checksums();
      }
      if (fs::exists(state, ec) &&
          nlohmann::json::parse(read_file(state.string()), nullptr, false).is_discarded())
        continue;
      return (run / n).string();
    } catch (const Error&) {
    }
  }
  return std::string();
}

void check_weights_can_hold(const ModelConfig& c, uint64_t weight_bytes,
                            const std::string& weights) {
  const uint64_t params = parameter_count(c);
  // The smallest form a weight takes is Q4_0's 18 bytes per 32 weights: more than half a byte.
  CHAINLM_CHECK(params <= weight_bytes * 2, weights, ": holds ", weight_bytes,
                " bytes, but its config (dim ", c.dim, ", n_layers ", c.n_layers, ", ffn_dim ",
                c.ffn_dim, ", vocab_size ", c.vocab_size, ") describes ", params,
                " parameters, which need more than ", params / 2, " bytes even as Q4_0 (", 4 * params,
                " as F32): the weights do not match the config, or the config is corrupt");
}

void save_model(const Model& model, const std::string& dir) {
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "config.json").string(),
                    config_to_json(model.config()).dump(2) + "\n");
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  if (!model.quantized()) {
    auto views = const_cast<Model&>(model).params().value_views();
    write_safetensors(weights, views, {{"format", "chainlm"}});
    return;
  }
  // Quantized: the weight matrices as their blocks (U8 [rows, bytes per row]), the rest F32.
  const ParamStore& ps = model.params();
  const QuantType type = model.quant_type();
  std::vector<RawTensor> tensors;
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    if (model.is_quantized(i))
      tensors.push_back({p.name, "U8", quantized_shape(p, model.tensor_quant_type(i)), model.quantized_blocks(i)});
    else
      tensors.push_back({p.name, "F32", p.shape, ps.value(i)});
  }
  const nlohmann::json quant = {
      {"type", quant_type_name(type)}, {"block", kQuantBlock}, {"tensor_types", tensor_types(model)}};
  write_safetensors(weights, tensors, {{"format", "chainlm"}, {kQuantKey, quant.dump()}});
}

}  // namespace chainlm
