// chainlm expand: grow a trained model by new chains (SPEC A6). The expanded model's logits
// equal the base model's until the new chains are trained (chainlm train --init ...
// --freeze-chains N).
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <new>

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
#include "model/chain_layout.h"
#include "model/checkpoint.h"
#include "model/expand.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

void add_expand_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "expand", "Grow a model by new chains (SPEC A6): same logits until the new chains train");
  struct Args {
    std::string from, add, out, tokenizer;
    bool kv_share = false;
    uint64_t seed = 1;
    int threads = 0;
  };
  auto a = std::make_shared<Args>();
  // --model too: every other command that reads a model names it so.
  cmd->add_option(
         "--from,--model", a->from,
         "Base model: llama2.c .bin, Hugging Face LLaMA directory, or chainlm checkpoint/run")
      ->required();
  cmd->add_option("--add-chains", a->add, "Query heads of every new chain, e.g. 8 or 4,4")->required();
  cmd->add_flag("--kv-share", a->kv_share,
                "CoLM-Air: every chain attends the base's K/V heads (new chains add no K/V weights)");
  cmd->add_option("--out", a->out, "Output checkpoint directory (must not exist)")->required();
  cmd->add_option("--tokenizer", a->tokenizer,
                  "Tokenizer to store in the checkpoint (default: the base's, if it carries one)");
  cmd->add_option("--seed", a->seed, "Seed for the new chains' initialization")
      ->check(seed_value())
      ->capture_default_str();
  cmd->add_option("--threads", a->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  cmd->callback([a]() {
    apply_threads_option(a->threads);
    // (fs::exists(a->out) follows a symbolic link: a dangling one was "there" only at the end.)
    CHAINLM_CHECK(!fs::exists(fs::symlink_status(a->out)), a->out,
                  " already exists; choose another --out (nothing was overwritten)");
    ExpandOptions o;
    o.add_chains = parse_int_list(a->add, "--add-chains");
    o.kv_share = a->kv_share;
    o.seed = a->seed;
    std::unique_ptr<Model> base = load_model(a->from);
    const std::string tokenizer = a->tokenizer.empty() ? carried_tokenizer(a->from) : a->tokenizer;
    // Fail before any work is written; a --tokenizer must be the base's (the checkpoint carries
    // it on to every command that reads the model).
    if (!tokenizer.empty()) {
      const std::unique_ptr<Tokenizer> tok = load_tokenizer(tokenizer);
      if (!a->tokenizer.empty())
        check_tokenizer_for_model(a->from, a->tokenizer, *tok, base->config().vocab_size);
    }
    // The expanded model is held beside the base (and a copy of its tensors while it is
    // written): refused with its size when that does not fit, not ended by std::bad_alloc
    // (a typo like --add-chains 800).
    const ModelConfig grown = expanded_config(base->config(), o);
    const double grown_bytes = 4.0 * static_cast<double>(parameter_count(grown));
    const AvailableMemory avail = available_memory();
    CHAINLM_CHECK(avail.bytes == 0 || 2 * grown_bytes <= static_cast<double>(avail.bytes),
                  "expand: the expanded model ", "has ", parameter_count(grown), " parameters (",
                  format_bytes(grown_bytes), " as fp32); built and ", "written it needs about ",
                  format_bytes(2 * grown_bytes), ", more than the ",
                  format_bytes(static_cast<double>(avail.bytes)), " available (", avail.source,
                  "): check --add-chains ", a->add, " (nothing was written)");
    std::unique_ptr<Model> expanded;
    try {
      expanded = expand_model(*base, o);
    } catch (const std::bad_alloc&) {
      fail("expand: out of memory building the expanded model (", parameter_count(grown),
           " parameters, ", format_bytes(grown_bytes), " as fp32); check --add-chains ", a->add,
           " (nothing was written)");
    }

    // Check what SPEC A6 promises on a probe sequence before writing anything.
    const int T = std::min(64, base->config().max_seq_len), V = base->config().vocab_size;
    std::vector<int> probe(T);
    Rng rng(a->seed + 1);
    for (int& t : probe) t = (int)rng.below(V);
    std::vector<float> lb((size_t)T * V), le((size_t)T * V);
    base->logits(probe.data(), 1, T, base->config().n_chains(), lb.data());
    expanded->logits(probe.data(), 1, T, expanded->config().n_chains(), le.data());
    const double diff = max_abs_difference(lb.data(), le.data(), lb.size());
    double scale = 0;
    for (float x : lb) scale = std::max(scale, (double)std::fabs(x));
    CHAINLM_CHECK(std::isfinite(diff) && diff <= 1e-4 * std::max(1.0, scale),
                  "expand: the expanded model's logits differ from the base's by ", diff,
                  " on a probe sequence (a bug: nothing was written)");

    write_directory_atomic(a->out, [&](const std::string& tmp) {
      save_model(*expanded, tmp);
      if (!tokenizer.empty()) save_tokenizer_to_dir(tokenizer, tmp);
    }, "expand");

    std::printf("base      %s: %s\n", a->from.c_str(), describe_model(*base).c_str());
    std::printf("expanded  %s\n", describe_model(*expanded).c_str());
    const std::vector<long> per = params_per_chain(*expanded);
    long added = 0;
    for (int i = base->config().n_chains(); i < (int)per.size(); ++i) added += per[i];
    std::printf("          the new chains hold %ld parameters, the base's chains %ld (the base's weights%s)\n",
                added, (long)expanded->params().numel() - added,
                base->config().tie_embeddings ? "; its tied head untied: output.weight starts as its embedding" : "");
    std::printf("check     max |logit difference| to the base on a %d-token probe: %.3g\n", T, diff);
    std::printf("wrote     %s%s\n", a->out.c_str(),
                tokenizer.empty() ? " (no tokenizer: pass --tokenizer to store one)" : " with its tokenizer");
  });
}

}  // namespace chainlm::cli
