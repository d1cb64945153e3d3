// `chainlm prepare`: corpus files (text/JSONL, plain or compressed) -> documents -> BOS + tokens ->
// train.bin / val.bin shards, with the tokenizer and a meta.json beside them, so a data directory
// is self-describing.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/corpus_options.h"
#include "core/error.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/token_shard.h"
#include "io/tokenizer.h"

namespace chainlm::cli {
namespace {

struct PrepareOptions {
  std::string tokenizer, out;
  CorpusFlags corpus;
  std::vector<std::string> val_inputs;  // a corpus already split: its validation files
  double val_fraction = 0.1;
  uint64_t seed = 0;
  bool overwrite = false;
};

// An existing --out must be an empty directory, unless --overwrite: prepare replaces
// train.bin, val.bin, meta.json and the tokenizer files, and must never do it by accident.
void check_output_dir(const PrepareOptions& o) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(o.out, ec)) return;
  CHAINLM_CHECK(fs::is_directory(o.out, ec), "prepare: --out ", o.out,
                " is a file, not a directory (nothing was written)");
  if (o.overwrite) return;
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(o.out, ec))
    names.push_back(e.path().filename().string());
  if (names.empty()) return;
  std::sort(names.begin(), names.end());
  std::string listed;
  for (size_t i = 0; i < names.size() && i < 4; ++i) listed += (i ? ", " : "") + names[i];
  if (names.size() > 4) listed += ", ...";
  fail("prepare: ", o.out, " is not empty (", listed, "); choose another --out, or pass ",
       "--overwrite to replace its data (nothing was written)");
}

// A per-document uniform draw in [0, 1) that depends only on (seed, index): validation
// documents are spread through the file and the split never changes between runs.
double document_draw(uint64_t seed, size_t index) {
  return Rng(seed ^ (static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull)).uniform_double();
}

// true = validation. At least one document lands on each side.
std::vector<bool> assign_validation(size_t n_docs, double fraction, uint64_t seed) {
  std::vector<double> draws(n_docs);
  for (size_t i = 0; i < n_docs; ++i) draws[i] = document_draw(seed, i);
  std::vector<bool> is_val(n_docs);
  size_t n_val = 0;
  for (size_t i = 0; i < n_docs; ++i) {
    is_val[i] = draws[i] < fraction;
    n_val += is_val[i] ? 1 : 0;
  }
  if (n_val == 0) is_val[std::min_element(draws.begin(), draws.end()) - draws.begin()] = true;
  if (n_val == n_docs) is_val[std::max_element(draws.begin(), draws.end()) - draws.begin()] = false;
  return is_val;
}

