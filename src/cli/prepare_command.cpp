// `chainlm prepare`: corpus files (text/JSONL, plain or compressed) -> documents -> BOS + tokens ->
// train.bin / val.bin shards, with the tokenizer and a meta.json beside them, so a data directory
// is self-describing.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/commands.h"
#include "cli/corpus_options.h"
#include "cli/parse_util.h"
#include "core/error.h"
#include "core/memory.h"
#include "core/number_format.h"
#include "core/rng.h"
#include "io/atomic_file.h"
#include "io/data_directory.h"
#include "io/run_path.h"
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
  // A checkpoint or a training run: --overwrite replaced a checkpoint's tokenizer with the
  // data's, and the model then decoded with another vocabulary without a word.
  const DirectoryKind kind = directory_kind(o.out);
  CHAINLM_CHECK(kind != DirectoryKind::kRun && kind != DirectoryKind::kCheckpoint,
                "prepare: --out ", o.out, " is a ", directory_kind_name(kind),
                ", not a data directory; choose another --out (nothing was written)");
  // What a prepare killed part-way left (its temporary shards) is not data: it goes first.
  for (const char* name : {"train.bin", "val.bin", "meta.json", kPrepareMarker})
    remove_stale_temporaries(o.out, std::string(name) + ".tmp.");
  for (const char* name : kTokenizerDirFiles)
    remove_stale_temporaries(o.out, std::string(name) + ".tmp.");
  if (prepare_interrupted(o.out)) {  // its data is unusable (train refuses it): prepared again
    if (!o.overwrite)
      std::fprintf(stderr,
                   "prepare: %s holds the files of a prepare that did not finish; replacing them\n",
                   o.out.c_str());
    return;
  }
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(o.out, ec))
    names.push_back(e.path().filename().string());
  if (names.empty()) return;
  if (o.overwrite && kind == DirectoryKind::kData) return;
  std::sort(names.begin(), names.end());
  std::string listed;
  for (size_t i = 0; i < names.size() && i < 4; ++i) listed += (i ? ", " : "") + names[i];
  if (names.size() > 4) listed += ", ...";
  // --overwrite replaces data prepare made, and only that: in a model's directory (a
  // tokenizer.model and its companions, no shards) it deleted the user's tokenizer files.
  CHAINLM_CHECK(kind == DirectoryKind::kData, "prepare: --out ", o.out,
                " is not a data directory (it holds ", listed,
                ", and no train.bin and val.bin); prepare writes its data into a new or empty ",
                "directory, and --overwrite replaces only data a prepare made: choose another ",
                "--out (nothing was written)");
  fail("prepare: ", o.out, " is not empty (", listed, "); choose another --out, or pass ",
       "--overwrite to replace its data (nothing was written)");
}

// A per-document uniform draw in [0, 1) that depends only on (seed, index): validation
// documents are spread through the file and the split never changes between runs.
double document_draw(uint64_t seed, size_t index) {
  return Rng(seed ^ (static_cast<uint64_t>(index) * 0xD1B54A32D192ED03ull)).uniform_double();
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
    } catch (const std::bad_alloc&) {
#pragma omp critical
      if (first_error.empty())
        first_error =
            cat("out of memory tokenizing a document of ", format_bytes((double)docs[i].size()),
                " (a tokenizer encodes a document whole); split such text into "
                "documents (blank lines, or --split lines)");
    } catch (const std::exception& e) {
#pragma omp critical
      if (first_error.empty()) first_error = e.what();
    }
  }
  if (!first_error.empty()) throw Error(first_error);
  return encoded;
}

// The corpus streams through here: documents are tokenized a batch at a time (in parallel) and
// written straight to train.bin or val.bin, so memory holds one file's text and one batch, never
// the corpus's tokens. The shards appear only at commit().
class ShardSplitter {
 public:
  ShardSplitter(const PrepareOptions& o, const Tokenizer& tokenizer)
      : o_(o),
        tokenizer_(tokenizer),
        train_((std::filesystem::path(o.out) / "train.bin").string(),
               (uint32_t)tokenizer.vocab_size()),
        val_((std::filesystem::path(o.out) / "val.bin").string(),
             (uint32_t)tokenizer.vocab_size()) {}

