// chainlm export: a model (or its 1-chain sub-model) in the standard Hugging Face LLaMA
// layout, config.json + model.safetensors, which transformers and other tools load as is.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "cli/commands.h"
#include "cli/model_info.h"
#include "core/error.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"
#include "model/hf_llama_convert.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a model in the Hugging Face LLaMA layout");
  struct Args {
    std::string model, format, out;
    int chains = 0, threads = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, or HF directory")->required();
  cmd->add_option("--chains", a->chains, "Export the sub-model of the first k chains (default: all)");
  cmd->add_option("--format", a->format, "Output format: hf (Hugging Face LLaMA)")
      ->required()
      ->check(CLI::IsMember({"hf"}));
  cmd->add_option("--out", a->out, "Output directory (must not exist)")->required();
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores");
  cmd->callback([a, cmd]() {
    set_num_threads(a->threads);
    CHAINLM_CHECK(!fs::exists(a->out), a->out, " already exists; choose another --out (nothing was overwritten)");
    std::unique_ptr<Model> model = load_model(a->model);
    const int n = model->config().n_chains();
    const int k = cmd->count("--chains") ? a->chains : n;
    hf_llama_config_of(*model, k);  // refuses what LLaMA cannot express before anything is written

    std::unique_ptr<Model> back;
    double diff = 0;
    std::string tokenizer_note = "no tokenizer (the model carries no SentencePiece tokenizer)";
    write_directory_atomic(a->out, [&](const std::string& tmp) {
      export_hf_llama(*model, k, tmp);
      // The tokenizer goes along when it is a SentencePiece model, as HF LLaMA directories keep it.
      std::error_code ec;
      if (fs::is_directory(a->model, ec)) {
        const fs::path spm = fs::path(resolve_checkpoint_dir(a->model)) / "tokenizer.model";
        if (fs::is_regular_file(spm, ec) && load_tokenizer(spm.string())->kind() == "sentencepiece") {
          write_file_atomic((fs::path(tmp) / "tokenizer.model").string(), read_file(spm.string()));
          tokenizer_note = "tokenizer.model (SentencePiece)";
        }
      }
      // Read it back the way every chainlm command will, and compare logits on a probe.
      back = load_model(tmp);
      const int T = std::min(32, model->config().max_seq_len), V = model->config().vocab_size;
      std::vector<int> probe(T);
      Rng rng(5);
      for (int& t : probe) t = (int)rng.below(V);
      std::vector<float> la((size_t)T * V), lb((size_t)T * V);
      model->logits(probe.data(), 1, T, k, la.data());
      back->logits(probe.data(), 1, T, 1, lb.data());
      for (size_t i = 0; i < la.size(); ++i) diff = std::max(diff, (double)std::fabs(la[i] - lb[i]));
      CHAINLM_CHECK(std::isfinite(diff) && diff <= 1e-4, "export: the exported model's logits differ by ",
                    diff, " from the original's (a bug: nothing was written)");
    }, "export");
    std::printf("exported  %s%s: %s\n", a->model.c_str(), n > 1 ? cat(" (sub-model of ", k, " chain)").c_str() : "",
                describe_model(*back).c_str());
    std::printf("check     max |logit difference| after reading it back: %.3g\n", diff);
    std::printf("wrote     %s: config.json, model.safetensors, %s\n", a->out.c_str(), tokenizer_note.c_str());
  });
}

}  // namespace chainlm::cli
