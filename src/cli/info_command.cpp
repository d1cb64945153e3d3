// chainlm info: what a model is: shapes, chains, parameters per chain and per sub-model, KV
// sharing, and for a training run its step and trainable fraction.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/model_info.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "cli/system_info.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/printable.h"
#include "io/gguf.h"
#include "io/hf_llama.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

namespace {

// A metadata value as JSON of its type (every value was a string, numbers and strings in
// quotes alike): numbers, bools and strings whole; arrays whole up to 64 elements, a longer one
// (a vocabulary) by its element type, length and first elements.
nlohmann::json gguf_value_json(const GgufValue& v) {
  auto scalar = [](GgufType t, int64_t i, uint64_t u, double f) -> nlohmann::json {
    if (t == GgufType::kBool) return u != 0;
    if (t == GgufType::kFloat32 || t == GgufType::kFloat64) return f;
    if (t == GgufType::kInt8 || t == GgufType::kInt16 || t == GgufType::kInt32 ||
        t == GgufType::kInt64)
      return i;
    return u;
  };
  if (v.type == GgufType::kString) return v.s;
  if (v.type != GgufType::kArray) return scalar(v.type, v.i, v.u, v.f);
  constexpr uint64_t kWhole = 64;
  nlohmann::json elements = nlohmann::json::array();
  for (uint64_t e = 0; e < std::min<uint64_t>(v.size(), kWhole); ++e)
    elements.push_back(!v.strings.empty()
                           ? nlohmann::json(v.strings[e])
                           : scalar(v.element_type, v.ints.empty() ? 0 : v.ints[e], v.element(e),
                                    v.floats.empty() ? 0 : v.floats[e]));
  if (v.size() <= kWhole) return elements;
  elements.erase(elements.begin() + 3, elements.end());
  return {
      {"element_type", gguf_type_name(v.element_type)}, {"length", v.size()}, {"first", elements}};
}

// What a GGUF file's header says: version, architecture, name, file type, tensors by type, the
// tokenizer model and every metadata key.
nlohmann::json gguf_header_json(const std::string& path) {
  const GgufReader g(path);
  nlohmann::json j = {{"version", g.version()}, {"tensor_count", g.tensors().size()}};
  std::map<std::string, int> types;
  for (const GgufTensorInfo& t : g.tensors()) ++types[ggml_type_name(t.type)];
  j["tensor_types"] = types;
  j["metadata"] = nlohmann::json::object();
  for (const std::string& key : g.keys()) j["metadata"][key] = gguf_value_json(g.value(key));
  for (const char* key : {"general.architecture", "general.name", "tokenizer.ggml.model"})
    j[key] = g.has(key) && g.value(key).type == GgufType::kString ? g.get_string(key) : "";
  // general.file_type is llama.h's llama_ftype: the number as the file holds it, and the name of
  // the types chainlm writes.
  j["file_type"] =
      g.has("general.file_type") ? gguf_value_json(g.value("general.file_type")) : nlohmann::json();
  static const std::map<uint64_t, std::string> names = {
      {0, "f32"}, {1, "f16"}, {2, "q4_0"}, {7, "q8_0"}};
  const auto name = j["file_type"].is_number_unsigned() ? names.find(j["file_type"].get<uint64_t>())
                                                        : names.end();
  j["file_type_name"] = name != names.end() ? name->second : "";
  return j;
}

void print_gguf_header(const nlohmann::json& g) {
  std::string types;
  for (const auto& [type, count] : g["tensor_types"].items()) types += cat(types.empty() ? "" : ", ", count.get<int>(), " ", type);
  std::printf(
      "gguf        architecture \"%s\", name \"%s\", file_type %s, %zu metadata keys, "
      "tokenizer.ggml.model \"%s\"\n",
      printable(g["general.architecture"].get<std::string>()).c_str(),
      printable(g["general.name"].get<std::string>()).c_str(),
      g["file_type"].is_null() ? "none"
      : g["file_type_name"] == ""
          ? g["file_type"].dump().c_str()
          : cat(g["file_type"].dump(), " (", g["file_type_name"].get<std::string>(), ")").c_str(),
      g["metadata"].size(), printable(g["tokenizer.ggml.model"].get<std::string>()).c_str());
  std::printf("            %d tensors: %s\n", g["tensor_count"].get<int>(), types.c_str());
}

}  // namespace

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "info", "Shapes, chains, parameters per chain and sub-model of a model; or, with --system, this machine's CPU and kernels");
  struct Args {
    std::string model;
    bool json = false, system = false;
  };
  auto a = std::make_shared<Args>();
  auto* model_opt =
      cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF file");
  cmd->add_flag("--system", a->system,
                "The CPU's vector features, the threads, and the kernels each library runs here")
      ->excludes(model_opt);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a]() {
    if (a->system) {
      const nlohmann::json s = system_info();
      if (a->json)
        std::printf("%s\n",
                    s.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      else
        print_system_info(s);
      return;
    }
    CHAINLM_CHECK(!a->model.empty(), "info: give --model (a model to describe) or --system");
    std::error_code ec;
    std::string source, dir;
    nlohmann::json gguf;
    std::unique_ptr<Model> model;
    if (fs::is_regular_file(a->model, ec) && is_gguf_file(a->model)) {
      gguf = gguf_header_json(a->model);
      source = cat("GGUF v", gguf["version"].get<int>(), " file");
      // A GGUF chainlm cannot run (another architecture, K-quants) still gets its header shown.
      try {
        model = load_model(a->model);
      } catch (const Error& e) {
        gguf["runs_in_chainlm"] = false;
        gguf["reason"] = e.what();
        if (a->json) {
          std::printf("%s\n", nlohmann::json{{"source", {{"path", a->model}, {"kind", source}}},
                                             {"gguf", gguf}}
                                  .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)
                                  .c_str());
        } else {
          std::printf("model       %s (%s)\n", a->model.c_str(), source.c_str());
          print_gguf_header(gguf);
          std::printf("runs here   no: %s\n", e.what());
        }
        return;
      }
      gguf["runs_in_chainlm"] = true;
    } else if (fs::is_regular_file(a->model, ec)) {
      source = "llama2.c checkpoint";
    } else {
      dir = resolve_checkpoint_dir(a->model);
      source = is_hf_model_dir(dir) ? "Hugging Face LLaMA directory"
               : !fs::equivalent(dir, a->model) && fs::equivalent(fs::path(dir).parent_path(), a->model)
                   ? cat("run directory, latest ", fs::path(dir).filename().string())
                   : "chainlm checkpoint";
    }
    if (!model) model = load_model(a->model);
    // A training checkpoint: its step and what it froze.
    nlohmann::json training;
    const fs::path state_path = dir.empty() ? fs::path() : fs::path(dir) / "trainer_state.json";
    if (!dir.empty() && fs::is_regular_file(state_path, ec)) {
      const nlohmann::json state = read_json_file(state_path.string());
      TrainOptions o;
      try {
        o = TrainOptions::from_json(state.at("options"));
        training["step"] = state.at("step");
      } catch (const nlohmann::json::exception& e) {
        fail(state_path.string(), ": invalid trainer state: ", e.what());
      }
      const FreezeSpec freeze = o.freeze_spec();
      model->set_freeze(freeze);
      training["freeze_chains"] = o.freeze_chains;
      training["train_only"] = o.train_only;
      training["init"] = o.init;
      training["chain_loss_weights"] = o.chain_loss_weights;
      training["used_chains"] = freeze.used_chains;
      training["trainable_params"] = model->params().trainable_numel();
      training["trainable_fraction"] = (double)model->params().trainable_numel() / model->params().numel();
    }
    nlohmann::json tokenizer;
    if (!gguf.is_null() && !carried_tokenizer(a->model).empty()) {
      auto t = load_tokenizer(a->model);
      tokenizer = {{"kind", t->kind()}, {"vocab_size", t->vocab_size()}};
    }
    if (!dir.empty() && dir_has_tokenizer(dir)) {
      // One that cannot be read is said so, with why ("none stored" hid a broken one).
      try {
        auto t = load_tokenizer(find_tokenizer_in_dir(dir));
        tokenizer = {{"kind", t->kind()}, {"vocab_size", t->vocab_size()}};
      } catch (const Error& e) {
        tokenizer = {{"error", e.what()}};
      }
    }
    nlohmann::json j = model_info_json(*model);
    // generate, serve and bench hold fp32 matrices in panels of 32 rows (and a tied embedding
    // twice, for the lookup and as the head): what they report (bench's weight_bytes, serve's
    // estimate) was up to a sixth above "as loaded", which info alone gave. Repacked here to
    // say it exactly.
    if (!model->quantized() && model->precision() == Precision::Fp32) {
      model->use_fp32_panels();
      if (model->fp32_panels()) j["weights"]["bytes_in_inference"] = model->weight_bytes();
    }
    j["source"] = {{"path", a->model}, {"kind", source}};
    if (!training.is_null()) j["training"] = training;
    if (!gguf.is_null()) j["gguf"] = gguf;
    j["tokenizer"] = tokenizer;
    if (a->json) {
      // A GGUF's strings may hold bytes that are not UTF-8: written as U+FFFD, not an exception.
      std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
      return;
    }
    const ModelConfig& c = model->config();
    std::printf("model       %s (%s)\n", a->model.c_str(), source.c_str());
    if (!gguf.is_null()) print_gguf_header(gguf);
    std::printf("kind        %s, chains %s%s\n", j["architecture"].get<std::string>().c_str(),
                nlohmann::json(c.chains).dump().c_str(),
                c.kv_share ? cat(": K/V from chain 1, shared by every chain (",
                                 count_of(c.n_kv_heads, "KV head"), ")")
                                 .c_str()
                           : "");
    if (c.phd.enabled())
      std::printf(
          "phd         %s: every token repeated %d times in training; window %d, chunk %d, "
          "position ids %s; inference caches the originals' K/V%s, and a session holds "
          "a ring of %d hidden-token rows a layer (%s, fp32) beside the cache\n",
          c.phd.name().c_str(), c.phd.repeat, c.phd.window, c.phd.chunk,
          c.phd.shared_positions ? "shared" : "extended",
          c.phd.window > 0 ? cat(" plus the last ", c.phd.window, " hidden tokens'").c_str() : "",
          j["phd_ring_rows"].get<int>(),
          format_bytes((double)j["phd_ring_bytes"].get<long>()).c_str());
    std::printf("shape       dim %d, %s, %s of %d, %s, ffn %d, vocab %d, max_seq_len %d\n", c.dim,
                count_of(c.n_layers, "layer").c_str(), count_of(c.n_heads, "head").c_str(),
                c.head_dim(), count_of(c.n_kv_heads, "KV head").c_str(), c.ffn_dim, c.vocab_size,
                c.max_seq_len);
    std::printf("            rope_theta %g, norm_eps %g, %s head\n", c.rope_theta, c.norm_eps,
                c.tie_embeddings ? "tied" : "untied");
    if (c.rope_scaling.enabled()) std::printf("            rope_scaling %s\n", c.rope_scaling.describe().c_str());
    std::printf("parameters  %s\n", thousands((long)model->params().numel()).c_str());
    // As loaded (an f16 or bf16 file is held in fp32): generate, serve and bench then hold the
    // matrices in panels of 32 rows, a little more where a chain's rows are not a multiple of 32.
    std::string kinds;  // "56 q4_0, 2 q8_0" when not every matrix is of the model's type
    const nlohmann::json matrices = j["weights"].value("matrices", nlohmann::json::object());
    if (matrices.size() > 1 || (matrices.size() == 1 && !matrices.contains(model->weight_format())))
      for (const auto& [type, n] : matrices.items())
        kinds += cat(kinds.empty() ? "; matrices: " : ", ", n.get<int>(), " ", type);
    const nlohmann::json& w = j["weights"];
    std::printf("weights     %s, %s as loaded%s%s%s\n", model->weight_format().c_str(),
                format_bytes(w["bytes"].get<double>()).c_str(),
                model->quantized() ? " (blocks of 32 with fp16 scales; norm gains fp32)" : "",
                kinds.c_str(),
                w.contains("bytes_in_inference") && w["bytes_in_inference"] != w["bytes"]
                    ? cat("; ", format_bytes(w["bytes_in_inference"].get<double>()),
                          " in generate, serve and bench (panels of 32 rows",
                          c.tie_embeddings ? ", the tied embedding also as the head" : "", ")")
                          .c_str()
                    : "");
    std::printf("\nchain  heads   dim   ffn  kv heads  parameters\n");
    for (const auto& ch : j["per_chain"])
      std::printf("%5d  %5d  %4d  %4d  %8s  %10s\n", ch["chain"].get<int>(), ch["heads"].get<int>(),
                  ch["dim"].get<int>(), ch["ffn_dim"].get<int>(),
                  c.kv_share && ch["chain"] != 1 ? "shared" : std::to_string(ch["kv_heads"].get<int>()).c_str(),
                  thousands(ch["params"].get<long>()).c_str());
    std::printf("\nsub-model  dim  heads  kv heads  parameters  weights/token  KV cache/token (%s)\n",
                j["kv_cache"].get<std::string>().c_str());
    // Quantized: the file's average bytes per matrix weight times the sub-model's weights (its
    // block padding and Q8_0 embedding and head spread over all): an estimate, marked so.
    for (const auto& s : j["sub_models"])
      std::printf("k=%-7d %4d  %5d  %8d  %10s  %13s  %11ld B\n", s["chains"].get<int>(),
                  s["dim"].get<int>(), s["heads"].get<int>(), s["kv_heads"].get<int>(),
                  thousands(s["params"].get<long>()).c_str(),
                  ((model->quantized() ? "~" : "") +
                   format_bytes((double)s["matmul_weight_bytes"].get<long>()))
                      .c_str(),
                  s["kv_cache_bytes_per_token"].get<long>());
    if (!training.is_null()) {
      std::string frozen = training["train_only"] == "head" ? "output head only"
                           : training["freeze_chains"].get<int>() > 0
                               ? cat("chains 1..", training["freeze_chains"].get<int>(), " frozen")
                               : std::string("nothing frozen");
      // Chains past the last weighted sub-model are left as they are too (FreezeSpec).
      const int used = training["used_chains"].get<int>(), n = model->config().n_chains();
      if (used > 0 && used < n)
        frozen += used + 1 == n ? cat(", chain ", n, " unused (no loss weight)")
                                : cat(", chains ", used + 1, "..", n, " unused (no loss weight)");
      std::printf("\ntraining    step %ld, %s: trainable %s of %s parameters (%.1f%%)\n",
                  training["step"].get<long>(), frozen.c_str(),
                  thousands(training["trainable_params"].get<long>()).c_str(),
                  thousands((long)model->params().numel()).c_str(),
                  100.0 * training["trainable_fraction"].get<double>());
    }
    std::printf("tokenizer   %s\n",
                tokenizer.is_null() ? "none stored with the model"
                : tokenizer.contains("error")
                    ? cat("cannot be read: ", tokenizer["error"].get<std::string>()).c_str()
                    : cat(tokenizer["kind"].get<std::string>(), ", vocabulary ",
                          tokenizer["vocab_size"].get<int>())
                          .c_str());
  });
}

}  // namespace chainlm::cli