  // A document of --input (validation if its draw says so), or of --val-input (validation_file).
  void add(std::string&& doc, bool validation_file) {
    // A tokenizer encodes a document whole, SentencePiece with ~120 bytes of memory a character
    // (the byte tokenizer ~11): a 110 MB line ran out of memory after 7 s with a bare
    // std::bad_alloc. A document that cannot fit is refused before it is tokenized.
    if (doc.size() > (size_t(16) << 20)) {
      const double need = (double)doc.size() * (tokenizer_.kind() == "byte" ? 11 : 120);
      const AvailableMemory avail = available_memory();
      CHAINLM_CHECK(need <= (double)avail.bytes, "a document of ", format_bytes((double)doc.size()),
                    " (document ", index_ + batch_.size() + 1, ") would take about ",
                    format_bytes(need),
                    " to tokenize (a tokenizer encodes a document whole), more ", "than the ",
                    format_bytes((double)avail.bytes), " available (", avail.source,
                    "): split such text into documents (blank lines, or --split lines)");
    }
    batch_bytes_ += doc.size();
    batch_.push_back(std::move(doc));
    batch_val_file_.push_back(validation_file);
    if (batch_bytes_ >= kBatchBytes || batch_.size() >= kBatchDocuments) flush();
  }

  // With a drawn split, a side left empty gets the document nearest to it (the least draw, or
  // the greatest), as if it had drawn that side: at least one document lands on each side.
  void finish(bool presplit) {
    flush();
    if (!presplit && train_docs_ + val_docs_ >= 2) {
      if (val_docs_ == 0)
        move(train_, val_, lowest_train_, train_docs_, val_docs_, train_bytes_, val_bytes_);
      if (train_docs_ == 0)
        move(val_, train_, highest_val_, val_docs_, train_docs_, val_bytes_, train_bytes_);
    }
  }

  // Both shards written out and synced: what a full disk refuses is refused here, before
  // either replaces an earlier one.
  void finish_files() {
    train_.finish();
    val_.finish();
  }
  void commit() {
    train_.commit();
    val_.commit();
  }

  size_t train_docs() const { return train_docs_; }
  size_t val_docs() const { return val_docs_; }
  uint64_t train_tokens() const { return train_.count(); }
  uint64_t val_tokens() const { return val_.count(); }
  // The documents' bytes as read: what eval ppl counts for bits per byte (decoding the tokens
  // may not give them back: SentencePiece drops a line's trailing spaces).
  uint64_t train_bytes() const { return train_bytes_; }
  uint64_t val_bytes() const { return val_bytes_; }

 private:
  // Tokenizing in batches of about this much text keeps both cores busy and memory flat.
  static constexpr size_t kBatchBytes = size_t(8) << 20;
  static constexpr size_t kBatchDocuments = 16384;

  struct Placed {  // a document's tokens in a shard being written, its bytes, and its draw
    double draw = 0;
    uint64_t start = 0, tokens = 0, bytes = 0;
    bool set = false;
  };

  void flush() {
    if (batch_.empty()) return;
    const std::vector<std::vector<int>> encoded = encode_documents(tokenizer_, batch_);
    std::vector<uint32_t> row;
    for (size_t i = 0; i < batch_.size(); ++i, ++index_) {
      const double draw = batch_val_file_[i] ? 0.0 : document_draw(o_.seed, index_);
      const bool validation =
          batch_val_file_[i] || (o_.val_inputs.empty() && draw < o_.val_fraction);
      TokenShardWriter& shard = validation ? val_ : train_;
      row.assign(1, (uint32_t)tokenizer_.bos_id());
      for (int id : encoded[i]) row.push_back((uint32_t)id);
      const Placed here{draw, shard.count(), row.size(), batch_[i].size(), true};
      shard.append(row.data(), row.size());
      (validation ? val_bytes_ : train_bytes_) += batch_[i].size();
      if (validation) {
        ++val_docs_;
        if (!highest_val_.set || draw > highest_val_.draw) highest_val_ = here;
      } else {
        ++train_docs_;
        if (!lowest_train_.set || draw < lowest_train_.draw) lowest_train_ = here;
      }
    }
    batch_.clear();
    batch_val_file_.clear();
    batch_bytes_ = 0;
  }

