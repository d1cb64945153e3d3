// `chainlm tokenizer train|encode|decode`: build a SentencePiece tokenizer from a corpus, look at
// how a tokenizer splits a piece of text, and turn ids back into text.
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/corpus_options.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/timer.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"

namespace chainlm::cli {
namespace {

struct TrainOptions {
  CorpusFlags corpus;
  std::string out;
  SentencePieceTrainOptions sp;
  bool overwrite = false;
  int threads = 0;  // SentencePiece's trainer threads (it takes OpenMP's count)
};

struct EncodeOptions {
  std::string tokenizer, text;
};

struct DecodeOptions {
  std::string tokenizer, ids;
};

void run_train(const TrainOptions& o) {
  // A directory is never the file --out names, --overwrite or not (renaming onto it fails
  // after the whole training).
  std::error_code ec;
  CHAINLM_CHECK(
      !o.out.empty() && o.out.back() != '/' && !std::filesystem::is_directory(o.out, ec),
      "tokenizer train: --out ", o.out, " is a directory; name the model file to write, e.g. ",
      (std::filesystem::path(o.out) / "tokenizer.model").string(), " (nothing was written)");
  // The corpus itself, or a data directory's tokenizer: refused before "exists; pass
  // --overwrite" could suggest replacing it (files in a directory given are checked once read).
  refuse_replacing_input("tokenizer train", o.out, o.corpus.inputs);
  // (A symbolic link counts as there, dangling or not: it was replaced by the model.)
  CHAINLM_CHECK(o.overwrite || !std::filesystem::exists(std::filesystem::symlink_status(o.out, ec)),
                "tokenizer train: --out ", o.out,
                " exists; choose another file, or pass --overwrite to replace it (nothing was "
                "written)");
  // Its directory is made now, not found missing when the trained model is written, and
  // removed again when training fails (a missing corpus left it behind).
  OutputParentDirs out_dirs(std::filesystem::absolute(o.out).string(), "tokenizer train");
  Timer timer;
  CorpusFlags corpus_options = o.corpus;
  corpus_options.for_sentencepiece_training = true;
  const Corpus corpus = read_corpus_reporting(corpus_options, "tokenizer train");
  std::vector<std::string> inputs;
  for (const CorpusFile& f : corpus.files) inputs.push_back(f.path);
  refuse_replacing_input("tokenizer train", o.out, inputs);
  const std::string source = describe_corpus(corpus);
  const std::string model = train_sentencepiece_model(corpus.documents, source, o.sp);
  if (o.overwrite)
    write_file_atomic(o.out, model);
  else  // absent when it started: another run writing it meanwhile is not replaced
    write_new_file_atomic(o.out, model, "tokenizer train");
  out_dirs.keep();
  auto tokenizer = load_tokenizer(o.out);
  std::printf("trained SentencePiece BPE tokenizer: vocab %d from %s -> %s (%.1f s)\n",
              tokenizer->vocab_size(), source.c_str(), o.out.c_str(), timer.seconds());
}

void run_encode(const EncodeOptions& o) {
  auto tokenizer = load_tokenizer(o.tokenizer);
  std::string line;
  for (int id : tokenizer->encode(o.text)) {
    if (!line.empty()) line += ' ';
    line += std::to_string(id);
  }
  std::printf("%s\n", line.c_str());
}

// What encode prints ("15043 727"), or the same separated by commas.
std::vector<int> parse_ids(const std::string& text) {
  std::vector<int> ids;
  size_t at = 0;
  while (true) {
    at = text.find_first_not_of(" ,\t\n", at);
    if (at == std::string::npos) break;
    const size_t end = std::min(text.find_first_of(" ,\t\n", at), text.size());
    const std::string item = text.substr(at, end - at);
    char* stop = nullptr;
    errno = 0;
    const long id = std::strtol(item.c_str(), &stop, 10);
    CHAINLM_CHECK(
        *stop == '\0' && errno == 0 && id >= 0 && id <= INT32_MAX && std::isdigit(item[0]),
        "tokenizer decode: --ids: '", item, "' is not a token id (ids are integers >= 0, ",
        "separated by spaces or commas, as tokenizer encode prints them)");
    ids.push_back(static_cast<int>(id));
    at = end;
  }
  return ids;
}

void run_decode(const DecodeOptions& o) {
  const std::vector<int> ids = parse_ids(o.ids);
  auto tokenizer = load_tokenizer(o.tokenizer);
  for (int id : ids)
    CHAINLM_CHECK(id < tokenizer->vocab_size(), "tokenizer decode: id ", id, " is outside ",
                  o.tokenizer, "'s vocabulary (", tokenizer->vocab_size(), " tokens)");
  const std::string text = tokenizer->decode(ids);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fputc('\n', stdout);
}

}  // namespace

void add_tokenizer_command(CLI::App& app) {
  CLI::App* tok = app.add_subcommand(
      "tokenizer", "Train a SentencePiece tokenizer, or encode and decode text with any tokenizer");
  tok->require_subcommand(1);

  auto train = std::make_shared<TrainOptions>();
  CLI::App* t = tok->add_subcommand("train", "Train a byte-fallback BPE SentencePiece model");
  // Every non-blank line of the documents is one of SentencePiece's sentences.
  add_corpus_options(t, train->corpus, "--corpus", "lines");
  t->add_option("--vocab-size", train->sp.vocab_size, "Number of pieces (> 259)")->required();
  t->add_option(
       "--character-coverage", train->sp.character_coverage,
       "Share of the corpus's characters that get their own piece, 0.98..1; rarer ones are "
       "spelled in byte pieces")
      ->capture_default_str();
  t->add_option("--out", train->out, "Output .model file")->required();
  t->add_option("--seed", train->sp.seed, "Seed for sentence sampling")
      ->check(seed_value())
      ->capture_default_str();
  t->add_flag("--overwrite", train->overwrite, "Replace an existing --out");
  t->add_flag("--verbose", train->sp.verbose, "Show SentencePiece's training log");
  // As every other command that computes: it was refused as an unknown option.
  t->add_option("--threads", train->threads, "Threads; 0 = all cores, or OMP_NUM_THREADS when set");
  t->callback([train] {
    apply_threads_option(train->threads);
    run_train(*train);
  });

  auto encode = std::make_shared<EncodeOptions>();
  CLI::App* e = tok->add_subcommand("encode", "Print the token ids of a text (no BOS/EOS)");
  e->add_option(
       "--tokenizer", encode->tokenizer,
       "\"byte\", a SentencePiece .model, a Hugging Face tokenizer.json, a llama2.c tokenizer.bin, "
       "a GGUF file, or a data/checkpoint/HF directory holding one")
      ->required();
  e->add_option("--text", encode->text, "Text to encode")->required();
  e->callback([encode] { run_encode(*encode); });

  auto decode = std::make_shared<DecodeOptions>();
  CLI::App* d = tok->add_subcommand("decode",
                                    "Print the text of token ids, followed by a newline (BOS, EOS "
                                    "and other control tokens are left out)");
  d->add_option("--tokenizer", decode->tokenizer, "Any tokenizer encode takes")->required();
  d->add_option("--ids", decode->ids,
                "Token ids, separated by spaces or commas (as encode prints them)")
      ->required();
  d->callback([decode] { run_decode(*decode); });
}

}  // namespace chainlm::cli