std::vector<std::vector<int>> encode_documents(const Tokenizer& tokenizer,
                                               const std::vector<std::string>& docs) {
  std::vector<std::vector<int>> encoded(docs.size());
  std::string first_error;
  // Exceptions must not leave an OpenMP region; keep the first and rethrow after it.
#pragma omp parallel for schedule(dynamic, 16)
  for (size_t i = 0; i < docs.size(); ++i) {
    try {
      encoded[i] = tokenizer.encode(docs[i]);
    } catch (const std::exception& e) {
#pragma omp critical
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) throw Error(first_error);
  return encoded;
}

void run_prepare(const PrepareOptions& o) {
  CHAINLM_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "--val-fraction ", o.val_fraction,
                " must be strictly between 0 and 1");
  check_output_dir(o);
  auto tokenizer = load_tokenizer(o.tokenizer);  // a bad tokenizer fails before a long read
  Corpus corpus = read_corpus_reporting(o.corpus, "prepare");
  std::string source = describe_corpus(corpus);
  const bool presplit = !o.val_inputs.empty();
  CHAINLM_CHECK(!corpus.documents.empty(), "input ", source, " contains no documents (only blank lines)");
  CHAINLM_CHECK(presplit || corpus.documents.size() >= 2, "input ", source,
                " holds a single document; need at least 2 to make a validation split "
                "(text: documents are separated by blank lines or '%' lines, or one per line "
                "with --split lines; JSONL: one per record)");
  // --val-input: every document of --input trains, every one of --val-input validates (a corpus
  // published already split); read with the same format and split rules.
  std::vector<bool> is_val(corpus.documents.size(), false);
  const size_t input_files = corpus.files.size();  // the --val-input files follow them
  if (presplit) {
    CorpusFlags val_flags = o.corpus;
    val_flags.inputs = o.val_inputs;
    Corpus val_corpus = read_corpus_reporting(val_flags, "prepare");
    CHAINLM_CHECK(!val_corpus.documents.empty(), "--val-input ", describe_corpus(val_corpus),
                  " contains no documents (only blank lines)");
    // A file in both lists would make the validation split a copy of training data.
    std::map<std::string, std::string> trains;  // same_file_key -> as named
    for (const CorpusFile& f : corpus.files) trains.emplace(same_file_key(f.path), f.path);
    for (const CorpusFile& f : val_corpus.files) {
      const auto it = trains.find(same_file_key(f.path));
      CHAINLM_CHECK(
          it == trains.end(), "--val-input ", f.path, " is also read by --input (as ", it->second,
          "): its documents would both train and validate. Give each file to one of them");
    }
    source += " + validation " + describe_corpus(val_corpus);
    is_val.resize(corpus.documents.size() + val_corpus.documents.size(), true);
    for (std::string& d : val_corpus.documents) corpus.documents.push_back(std::move(d));
    for (CorpusFile& f : val_corpus.files) corpus.files.push_back(std::move(f));
  } else {
    is_val = assign_validation(corpus.documents.size(), o.val_fraction, o.seed);
  }
  const std::vector<std::string>& docs = corpus.documents;
  const std::vector<std::vector<int>> encoded = encode_documents(*tokenizer, docs);

  std::vector<uint32_t> train, val;
  size_t train_docs = 0, val_docs = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    std::vector<uint32_t>& dst = is_val[i] ? val : train;
    (is_val[i] ? val_docs : train_docs) += 1;
    dst.push_back(static_cast<uint32_t>(tokenizer->bos_id()));
    for (int id : encoded[i]) dst.push_back(static_cast<uint32_t>(id));
  }

  namespace fs = std::filesystem;
  std::error_code ec;
  fs::create_directories(o.out, ec);
  CHAINLM_CHECK(fs::is_directory(o.out), "cannot create output directory ", o.out,
                ec ? ": " + ec.message() : std::string());
  const uint32_t vocab = static_cast<uint32_t>(tokenizer->vocab_size());
  write_token_shard((fs::path(o.out) / "train.bin").string(), train, vocab);
  write_token_shard((fs::path(o.out) / "val.bin").string(), val, vocab);
  // Over an earlier prepare (--overwrite), the earlier tokenizer's files go first: another
  // kind's would stay beside the new one (a tokenizer.json beside chainlm_tokenizer.json). Not
  // when the tokenizer given is the one in --out itself (--tokenizer DATA --out DATA).
  const fs::path source_dir = fs::is_directory(o.tokenizer, ec)
                                  ? fs::path(o.tokenizer)
                                  : fs::path(o.tokenizer).parent_path();
  if (source_dir.empty() || !fs::equivalent(source_dir, o.out, ec))
    for (const char* name : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                             "generation_config.json", "chainlm_tokenizer.json"})
      fs::remove(fs::path(o.out) / name, ec);
  save_tokenizer_to_dir(o.tokenizer, o.out);
  nlohmann::json sources = nlohmann::json::array();
  nlohmann::json val_sources = presplit ? nlohmann::json::array() : nlohmann::json(nullptr);
  for (size_t i = 0; i < corpus.files.size(); ++i) {
    sources.push_back(fs::absolute(corpus.files[i].path).string());
    if (i >= input_files)
      val_sources.push_back(sources.back());  // files read, as sources lists them
  }
  // Written last: a directory with meta.json is complete.
  nlohmann::json meta = {
      {"tokenizer",
       {{"kind", tokenizer->kind()},
        {"vocab_size", tokenizer->vocab_size()},
        {"bos_id", tokenizer->bos_id()},
        {"eos_id", tokenizer->eos_id()}}},
      {"sources", sources},
      {"format", o.corpus.format},
      {"split", o.corpus.split},
      {"documents", docs.size()},
      {"train_documents", train_docs},
      {"val_documents", val_docs},
      {"train_tokens", train.size()},
      {"val_tokens", val.size()},
      {"val_fraction", presplit ? nlohmann::json(nullptr) : nlohmann::json(o.val_fraction)},
      {"val_sources", val_sources},
      {"seed", o.seed},
      {"bos_prepended", true},
      {"shard_format", "CLMTOKS1"},
  };
  write_file_atomic((fs::path(o.out) / "meta.json").string(), meta.dump(2) + "\n");

  std::printf(
      "prepared %s: %zu documents -> train %zu docs / %zu tokens, val %zu docs / %zu "
      "tokens (%s tokenizer, vocab %d) in %s\n",
      source.c_str(), docs.size(), train_docs, train.size(), val_docs, val.size(),
      tokenizer->kind().c_str(), tokenizer->vocab_size(), o.out.c_str());
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* p = app.add_subcommand(
      "prepare", "Tokenize text or JSONL files into train/val token shards in a data directory");
  p->add_option("--tokenizer", o->tokenizer,
                "\"byte\", a SentencePiece .model, a Hugging Face tokenizer.json, a llama2.c tokenizer.bin, "
                "or a data/checkpoint/HF directory holding one")
      ->required();
  add_corpus_options(p, o->corpus, "--input", "blank-lines");
  p->add_option("--out", o->out, "Output data directory")->required();
  auto* val_fraction =
      p->add_option("--val-fraction", o->val_fraction, "Fraction of documents held out for validation")
          ->capture_default_str();
  p->add_option("--val-input", o->val_inputs,
                "Validation text or JSONL file(s) or directories, for a corpus already split: every "
                "--input document trains and every --val-input document validates (instead of "
                "--val-fraction)")
      ->excludes(val_fraction);
  p->add_option("--seed", o->seed, "Seed of the train/validation split")->capture_default_str();
  p->add_flag("--overwrite", o->overwrite,
              "Replace the data in an existing, non-empty --out (refused without it)");
  p->callback([o] { run_prepare(*o); });
}

}  // namespace chainlm::cli
