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
namespace {

// The SentencePiece model an HF LLaMA directory needs beside the weights, from --tokenizer
// (a .model file or a directory holding one) or from the source model's directory; empty
// when there is none. Returns what the source carries instead in *missing_reason.
std::string tokenizer_to_export(const std::string& model_arg, const std::string& tokenizer_arg,
                                int vocab_size, std::string* missing_reason) {
  std::error_code ec;
  if (!tokenizer_arg.empty()) {
    const std::string spec = fs::is_directory(tokenizer_arg, ec) ? find_tokenizer_in_dir(tokenizer_arg)
                                                                 : tokenizer_arg;
    const std::unique_ptr<Tokenizer> tok = load_tokenizer(spec);
    CHAINLM_CHECK(tok->kind() == "sentencepiece", "export --tokenizer ", tokenizer_arg, " is ",
                  tok->kind() == "byte" ? "the byte tokenizer" : "a " + tok->kind() + " tokenizer",
                  ", which a Hugging Face LLaMA directory cannot carry: it needs a SentencePiece "
                  "tokenizer.model (or pass --no-tokenizer to export the weights alone)");
    CHAINLM_CHECK(tok->vocab_size() == vocab_size, "export --tokenizer ", tokenizer_arg, " has ",
                  tok->vocab_size(), " tokens but the model has ", vocab_size,
                  ": it is not the tokenizer this model was trained with");
    return spec;
  }
  if (!fs::is_directory(model_arg, ec)) {
    *missing_reason = model_arg + " is a llama2.c checkpoint, which carries no tokenizer";
    return "";
  }
  const fs::path dir = resolve_checkpoint_dir(model_arg);
  const fs::path spm = dir / "tokenizer.model";
  if (fs::is_regular_file(spm, ec) && load_tokenizer(spm.string())->kind() == "sentencepiece")
    return spm.string();
  *missing_reason = fs::exists(dir / "tokenizer.json", ec)
                        ? model_arg + " uses the byte tokenizer, which a Hugging Face LLaMA "
                                      "directory cannot carry"
                        : model_arg + " holds no tokenizer";
  return "";
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("export", "Write a model in the Hugging Face LLaMA layout");
  struct Args {
    std::string model, format, out, tokenizer;
    int chains = 0, threads = 0;
    bool no_tokenizer = false;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model, "Checkpoint or run directory, llama2.c .bin, or HF directory")->required();
  cmd->add_option("--chains", a->chains, "Export the sub-model of the first k chains (default: all)");
  cmd->add_option("--format", a->format, "Output format: hf (Hugging Face LLaMA)")
      ->required()
      ->check(CLI::IsMember({"hf"}));
  cmd->add_option("--out", a->out, "Output directory (must not exist)")->required();
  auto* tok = cmd->add_option("--tokenizer", a->tokenizer,
                              "SentencePiece .model (or a directory holding one) to write beside "
                              "the weights; needed when --model carries none (a llama2.c .bin)");
  cmd->add_flag("--no-tokenizer", a->no_tokenizer,
                "Export the weights alone when there is no SentencePiece tokenizer to include")
      ->excludes(tok);
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores");
  cmd->callback([a, cmd]() {
    set_num_threads(a->threads);
    CHAINLM_CHECK(!fs::exists(a->out), a->out, " already exists; choose another --out (nothing was overwritten)");
    std::unique_ptr<Model> model = load_model(a->model);
    const int n = model->config().n_chains();
    const int k = cmd->count("--chains") ? a->chains : n;
    hf_llama_config_of(*model, k);  // refuses what LLaMA cannot express before anything is written
    // Without a tokenizer the directory holds weights no tool can feed text to: refuse unless
    // the user says that is what they want.
    std::string missing;
    const std::string spm = tokenizer_to_export(a->model, a->tokenizer, model->config().vocab_size, &missing);
    CHAINLM_CHECK(!spm.empty() || a->no_tokenizer, "export: ", missing,
                  ", so the Hugging Face directory would have none and could not be used on text; pass "
                  "--tokenizer with the SentencePiece .model the model was trained with, or --no-tokenizer to "
                  "export the weights alone (nothing was written)");

    std::unique_ptr<Model> back;
    double diff = 0;
    std::string tokenizer_note = "no tokenizer (--no-tokenizer)";
    write_directory_atomic(a->out, [&](const std::string& tmp) {
      export_hf_llama(*model, k, tmp);
      // The tokenizer goes along as HF LLaMA directories keep it: tokenizer.model.
      if (!spm.empty()) {
        write_file_atomic((fs::path(tmp) / "tokenizer.model").string(), read_file(spm));
        tokenizer_note = "tokenizer.model (SentencePiece)";
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
