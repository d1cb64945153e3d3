// chainlm info: what a model is: shapes, chains, parameters per chain and per sub-model, KV
// sharing, and for a training run its step and trainable fraction.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <sstream>

#include "cli/commands.h"
#include "cli/model_info.h"
#include "cli/parse_util.h"
#include "cli/system_info.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "io/hf_llama.h"
#include "io/llama2c.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "train/trainer.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "info", "Shapes, chains, parameters per chain and sub-model of a model; or, with --system, this machine's CPU and kernels");
  struct Args {
    std::string model;
    bool json = false, system = false;
  };
  auto a = std::make_shared<Args>();
  auto* model_opt =
      cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, or HF directory");
  cmd->add_flag("--system", a->system,
                "The CPU's vector features, the threads, and the kernels each library runs here")
      ->excludes(model_opt);
  cmd->add_flag("--json", a->json, "Print one JSON object");
  cmd->callback([a]() {
    if (a->system) {
      const nlohmann::json s = system_info();
      if (a->json)
        std::printf("%s\n", s.dump().c_str());
      else
        print_system_info(s);
      return;
    }
    CHAINLM_CHECK(!a->model.empty(), "info: give --model (a model to describe) or --system");
    std::error_code ec;
    std::string source, dir;
    if (fs::is_regular_file(a->model, ec)) {
      source = "llama2.c checkpoint";
    } else {
      dir = resolve_checkpoint_dir(a->model);
      source = is_hf_model_dir(dir) ? "Hugging Face LLaMA directory"
               : !fs::equivalent(dir, a->model) && fs::equivalent(fs::path(dir).parent_path(), a->model)
                   ? cat("run directory, latest ", fs::path(dir).filename().string())
                   : "chainlm checkpoint";
    }
    std::unique_ptr<Model> model = load_model(a->model);
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
      model->set_freeze(FreezeSpec{o.freeze_chains, o.train_only == "head"});
      training["freeze_chains"] = o.freeze_chains;
      training["train_only"] = o.train_only;
      training["init"] = o.init;
      training["chain_loss_weights"] = o.chain_loss_weights;
      training["trainable_params"] = model->params().trainable_numel();
      training["trainable_fraction"] = (double)model->params().trainable_numel() / model->params().numel();
    }
    nlohmann::json tokenizer;
    if (!dir.empty()) {
      try {
        const std::string spec = is_hf_model_dir(dir) ? (fs::path(dir) / "tokenizer.model").string()
                                                      : find_tokenizer_in_dir(dir);
        if (spec == "byte" || fs::exists(spec)) {
          auto t = load_tokenizer(spec);
          tokenizer = {{"kind", t->kind()}, {"vocab_size", t->vocab_size()}};
        }
      } catch (const Error&) {
        // No (readable) tokenizer: reported as none.
      }
    }
    nlohmann::json j = model_info_json(*model);
    j["source"] = {{"path", a->model}, {"kind", source}};
    if (!training.is_null()) j["training"] = training;
    j["tokenizer"] = tokenizer;
    if (a->json) {
      std::printf("%s\n", j.dump().c_str());
      return;
    }
    const ModelConfig& c = model->config();
    std::printf("model       %s (%s)\n", a->model.c_str(), source.c_str());
    std::printf("kind        %s, chains %s%s\n", j["architecture"].get<std::string>().c_str(),
                nlohmann::json(c.chains).dump().c_str(),
                c.kv_share ? cat(": K/V from chain 1, shared by every chain (", c.n_kv_heads, " KV heads)").c_str()
                           : "");
    if (c.phd.enabled())
      std::printf("phd         %s: every token repeated %d times in training; window %d, chunk %d, "
                  "position ids %s; inference caches the originals' K/V%s\n",
                  c.phd.name().c_str(), c.phd.repeat, c.phd.window, c.phd.chunk,
                  c.phd.shared_positions ? "shared" : "extended",
                  c.phd.window > 0 ? cat(" plus the last ", c.phd.window, " hidden tokens'").c_str() : "");
    std::printf("shape       dim %d, %d layers, %d heads of %d, %d KV heads, ffn %d, vocab %d, max_seq_len %d\n",
                c.dim, c.n_layers, c.n_heads, c.head_dim(), c.n_kv_heads, c.ffn_dim, c.vocab_size, c.max_seq_len);
    std::printf("            rope_theta %g, norm_eps %g, %s head\n", c.rope_theta, c.norm_eps,
                c.tie_embeddings ? "tied" : "untied");
    std::printf("parameters  %s\n", thousands((long)model->params().numel()).c_str());
    std::printf("weights     %s, %s in memory%s\n", model->weight_format().c_str(),
                format_bytes((double)model->weight_bytes()).c_str(),
                model->quantized() ? " (blocks of 32 with fp16 scales; norm gains fp32)" : "");
    std::printf("\nchain  heads   dim   ffn  kv heads  parameters\n");
    for (const auto& ch : j["per_chain"])
      std::printf("%5d  %5d  %4d  %4d  %8s  %10s\n", ch["chain"].get<int>(), ch["heads"].get<int>(),
                  ch["dim"].get<int>(), ch["ffn_dim"].get<int>(),
                  c.kv_share && ch["chain"] != 1 ? "shared" : std::to_string(ch["kv_heads"].get<int>()).c_str(),
                  thousands(ch["params"].get<long>()).c_str());
    std::printf("\nsub-model  dim  heads  kv heads  parameters  weights/token  KV cache/token\n");
    for (const auto& s : j["sub_models"])
      std::printf("k=%-7d %4d  %5d  %8d  %10s  %13s  %11ld B\n", s["chains"].get<int>(), s["dim"].get<int>(),
                  s["heads"].get<int>(), s["kv_heads"].get<int>(), thousands(s["params"].get<long>()).c_str(),
                  format_bytes((double)s["matmul_weight_bytes"].get<long>()).c_str(),
                  s["kv_cache_bytes_per_token"].get<long>());
    if (!training.is_null()) {
      const std::string frozen = training["train_only"] == "head" ? "output head only"
                                 : training["freeze_chains"].get<int>() > 0
                                     ? cat("chains 1..", training["freeze_chains"].get<int>(), " frozen")
                                     : std::string("nothing frozen");
      std::printf("\ntraining    step %ld, %s: trainable %s of %s parameters (%.1f%%)\n",
                  training["step"].get<long>(), frozen.c_str(),
                  thousands(training["trainable_params"].get<long>()).c_str(),
                  thousands((long)model->params().numel()).c_str(),
                  100.0 * training["trainable_fraction"].get<double>());
    }
    std::printf("tokenizer   %s\n", tokenizer.is_null()
                                        ? "none stored with the model"
                                        : cat(tokenizer["kind"].get<std::string>(), ", vocabulary ",
                                              tokenizer["vocab_size"].get<int>()).c_str());
  });
}

}  // namespace chainlm::cli
