// chainlm quantize: a model's weight matrices in Q8_0 or Q4_0 blocks (docs/quantization.md),
// written as a chainlm checkpoint that every inference command loads.
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include "cli/commands.h"
#include "cli/logit_difference.h"
#include "cli/model_info.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/rng.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/hf_llama.h"
#include "io/tokenizer.h"
#include "kernels/quant.h"
#include "model/checkpoint.h"
#include "model/sub_model.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

void add_quantize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "quantize", "Write a model with 8-bit (q8_0) or 4-bit (q4_0) block-quantized weights");
  struct Args {
    std::string model, type, out, tokenizer;
    int threads = 0, chains = 0;
  };
  auto a = std::make_shared<Args>();
  cmd->add_option("--model", a->model,
                  "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF file")
      ->required();
  cmd->add_option("--type", a->type, "q8_0 (8-bit) or q4_0 (4-bit), blocks of 32 weights")
      ->required()
      ->check(CLI::IsMember({"q8_0", "q4_0"}));
  cmd->add_option("--chains", a->chains,
                  "Keep the sub-model of the first k chains alone (a smaller model; default: all)");
  cmd->add_option("--out", a->out, "Output checkpoint directory (must not exist)")->required();
  cmd->add_option(
      "--tokenizer", a->tokenizer,
      "Tokenizer to store beside the weights (default: the model's, if it carries one)");
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  cmd->callback([a, cmd]() {
    apply_threads_option(a->threads);
    CHAINLM_CHECK(!fs::exists(fs::symlink_status(a->out)), a->out,  // a dangling symbolic link too
                  " already exists; choose another --out (nothing was overwritten)");
    const QuantType type = parse_quant_type(a->type);
    std::unique_ptr<Model> fp32 = load_model(a->model);
    CHAINLM_CHECK(!fp32->quantized(), "quantize: ", a->model, " is already quantized (",
                  fp32->weight_format(), "); quantize the fp32 checkpoint it came from");
    const int source_chains = fp32->config().n_chains();
    // Decided on the whole model, so that `--chains k` keeps the tables as the full quantized
    // model holds them (its logits are then sub-model k's bit for bit).
    const bool tables_fp32 = quantized_tables_straddle_chains(fp32->config());
    // --chains k: sub-model k becomes the model (its logits bit for bit), then is quantized.
    if (cmd->count("--chains")) {
      CHAINLM_CHECK(a->chains >= 1 && a->chains <= source_chains, "quantize: --chains ", a->chains,
                    " is outside 1..", source_chains, " (the chains of ", a->model, ")");
      if (a->chains < source_chains) fp32 = extract_sub_model(*fp32, a->chains);
    }
    const std::string tokenizer = a->tokenizer.empty() ? carried_tokenizer(a->model) : a->tokenizer;
    // Fail before any work is written; a --tokenizer must be the model's (the checkpoint
    // carries it on to every command that reads the model).
    if (!tokenizer.empty()) {
      const std::unique_ptr<Tokenizer> tok = load_tokenizer(tokenizer);
      if (!a->tokenizer.empty())
        check_tokenizer_for_model(a->model, a->tokenizer, *tok, fp32->config().vocab_size);
    }

    auto quant = std::make_unique<Model>(fp32->config());
    quant->copy_weights_from(*fp32);
    quant->quantize_weights(type, tables_fp32);

    // How far the quantized logits move, on a probe sequence, for the full model.
    const ModelConfig& c = fp32->config();
    const int T = std::min(32, c.max_seq_len), V = c.vocab_size, n = c.n_chains();
    std::vector<int> probe(T);
    Rng rng(7);
    for (int& t : probe) t = (int)rng.below(V);
    std::vector<float> lf((size_t)T * V), lq((size_t)T * V);
    fp32->logits(probe.data(), 1, T, n, lf.data());
    CHAINLM_CHECK(all_finite(lf.data(), lf.size()), "quantize: ", a->model, kNonFiniteLogits);
    quant->logits(probe.data(), 1, T, n, lq.data());
    const double diff = max_abs_difference(lf.data(), lq.data(), lf.size());
    double scale = 0;
    int argmax_same = 0;
    for (int t = 0; t < T; ++t) {
      int bf = 0, bq = 0;
      for (int v = 0; v < V; ++v) {
        const size_t i = (size_t)t * V + v;
        scale = std::max(scale, (double)std::fabs(lf[i]));
        if (lf[i] > lf[(size_t)t * V + bf]) bf = v;
        if (lq[i] > lq[(size_t)t * V + bq]) bq = v;
      }
      argmax_same += bf == bq;
    }
    CHAINLM_CHECK(std::isfinite(diff),
                  "quantize: the quantized model's logits are not finite (a bug: "
                  "nothing was written)");

    write_directory_atomic(
        a->out,
        [&](const std::string& tmp) {
          save_model(*quant, tmp);
          if (!tokenizer.empty()) save_tokenizer_to_dir(tokenizer, tmp);
        },
        "quantize");

    std::printf("model     %s%s: %s\n", a->model.c_str(),
                fp32->config().n_chains() < source_chains
                    ? cat(" (sub-model of ", fp32->config().n_chains(), " of its ", source_chains, " chains)").c_str()
                    : "",
                describe_model(*fp32).c_str());
    std::printf("weights   %s: %s -> %s (%.2fx smaller; norm gains stay fp32)\n", a->type.c_str(),
                format_bytes((double)fp32->weight_bytes()).c_str(),
                format_bytes((double)quant->weight_bytes()).c_str(),
                (double)fp32->weight_bytes() / quant->weight_bytes());
    if (tables_fp32)
      std::printf(
          "note      the embedding and the head stay fp32: a chain boundary of %s falls inside a "
          "%d-weight block (chain widths that are multiples of %d quantize them too), and "
          "blocks across chains would make each sub-model depend on the chains after it\n",
          a->model.c_str(), kQuantBlock, kQuantBlock);
    // q4_0 keeps in q8_0 the matrices whose rows are not whole 32-weight blocks (documented in
    // quantization.md): said here, since on a small model that may be every chain block.
    if (type == QuantType::kQ4_0) {
      int matrices = 0, kept = 0;
      std::set<long> widths;
      for (int i = 0; i < (int)quant->params().infos().size(); ++i) {
        const ParamInfo& p = quant->params().info(i);
        if (!quant->is_quantized(i)) continue;
        ++matrices;
        if (p.cols() % kQuantBlock != 0) {
          ++kept;
          widths.insert((long)p.cols());
        }
      }
      std::string list;
      for (long w : widths) list += cat(list.empty() ? "" : ", ", w);
      if (kept > 0)
        std::printf(
            "note      %d of the %d weight matrices stay q8_0: their rows (%s weights) are not "
            "whole %d-weight blocks (besides the embedding and the head, never 4-bit)\n",
            kept, matrices, list.c_str(), kQuantBlock);
      // A q4_0 file that is (almost) all q8_0 is not what was asked for: a warning, on stderr
      // as every other warning.
      if (kept > 0 && kept + 2 >= matrices)
        std::fprintf(stderr,
                     "warning: %s in %s is 4-bit: %d of its %d weight matrices stay q8_0 "
                     "(choose widths that are multiples of %d)\n",
                     kept == matrices ? "nothing" : "almost nothing", a->out.c_str(), kept,
                     matrices, kQuantBlock);
    }
    std::printf(
        "check     on a %d-token probe: max |logit difference| %.3g (largest |logit| %.3g), "
        "same top token at %d of %d positions\n",
        T, diff, scale, argmax_same, T);
    std::printf("wrote     %s%s\n", a->out.c_str(),
                tokenizer.empty() ? " (no tokenizer: pass --tokenizer to store one)"
                                  : " with its tokenizer");
  });
}

}  // namespace chainlm::cli