  static void move(TokenShardWriter& from, TokenShardWriter& to, const Placed& doc,
                   size_t& from_docs, size_t& to_docs, uint64_t& from_bytes, uint64_t& to_bytes) {
    const std::vector<uint32_t> tokens = from.take(doc.start, doc.tokens);
    to.append(tokens.data(), tokens.size());
    --from_docs;
    ++to_docs;
    from_bytes -= doc.bytes;
    to_bytes += doc.bytes;
  }

  const PrepareOptions& o_;
  const Tokenizer& tokenizer_;
  TokenShardWriter train_, val_;
  std::vector<std::string> batch_;
  std::vector<bool> batch_val_file_;
  size_t batch_bytes_ = 0, index_ = 0, train_docs_ = 0, val_docs_ = 0;
  uint64_t train_bytes_ = 0, val_bytes_ = 0;
  Placed lowest_train_, highest_val_;
};

size_t documents_in(const std::vector<CorpusFile>& files) {
  size_t n = 0;
  for (const CorpusFile& f : files) n += f.documents;
  return n;
}

// A file in both lists would make the validation split a copy of training data.
void refuse_files_in_both(const PrepareOptions& o) {
  std::map<std::string, std::string> trains;  // same_file_key -> as named
  for (const std::string& path : list_corpus_files(o.corpus.inputs, o.corpus.exclude_dir))
    trains.emplace(same_file_key(path), path);
  for (const std::string& path : list_corpus_files(o.val_inputs, o.corpus.exclude_dir)) {
    const auto it = trains.find(same_file_key(path));
    CHAINLM_CHECK(it == trains.end(), "--val-input ", path, " is also read by --input (as ",
                  it->second,
                  "): its documents would both train and validate. Give each file to one of them");
  }
}

