#pragma once
// The corpus options `prepare` and `tokenizer train` share: the inputs (files, directories,
// compressed or not), their format, the JSONL text field, how text splits into documents, and
// what to do with invalid UTF-8.
#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "io/corpus_reader.h"

namespace chainlm::cli {

struct CorpusFlags {
  std::vector<std::string> inputs;
  std::string format = "auto", text_field = "text", split = "blank-lines", invalid_utf8 = "warn";
  std::string exclude_dir;  // CorpusOptions::exclude_dir (prepare: its --out)
  bool for_sentencepiece_training = false;  // CorpusOptions' (tokenizer train)
  CorpusOptions options() const;
};

// Registers `input_flag` (repeatable; files or directories) and --format, --text-field, --split,
// --invalid-utf8 on cmd.
void add_corpus_options(CLI::App* cmd, CorpusFlags& flags, const std::string& input_flag,
                        const std::string& split_default);
// The same without the input flag: how a file given otherwise is read (eval ppl --data).
void add_corpus_format_options(CLI::App* cmd, CorpusFlags& flags, const std::string& split_default);

// Reads the corpus and prints its warnings (invalid UTF-8) to stderr, prefixed by the command.
Corpus read_corpus_reporting(const CorpusFlags& flags, const std::string& command);
// The same for stream_corpus: the documents go to on_document, not into the Corpus.
Corpus stream_corpus_reporting(const CorpusFlags& flags, const std::string& command,
                               const std::function<void(std::string&&)>& on_document);

// "corpus.txt", "corpus.jsonl.gz (gzip)", or "12 files (3 gzip, 1 xz)" for summary lines.
std::string describe_corpus(const Corpus& corpus);

}  // namespace chainlm::cli
