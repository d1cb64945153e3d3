#include "eval/eval_text.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/corpus_reader.h"
#include "io/data_directory.h"
#include "io/run_path.h"
#include "io/token_shard.h"

namespace chainlm {

namespace fs = std::filesystem;

EvalTokens load_eval_tokens(const std::string& path_arg, const Tokenizer* tokenizer,
                            const CorpusOptions& text_options) {
  std::error_code ec;
  std::string path = path_arg;
  if (fs::is_directory(path, ec)) {
    // A run or a checkpoint given as --data: "must hold val.bin" did not say what it was.
    const DirectoryKind kind = directory_kind(path);
    CHAINLM_CHECK(kind != DirectoryKind::kRun && kind != DirectoryKind::kCheckpoint, path_arg,
                  " is a ", directory_kind_name(kind),
                  ", not data to evaluate on (a data directory chainlm prepare "
                  "wrote, a token shard or a text file)");
    CHAINLM_CHECK(fs::is_regular_file(fs::path(path) / "val.bin", ec), path_arg,
                  ": a data directory must hold val.bin (chainlm prepare writes it)");
    path = data_shard_path(path, "val.bin");
  }
  // A pipe or FIFO (`--data <(zcat x.gz)`) was "no such file": the text is read more than once
  // (what it is, then its tokens), which a pipe cannot give.
  CHAINLM_CHECK(!fs::exists(path, ec) || fs::is_regular_file(path, ec), path,
                " is a pipe, FIFO or device, not a file: eval reads its data more than once; "
                "write it to a file first (e.g. COMMAND > eval.txt)");
  CHAINLM_CHECK(fs::is_regular_file(path, ec), path, ": no such file");
  {
    // A file chainlm wrote beside the data or the weights (data/meta.json, a tab completion away
    // from data/val.bin) is JSON text: it was scored as prose.
    const fs::path p(path);
    const std::string name = p.filename().string();
    static const char* const kWritten[] = {
        "meta.json", "config.json",       "trainer_state.json",    "metrics.jsonl",
        "latest",    "model.safetensors", "optimizer.safetensors", "report.md"};
    const DirectoryKind kind = directory_kind(p.has_parent_path() ? p.parent_path().string() : ".");
    const bool written =
        std::find(std::begin(kWritten), std::end(kWritten), name) != std::end(kWritten);
    CHAINLM_CHECK(kind == DirectoryKind::kOther || !written, path_arg, " is the ",
                  directory_kind_name(kind), "'s ", name, ", not data to evaluate on",
                  kind == DirectoryKind::kData
                      ? " (pass the data directory itself, or its val.bin)"
                      : " (a data directory chainlm prepare wrote, a token shard or a "
                        "text file)");
  }
  // A shard named inside its data directory gets the directory's checks too (an unfinished
  // prepare, a count meta.json disagrees with): they applied only to the directory named.
  // (data_shard_path checks what the directory has, and passes a shard with neither.)
  if (const fs::path p(path), name = p.filename(); name == "train.bin" || name == "val.bin")
    path = data_shard_path(p.parent_path().string(), name.string());
  EvalTokens r;
  r.path = path;
  if (is_token_shard_file(path)) {
    r.kind = "shard";
    TokenShard shard(path);
    r.tokens.resize(shard.size());
    if (shard.size() > 0) shard.read(0, shard.size(), r.tokens.data());
    // The text's own bytes, as prepare read them, where it recorded them: decoding may not give
    // them back (SentencePiece drops trailing spaces), a file and its shard are to give the same
    // bits per byte, and a model that carries no tokenizer has them too.
    const auto recorded = recorded_shard(path, shard.size());
    if (recorded) {
      r.bytes = (long)recorded->bytes;
      r.documents = (long)recorded->documents;
    }
    if (tokenizer) {
      // prepare records its tokenizer's vocabulary size in the shard: another size is another
      // tokenizer (a shard moved away from its directory escapes the fingerprint check).
      CHAINLM_CHECK(shard.vocab_size() == static_cast<uint32_t>(tokenizer->vocab_size()), path,
                    ": made with a tokenizer of ", shard.vocab_size(),
                    " tokens, but the model's has ", tokenizer->vocab_size(),
                    "; its token ids would mean other text. Prepare the data with the ",
                    "model's tokenizer");
    }
    if (tokenizer && !recorded) {  // the bytes of the decoded documents
      const int bos = tokenizer->bos_id();
      r.bytes = 0;
      r.documents = 0;
      size_t begin = 0;
      for (size_t i = 1; i <= r.tokens.size(); ++i) {
        if (i < r.tokens.size() && r.tokens[i] != bos) continue;
        // Document [begin, i): a BOS and what follows it (decode drops the BOS).
        std::vector<int> doc(r.tokens.begin() + (long)begin, r.tokens.begin() + (long)i);
        for (int id : doc)
          CHAINLM_CHECK(id < tokenizer->vocab_size(), path, ": token ", id,
                        " is outside the tokenizer's vocabulary (", tokenizer->vocab_size(),
                        "); is this shard from another tokenizer?");
        if (doc.size() > 1 || (doc.size() == 1 && doc[0] != bos)) {
          r.bytes += (long)tokenizer->decode(doc).size();
          r.documents += 1;
        }
        begin = i;
      }
    }
    return r;
  }
  r.kind = "text";
  CHAINLM_CHECK(tokenizer, path,
                ": a text file needs a tokenizer to be evaluated; pass --tokenizer");
  // Read as prepare reads an --input (io/corpus_reader.h): decompressed, JSON Lines by name,
  // UTF-16/32 and binary files refused, invalid UTF-8 counted; so a file and the shard prepare
  // makes of it give the same figures (a .gz was scored as its compressed bytes, a .jsonl with
  // its JSON syntax).
  CorpusOptions options = text_options;
  options.inputs = {path};
  Corpus corpus = read_corpus(options);
  for (const std::string& w : corpus.warnings) std::fprintf(stderr, "warning: %s\n", w.c_str());
  const std::vector<std::string>& docs = corpus.documents;
  CHAINLM_CHECK(!docs.empty(), path, ": holds no text (empty, or only blank lines)");
  std::vector<std::vector<int>> encoded(docs.size());
  std::string first_error;
  // Exceptions must not leave an OpenMP region; keep the first and rethrow after it.
#pragma omp parallel for schedule(dynamic, 16)
  for (size_t i = 0; i < docs.size(); ++i) {
    try {
      encoded[i] = tokenizer->encode(docs[i]);
    } catch (const std::exception& e) {
#pragma omp critical
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) fail(path, ": ", first_error);
  r.bytes = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    r.tokens.push_back(tokenizer->bos_id());
    r.tokens.insert(r.tokens.end(), encoded[i].begin(), encoded[i].end());
    r.bytes += (long)docs[i].size();
  }
  r.documents = (long)docs.size();
  return r;
}

}  // namespace chainlm