// Prepares into o.out, which exists.
void prepare_into(const PrepareOptions& given, const Tokenizer& tokenizer) {
  PrepareOptions o = given;
  o.corpus.exclude_dir = o.out;  // an input directory may hold --out: its files are not input
  const bool presplit = !o.val_inputs.empty();
  if (presplit) refuse_files_in_both(o);
  ShardSplitter splitter(o, tokenizer);
  const Corpus corpus = stream_corpus_reporting(
      o.corpus, "prepare", [&](std::string&& d) { splitter.add(std::move(d), false); });
  std::string source = describe_corpus(corpus);
  // Documents --invalid-utf8 skip dropped: the input held them, and the messages blamed it.
  size_t dropped = 0;
  for (const CorpusFile& f : corpus.files) dropped += f.dropped_invalid;
  const std::string after_skip = dropped
                                     ? cat(" after --invalid-utf8 skip dropped ",
                                           count_of(dropped, "document"), " holding invalid UTF-8")
                                     : std::string();
  CHAINLM_CHECK(documents_in(corpus.files) > 0, "input ", source,
                dropped ? after_skip + " has no documents left"
                        : " contains no documents (only blank lines)");
  CHAINLM_CHECK(presplit || documents_in(corpus.files) >= 2, "input ", source,
                dropped ? after_skip + " has a single document left" : " holds a single document",
                "; need at least 2 to make a validation split "
                "(text: documents are separated by blank lines or '%' lines, or one per line "
                "with --split lines; JSONL: one per record)");
  std::vector<CorpusFile> files = corpus.files;
  if (presplit) {
    // --val-input: every document of --input trains, every one of --val-input validates (a
    // corpus published already split); read with the same format and split rules.
    CorpusFlags val_flags = o.corpus;
    val_flags.inputs = o.val_inputs;
    const Corpus val_corpus = stream_corpus_reporting(
        val_flags, "prepare", [&](std::string&& d) { splitter.add(std::move(d), true); });
    CHAINLM_CHECK(documents_in(val_corpus.files) > 0, "--val-input ", describe_corpus(val_corpus),
                  " contains no documents (only blank lines)");
    source += " + validation " + describe_corpus(val_corpus);
    files.insert(files.end(), val_corpus.files.begin(), val_corpus.files.end());
  }
  splitter.finish(presplit);
  splitter.finish_files();
  // From the first shard replaced to meta.json, the directory is marked: stopped in between, it
  // could hold one corpus's train.bin beside another's val.bin or tokenizer, and train, eval and
  // a later prepare see the mark (io/data_directory.h). Not before: a disk that filled while
  // the shards were written left an earlier prepare's whole data marked as unfinished (a trial).
  const std::string marker = (std::filesystem::path(o.out) / kPrepareMarker).string();
  write_file_atomic(
      marker,
      "chainlm prepare is replacing the data in this directory; if it is still here, that "
      "prepare did not finish: run it again\n");
  splitter.commit();

  namespace fs = std::filesystem;
  std::error_code ec;
  // Over an earlier prepare (--overwrite), the earlier tokenizer's files go first: another
  // kind's would stay beside the new one (a tokenizer.json beside chainlm_tokenizer.json). Not
  // when the tokenizer given is the one in --out itself (--tokenizer DATA --out DATA).
  const fs::path source_dir = fs::is_directory(o.tokenizer, ec)
                                  ? fs::path(o.tokenizer)
                                  : fs::path(o.tokenizer).parent_path();
  std::vector<std::string> removed;
  if (source_dir.empty() || !fs::equivalent(source_dir, o.out, ec))
    for (const char* name : kTokenizerDirFiles)
      if (fs::remove(fs::path(o.out) / name, ec)) removed.push_back(name);
  save_tokenizer_to_dir(o.tokenizer, o.out);
  // Said, as the files are gone and not replaced: one of them may have been the user's own.
  std::string gone;
  for (const std::string& name : removed)
    if (!fs::exists(fs::path(o.out) / name, ec)) gone += (gone.empty() ? "" : ", ") + name;
  if (!gone.empty())
    std::fprintf(
        stderr,
        "prepare: removed the earlier tokenizer's %s from %s (the new tokenizer has none)\n",
        gone.c_str(), o.out.c_str());
  nlohmann::json sources = nlohmann::json::array();
  nlohmann::json val_sources = presplit ? nlohmann::json::array() : nlohmann::json(nullptr);
  for (size_t i = 0; i < files.size(); ++i) {
    sources.push_back(fs::absolute(files[i].path).string());
    if (i >= corpus.files.size())
      val_sources.push_back(sources.back());  // files read, as sources lists them
  }
  const size_t documents = splitter.train_docs() + splitter.val_docs();
  // Written last, then the mark goes: the directory is whole.
  nlohmann::json meta = {
      {"tokenizer",
       {{"kind", tokenizer.kind()},
        {"vocab_size", tokenizer.vocab_size()},
        {"bos_id", tokenizer.bos_id()},
        {"eos_id", tokenizer.eos_id()}}},
      {"sources", sources},
      {"format", o.corpus.format},
      {"split", o.corpus.split},
      {"documents", documents},
      {"train_documents", splitter.train_docs()},
      {"val_documents", splitter.val_docs()},
      {"train_tokens", splitter.train_tokens()},
      {"val_tokens", splitter.val_tokens()},
      {"train_bytes", splitter.train_bytes()},
      {"val_bytes", splitter.val_bytes()},
      {"val_fraction", presplit ? nlohmann::json(nullptr) : nlohmann::json(o.val_fraction)},
      {"val_sources", val_sources},
      {"seed", o.seed},
      {"bos_prepended", true},
      {"shard_format", "CLMTOKS1"},
  };
  // A file name that is not UTF-8 (bytes a filesystem allows) is listed with U+FFFD for its
  // bad bytes: JSON cannot hold it, and the error came after the whole corpus was tokenized.
  write_file_atomic((fs::path(o.out) / "meta.json").string(),
                    meta.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n");
  fs::remove(marker);
  fsync_directory(o.out);

  std::printf("prepared %s: %s -> train %s / %s, val %s / %s (%s tokenizer, vocab %d) in %s\n",
              source.c_str(), count_of((long)documents, "document").c_str(),
              count_of((long)splitter.train_docs(), "document").c_str(),
              count_of((long)splitter.train_tokens(), "token").c_str(),
              count_of((long)splitter.val_docs(), "document").c_str(),
              count_of((long)splitter.val_tokens(), "token").c_str(), tokenizer.kind().c_str(),
              tokenizer.vocab_size(), o.out.c_str());
}

void run_prepare(const PrepareOptions& o) {
  CHAINLM_CHECK(o.val_fraction > 0.0 && o.val_fraction < 1.0, "--val-fraction ", o.val_fraction,
                " must be strictly between 0 and 1");
  namespace fs = std::filesystem;
  std::error_code ec;
  // One prepare at a time in a directory (two --overwrite runs both said they prepared it, and
  // one's data was silently the other's): flock on the directory itself, released however the
  // process ends. An existing --out is locked before it is looked at: the second of two
  // prepares said it was "replacing the files of a prepare that did not finish" (the first's,
  // running) and then that another prepare was writing.
  auto lock_out = [&o]() {
    const int fd = ::open(o.out.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
      ::close(fd);
      fail("prepare: another prepare is writing into ", o.out, " (nothing was changed)");
    }
    return fd;
  };
  struct CloseLock {
    int fd = -1;
    ~CloseLock() {
      if (fd >= 0) ::close(fd);
    }
  } close_lock;
  if (fs::is_directory(o.out, ec)) close_lock.fd = lock_out();
  check_output_dir(o);
  auto tokenizer = load_tokenizer(o.tokenizer);  // a bad tokenizer fails before a long read
  const bool made_out = !fs::exists(o.out, ec);
  // The directories above --out made for it go again if prepare fails (as --out itself does).
  OutputParentDirs parents(fs::absolute(o.out).lexically_normal().string(), "prepare");
  fs::create_directories(o.out, ec);
  CHAINLM_CHECK(fs::is_directory(o.out), "cannot create output directory ", o.out,
                ec ? ": " + ec.message() : std::string());
  // A directory made here is locked now (refused before the try below, which would remove it).
  if (close_lock.fd < 0) close_lock.fd = lock_out();
  try {
    prepare_into(o, *tokenizer);
  } catch (...) {
    // The shards' temporary files are gone with their writers; a directory made for them goes
    // too. In an earlier one, the data is as it was unless the mark says otherwise.
    if (made_out) fs::remove_all(o.out, ec);
    throw;
  }
  parents.keep();
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  auto o = std::make_shared<PrepareOptions>();
  CLI::App* p = app.add_subcommand(
      "prepare", "Tokenize text or JSONL files into train/val token shards in a data directory");
  p->add_option("--tokenizer", o->tokenizer,
                "\"byte\", a SentencePiece .model, a Hugging Face tokenizer.json, a llama2.c "
                "tokenizer.bin, a GGUF file, "
                "or a data/checkpoint/HF directory holding one")
      ->required();
  add_corpus_options(p, o->corpus, "--input", "blank-lines");
  p->add_option("--out", o->out, "Output data directory")->required();
  auto* val_fraction = p->add_option("--val-fraction", o->val_fraction,
                                     "Fraction of documents held out for validation")
                           ->check(in_float_range())
                           ->capture_default_str();
  p->add_option("--val-input", o->val_inputs,
                "Validation text or JSONL file(s) or directories, for a corpus already split: every "
                "--input document trains and every --val-input document validates (instead of "
                "--val-fraction)")
      ->excludes(val_fraction);
  p->add_option("--seed", o->seed, "Seed of the train/validation split")
      ->check(seed_value())
      ->capture_default_str();
  p->add_flag("--overwrite", o->overwrite,
              "Replace the data in an existing, non-empty --out (refused without it)");
  p->callback([o] { run_prepare(*o); });
}

}  // namespace chainlm::cli
