#include "cli/corpus_options.h"

#include <cstdio>
#include <map>

namespace chainlm::cli {

CorpusOptions CorpusFlags::options() const {
  CorpusOptions o;
  o.inputs = inputs;
  o.format = parse_corpus_format(format);
  o.text_field = text_field;
  o.split = parse_document_split(split);
  o.invalid_utf8 = parse_invalid_utf8_policy(invalid_utf8);
  o.exclude_dir = exclude_dir;
  o.for_sentencepiece_training = for_sentencepiece_training;
  return o;
}

void add_corpus_options(CLI::App* cmd, CorpusFlags& flags, const std::string& input_flag,
                        const std::string& split_default) {
  flags.split = split_default;
  cmd->add_option(input_flag, flags.inputs,
                  "Text or JSONL file(s) or directories (read recursively); gzip, xz, zstd and "
                  "bzip2 files are decompressed. Repeat or list several")
      ->required();
  add_corpus_format_options(cmd, flags, split_default);
}

void add_corpus_format_options(CLI::App* cmd, CorpusFlags& flags,
                               const std::string& split_default) {
  flags.split = split_default;
  cmd->add_option("--format", flags.format,
                  "auto (JSONL for .jsonl/.ndjson names, else text), text, or jsonl")
      ->check(CLI::IsMember({"auto", "text", "jsonl"}))
      ->capture_default_str();
  cmd->add_option(
         "--text-field", flags.text_field,
         "JSONL: the field holding each record's text (a.b.0 for nested objects and array items)")
      ->capture_default_str();
  cmd->add_option("--split", flags.split,
                  "Text files: blank-lines (documents separated by blank or '%' lines) or lines "
                  "(one document per line); JSONL records are always one document each")
      ->check(CLI::IsMember({"blank-lines", "lines"}))
      ->capture_default_str();
  cmd->add_option("--invalid-utf8", flags.invalid_utf8,
                  "Text that is not valid UTF-8: warn (report and keep), error, or skip (drop the "
                  "documents holding it)")
      ->check(CLI::IsMember({"warn", "error", "skip"}))
      ->capture_default_str();
}

namespace {

void report_corpus_warnings(const Corpus& corpus, const std::string& command) {
  for (const std::string& warning : corpus.warnings)
    std::fprintf(stderr, "%s: warning: %s\n", command.c_str(), warning.c_str());
  // Records whose text is empty or only whitespace are no documents: said, so the counts add up.
  size_t empty = 0;
  for (const CorpusFile& f : corpus.files) empty += f.empty_records;
  if (empty > 0)
    std::fprintf(stderr, "%s: skipped %zu JSONL record%s whose text is empty or only whitespace\n",
                 command.c_str(), empty, empty == 1 ? "" : "s");
}

}  // namespace

Corpus read_corpus_reporting(const CorpusFlags& flags, const std::string& command) {
  Corpus corpus = read_corpus(flags.options());
  report_corpus_warnings(corpus, command);
  return corpus;
}

Corpus stream_corpus_reporting(const CorpusFlags& flags, const std::string& command,
                               const std::function<void(std::string&&)>& on_document) {
  Corpus corpus = stream_corpus(flags.options(), on_document);
  report_corpus_warnings(corpus, command);
  return corpus;
}

std::string describe_corpus(const Corpus& corpus) {
  std::map<std::string, int> compressions;
  for (const CorpusFile& f : corpus.files)
    if (f.compression != "none") ++compressions[f.compression];
  std::string what = corpus.files.size() == 1 ? corpus.files[0].path
                                              : std::to_string(corpus.files.size()) + " files";
  if (compressions.empty()) return what;
  std::string list;
  for (const auto& [name, count] : compressions)
    list += (list.empty() ? "" : ", ") +
            (corpus.files.size() == 1 ? name : std::to_string(count) + " " + name);
  return what + " (" + list + ")";
}

}  // namespace chainlm::cli
