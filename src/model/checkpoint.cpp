#include "model/checkpoint.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <set>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "model/hf_llama_convert.h"
#include "model/llama2c_import.h"

namespace chainlm {

namespace fs = std::filesystem;

std::string resolve_checkpoint_dir(const std::string& path) {
  // error_code overloads throughout: a path the OS refuses (too long, say) is a chainlm::Error.
  std::error_code ec;
  CHAINLM_CHECK(fs::exists(path, ec), path, ": no such checkpoint or run directory");
  CHAINLM_CHECK(fs::is_directory(path, ec), path, ": not a directory (a chainlm checkpoint is a ",
                "directory with config.json and model.safetensors)");
  if (fs::exists(fs::path(path) / "config.json", ec)) return path;
  const fs::path latest = fs::path(path) / "latest";
  CHAINLM_CHECK(fs::exists(latest, ec), path,
                ": neither a checkpoint (no config.json) nor a run directory (no 'latest' file)");
  std::string name = read_file(latest.string());
  while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
  // A corrupt `latest` must name a directory inside the run, never a path out of it.
  const bool plain_name = !name.empty() && name.size() <= 255 && name != "." && name != ".." &&
                          name.find_first_of(std::string("/\0", 2)) == std::string::npos;
  CHAINLM_CHECK(plain_name, latest.string(), ": does not name a checkpoint directory of the run (",
                name.size() > 80 ? cat("'", name.substr(0, 80), "...', ", name.size(), " bytes")
                                 : cat("'", name, "'"),
                ")");
  const fs::path dir = fs::path(path) / name;
  CHAINLM_CHECK(fs::is_directory(dir, ec), latest.string(), ": names checkpoint '", name,
                "', which does not exist");
  return dir.string();
}

void load_model_weights(Model& model, const std::string& file) {
  SafetensorsReader reader(file);
  ParamStore& ps = model.params();
  std::set<std::string> expected;
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    expected.insert(p.name);
    CHAINLM_CHECK(reader.has(p.name), file, ": missing tensor '", p.name, "' (shape ",
                  shape_to_string(p.shape), ") required by the model config");
    reader.read_f32(p.name, p.shape, ps.value(i));
    // A non-finite weight would only show later as NaN logits (or "GGGG" text): refuse it here.
    const float* v = ps.value(i);
    for (size_t e = 0; e < p.numel(); ++e)
      CHAINLM_CHECK(std::isfinite(v[e]), file, ": tensor '", p.name, "' holds a non-finite value (",
                    v[e], ") at element ", e, ": the weights are corrupt or diverged");
  }
  for (const auto& e : reader.entries())
    CHAINLM_CHECK(expected.count(e.name), file, ": unexpected tensor '", e.name,
                  "': the checkpoint does not match its config.json");
}

std::unique_ptr<Model> load_model(const std::string& checkpoint_dir) {
  // A llama2.c checkpoint is one file. A .bin file that is not one gets read_llama2c's
  // specific complaint (truncated, bad header) rather than "not a directory".
  std::error_code ec;
  if (fs::is_regular_file(checkpoint_dir, ec) &&
      (is_llama2c_checkpoint(checkpoint_dir) || fs::path(checkpoint_dir).extension() == ".bin"))
    return model_from_llama2c(read_llama2c(checkpoint_dir));
  const std::string dir = resolve_checkpoint_dir(checkpoint_dir);
  if (is_hf_model_dir(dir)) return load_hf_llama(dir);
  const ModelConfig config = load_config((fs::path(dir) / "config.json").string());
  const std::string weights = (fs::path(dir) / "model.safetensors").string();
  const auto weight_bytes = fs::file_size(weights, ec);
  if (!ec) check_weights_can_hold(config, weight_bytes, weights);  // else the reader says why
  auto model = std::make_unique<Model>(config);
  try {
    load_model_weights(*model, weights);
  } catch (const Error& e) {
    // A corrupt checkpoint of a run: name the newest earlier one that is intact.
    const std::string earlier = intact_earlier_checkpoint(dir);
    if (earlier.empty()) throw;
    const fs::path run = fs::path(earlier).parent_path();
    fail(e.what(), ". The earlier checkpoint ", earlier, " is intact: to resume from it, ",
         "echo ", fs::path(earlier).filename().string(), " > ", (run / "latest").string());
  }
  return model;
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
      return (run / n).string();
    } catch (const Error&) {
    }
  }
  return std::string();
}

void check_weights_can_hold(const ModelConfig& c, uint64_t weight_bytes,
                            const std::string& weights) {
  const uint64_t params = parameter_count(c);
  CHAINLM_CHECK(params <= weight_bytes / 2, weights, ": holds ", weight_bytes,
                " bytes, but its config (dim ", c.dim, ", n_layers ", c.n_layers, ", ffn_dim ",
                c.ffn_dim, ", vocab_size ", c.vocab_size, ") describes ", params,
                " parameters, which need ", 2 * params, " bytes even as F16 (", 4 * params,
                " as F32): the weights do not match the config, or the config is corrupt");
}

void save_model(const Model& model, const std::string& dir) {
  fs::create_directories(dir);
  write_file_atomic((fs::path(dir) / "config.json").string(),
                    config_to_json(model.config()).dump(2) + "\n");
  auto views = const_cast<Model&>(model).params().value_views();
  write_safetensors((fs::path(dir) / "model.safetensors").string(), views,
                    {{"format", "chainlm"}});
}

}  // namespace chainlm
