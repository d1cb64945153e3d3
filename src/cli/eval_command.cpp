// chainlm eval ppl | choice | pairs: perplexity, multiple choice and minimal pairs for every
// sub-model k of a model (or one), as a table or one JSON line.
#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/corpus_options.h"
#include "cli/model_loading.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/number_format.h"
#include "core/threads.h"
#include "core/timer.h"
#include "eval/choice.h"
#include "eval/eval_text.h"
#include "eval/pairs.h"
#include "eval/perplexity.h"
#include "io/data_directory.h"
#include "io/run_path.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"
#include "model/checkpoint.h"

namespace chainlm::cli {

namespace fs = std::filesystem;

namespace {

// The checkpoint a run directory's `latest` names when it was evaluated ("runs/x" reads
// another step later); any other model as given.
std::string checkpoint_of(const std::string& model) {
  std::error_code ec;
  if (!std::filesystem::is_directory(model, ec) || directory_kind(model) != DirectoryKind::kRun)
    return model;
  try {
    return resolve_checkpoint_dir(model);
  } catch (const Error&) {
    return model;
  }
}

struct CommonArgs {
  std::string model, tokenizer, data, chains = "all", precision = "fp32";
  int threads = 0;
  bool json = false;
};

void add_common_options(CLI::App* cmd, CommonArgs& a) {
  cmd->add_option("--model", a.model, "Checkpoint or run directory, llama2.c .bin, HF directory or GGUF file")
      ->required();
  cmd->add_option("--tokenizer", a.tokenizer, "Tokenizer (default: the one in the checkpoint)");
  cmd->add_option("--chains", a.chains, "Sub-models to evaluate: all (k = 1..n) or one k")
      ->capture_default_str();
  cmd->add_option("--threads", a.threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  add_precision_option(cmd, a.precision, kInferencePrecisionHelp);
  cmd->add_flag("--json", a.json, "Print one JSON line instead of a table");
}

std::vector<int> parse_chains(const std::string& s, int n) {
  if (s == "all") {
    std::vector<int> ks;
    for (int k = 1; k <= n; ++k) ks.push_back(k);
    return ks;
  }
  auto outside = [&] {
    fail("--chains ", s, " is outside 1..", n, " (the model has ", count_of(n, "chain"), ")");
  };
  size_t used = 0;
  int k = 0;
  try {
    k = std::stoi(s, &used);
  } catch (const std::out_of_range&) {  // digits, but past an int: outside 1..n as any other
    outside();
  } catch (const std::exception&) {
    used = 0;
  }
  CHAINLM_CHECK(used == s.size() && !s.empty(), "--chains \"", s,
                "\" is neither \"all\" nor a number of chains");
  if (k < 1 || k > n) outside();
  return {k};
}

LoadedModel load_for_eval(const CommonArgs& a, bool need_tokenizer) {
  apply_threads_option(a.threads);
  LoadedModel m =
      load_model_and_tokenizer(a.model, a.tokenizer, need_tokenizer, parse_precision(a.precision));
  if (m.tokenizer)
    CHAINLM_CHECK(m.tokenizer->vocab_size() <= m.model->config().vocab_size, "the tokenizer has ",
                  m.tokenizer->vocab_size(), " tokens, more than the model's vocabulary (",
                  m.model->config().vocab_size,
                  "); is it the tokenizer the model was trained with?");
  return m;
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

void add_ppl(CLI::App* eval) {
  auto* cmd = eval->add_subcommand(
      "ppl", "Loss, perplexity, bits per byte and tokens/s of every sub-model on a text");
  struct Args : CommonArgs {
    PerplexityOptions opt;
    CorpusFlags text;  // how a text file is read: as prepare read it
  };
  auto a = std::make_shared<Args>();
  add_common_options(cmd, *a);
  cmd->add_option("--data", a->data,
                  "Text file (documents split like `chainlm prepare`), token shard (.bin) or data "
                  "directory (its val.bin)")
      ->required();
  cmd->add_option("--seq-len", a->opt.seq_len,
                  "Window length in tokens; 0 = the model's max_seq_len");
  cmd->add_option("--stride", a->opt.stride,
                  "Start a window every N tokens, scoring its last N (sliding window); 0 = "
                  "--seq-len (no overlap)");
  cmd->add_option("--batch-size", a->opt.batch_size,
                  "Windows per forward pass; 0 = about 1024 tokens");
  // A text file is read as prepare reads its inputs, so that a file and the shard prepare makes
  // of it with the same options give the same figures.
  add_corpus_format_options(cmd, a->text, "blank-lines");
  cmd->callback([a]() {
    std::error_code ec;
    CHAINLM_CHECK(fs::exists(a->data, ec), a->data, ": no such file or directory");
    const bool shard = is_token_shard_file(a->data) || fs::is_directory(a->data);
    // The model's tokenizer: --tokenizer, or the one it carries (a checkpoint's, a GGUF's; a
    // llama2.c file carries none). With it a shard's bytes, and so bits per byte, are known.
    const std::string model_tok =
        !a->tokenizer.empty() ? a->tokenizer : carried_tokenizer(a->model);
    LoadedModel lm = load_for_eval(*a, !shard || !model_tok.empty());
    Model& model = *lm.model;
    const int n = model.config().n_chains();
    a->opt.chains = parse_chains(a->chains, n);
    if (shard) {
      // Shards carry the tokenizer they were made with (prepare copies it beside them).
      const std::string data_dir = fs::is_directory(a->data, ec) ? a->data : fs::path(a->data).parent_path().string();
      const std::string dir = data_dir.empty() ? "." : data_dir;
      if (!model_tok.empty() && dir_has_tokenizer(dir)) {
        check_same_tokenizer(dir, model_tok, "eval ppl",
                             a->tokenizer.empty() ? std::string() : carried_tokenizer(a->model));
      } else if (const std::string path = is_token_shard_file(a->data)
                                              ? a->data
                                              : (fs::path(a->data) / "val.bin").string();
                 fs::is_regular_file(path, ec)) {  // (else load_eval_tokens says what is missing)
        // One side has no tokenizer to compare: a shard of another tokenizer of the same size
        // would be scored as if it were the model's (a loss of 11 where 1.4 was right).
        const TokenShard probe(path);
        std::fprintf(
            stderr,
            "warning: %s, so nothing checks that the tokens of %s (made with a tokenizer of %u "
            "tokens; the model has %d rows) are the model's tokenizer's; %s\n",
            model_tok.empty()
                ? cat(a->model, " carries no tokenizer").c_str()
                : cat(dir, " holds no tokenizer (prepare puts one beside its shards)").c_str(),
            a->data.c_str(), probe.vocab_size(), model.config().vocab_size,
            model_tok.empty() ? "pass --tokenizer with the one the model was trained with"
                              : "keep the shard in the directory prepare made");
      }
    }
    const EvalTokens data = load_eval_tokens(a->data, lm.tokenizer.get(), a->text.options());
    const PerplexityResult r = evaluate_perplexity(model, data.tokens, data.bytes, a->opt);
    if (a->json) {
      nlohmann::json chains = nlohmann::json::array();
      for (const ChainPerplexity& c : r.chains)
        chains.push_back({{"k", c.k},
                          {"params", c.params},
                          {"loss", c.loss},
                          {"ppl", c.ppl},
                          {"bpb", c.bpb >= 0 ? nlohmann::json(c.bpb) : nlohmann::json(nullptr)},
                          {"tokens_per_s", c.tokens_per_s}});
      print_json({{"model", a->model},
                  {"checkpoint", checkpoint_of(a->model)},
                  {"precision", model.weight_format()},  // the weights that ran
                  {"data", data.path},
                  {"kind", data.kind},
                  {"documents",
                   data.documents >= 0 ? nlohmann::json(data.documents) : nlohmann::json(nullptr)},
                  {"tokens", r.tokens},
                  {"bytes", r.bytes >= 0 ? nlohmann::json(r.bytes) : nlohmann::json(nullptr)},
                  {"seq_len", r.seq_len},
                  {"stride", r.stride},
                  {"windows", r.windows},
                  {"longest_window", r.longest_window},
                  {"seconds", r.seconds},
                  {"tokens_per_s", r.tokens_per_s},
                  {"chains", chains}});
      return;
    }
    // A text shorter than one window is one window of what it holds (it read as 512 tokens).
    const std::string windows =
        r.longest_window < r.seq_len
            ? cat(r.windows, " window of ", r.longest_window, " tokens (the text is shorter than ",
                  "the ", r.seq_len, "-token window)")
            : cat(r.windows, r.windows == 1 ? " window" : " windows", " of ", r.seq_len,
                  " tokens (stride ", r.stride, ")");
    std::printf("%s on %s (%s): %s tokens scored, %s bytes, %s\n", a->model.c_str(),
                data.path.c_str(), data.kind.c_str(), thousands(r.tokens).c_str(),
                r.bytes >= 0 ? thousands(r.bytes).c_str() : "unknown", windows.c_str());
    std::printf("%4s %11s %9s %10s %8s %10s\n", "k", "parameters", "loss", "ppl", "bpb",
                "tokens/s");
    for (const ChainPerplexity& c : r.chains) {
      char bpb[32] = "-";
      if (c.bpb >= 0) std::snprintf(bpb, sizeof bpb, "%.4f", c.bpb);
      std::printf("%4d %11s %9.4f %10.2f %8s %10.0f\n", c.k, short_count(c.params).c_str(), c.loss,
                  c.ppl, bpb, c.tokens_per_s);
    }
  });
}

void add_choice(CLI::App* eval) {
  auto* cmd = eval->add_subcommand(
      "choice", "Multiple choice by log-likelihood: acc and acc_norm per sub-model");
  struct Args : CommonArgs {
    std::string format = "hellaswag";
  };
  auto a = std::make_shared<Args>();
  add_common_options(cmd, *a);
  cmd->add_option("--format", a->format,
                  "Task file format: hellaswag (llama.cpp's 6 lines per task)")
      ->capture_default_str();
  auto* file = cmd->add_option("file", a->data, "Task file");
  cmd->add_option("--data", a->data, "Task file (instead of the positional argument)")
      ->excludes(file);
  cmd->callback([a]() {
    CHAINLM_CHECK(!a->data.empty(),
                  "eval choice: pass the task file (eval choice --format hellaswag FILE)");
    CHAINLM_CHECK(
        a->format == "hellaswag", "--format \"", a->format,
        "\" is not supported; the one format is hellaswag (llama.cpp's: context, gold label "
        "0-3, four endings per task)");
    const std::vector<ChoiceTask> tasks = read_hellaswag_file(a->data);
    LoadedModel lm = load_for_eval(*a, true);
    const std::vector<int> ks = parse_chains(a->chains, lm.model->config().n_chains());
    Timer t;
    const ChoiceEvaluation r = evaluate_choice(*lm.model, *lm.tokenizer, tasks, ks, a->data);
    const double seconds = t.seconds();
    // Such a task measures the endings alone, not the model's reading of the context: say so
    // wherever the figures go.
    if (r.no_context)
      std::fprintf(stderr,
                   "eval choice: warning: %s kept no context: an ending filled the model's "
                   "max_seq_len %d after BOS, so it was scored without its context\n",
                   count_of(r.no_context, "task").c_str(), lm.model->config().max_seq_len);
    if (a->json) {
      nlohmann::json chains = nlohmann::json::array();
      for (const ChoiceScore& c : r.chains)
        chains.push_back({{"k", c.k}, {"acc", c.acc}, {"acc_norm", c.acc_norm}});
      print_json({{"model", a->model},
                  {"checkpoint", checkpoint_of(a->model)},
                  {"precision", lm.model->weight_format()},  // the weights that ran
                  {"data", a->data},
                  {"format", a->format},
                  {"tasks", r.tasks},
                  {"truncated", r.truncated},
                  {"no_context", r.no_context},
                  {"acc", r.chains.back().acc},
                  {"acc_norm", r.chains.back().acc_norm},
                  {"seconds", seconds},
                  {"chains", chains}});
      return;
    }
    std::printf(
        "%s on %s: %s%s (acc_norm: log-likelihood per byte of the ending)\n", a->model.c_str(),
        a->data.c_str(), count_of(r.tasks, "task").c_str(),
        r.truncated ? cat(", ", r.truncated, " with contexts cut to fit max_seq_len").c_str() : "");
    std::printf("%4s %8s %9s\n", "k", "acc", "acc_norm");
    for (const ChoiceScore& c : r.chains) std::printf("%4d %8.4f %9.4f\n", c.k, c.acc, c.acc_norm);
  });
}

void add_pairs(CLI::App* eval) {
  auto* cmd = eval->add_subcommand("pairs", "Minimal pairs (BLiMP JSONL): accuracy per sub-model");
  auto a = std::make_shared<CommonArgs>();
  add_common_options(cmd, *a);
  auto* file = cmd->add_option("file", a->data, "JSONL file");
  cmd->add_option("--data", a->data,
                  "JSONL file, one {\"sentence_good\", \"sentence_bad\"} object per line")
      ->excludes(file);
  cmd->callback([a]() {
    CHAINLM_CHECK(!a->data.empty(), "eval pairs: pass the JSONL file (--data FILE.jsonl)");
    const std::vector<SentencePair> pairs = read_sentence_pairs_file(a->data);
    LoadedModel lm = load_for_eval(*a, true);
    const std::vector<int> ks = parse_chains(a->chains, lm.model->config().n_chains());
    Timer t;
    const PairsEvaluation r = evaluate_pairs(*lm.model, *lm.tokenizer, pairs, ks, a->data);
    const double seconds = t.seconds();
    if (a->json) {
      nlohmann::json chains = nlohmann::json::array();
      for (const PairsScore& c : r.chains) chains.push_back({{"k", c.k}, {"accuracy", c.accuracy}});
      print_json({{"model", a->model},
                  {"checkpoint", checkpoint_of(a->model)},
                  {"precision", lm.model->weight_format()},  // the weights that ran
                  {"data", a->data},
                  {"pairs", r.pairs},
                  {"accuracy", r.chains.back().accuracy},
                  {"seconds", seconds},
                  {"chains", chains}});
      return;
    }
    std::printf("%s on %s: %ld pairs\n", a->model.c_str(), a->data.c_str(), r.pairs);
    std::printf("%4s %9s\n", "k", "accuracy");
    for (const PairsScore& c : r.chains) std::printf("%4d %9.4f\n", c.k, c.accuracy);
  });
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto* eval = app.add_subcommand(
      "eval", "Evaluate every sub-model: perplexity, multiple choice, minimal pairs");
  eval->require_subcommand(1);
  add_ppl(eval);
  add_choice(eval);
  add_pairs(eval);
}

}  // namespace chainlm::cli
