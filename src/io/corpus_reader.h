#pragma once
// The documents of a training corpus, from the inputs users have: plain text or JSON Lines,
// plain or compressed (gzip, xz, zstd, ...), one file, several, or directories of them. Used by
// `chainlm prepare` (documents -> token shards) and `chainlm tokenizer train` (their lines are
// SentencePiece's sentences).
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace chainlm {

enum class CorpusFormat { kAuto, kText, kJsonl };  // kAuto: JSONL by name (.jsonl, .ndjson)
enum class DocumentSplit { kBlankLines, kLines };  // how a text file is cut into documents
enum class InvalidUtf8Policy { kWarn, kError, kSkip };

struct CorpusOptions {
  std::vector<std::string> inputs;  // files or directories (read recursively, sorted by path)
  CorpusFormat format = CorpusFormat::kAuto;
  std::string text_field = "text";  // JSONL: the field holding a record's text
  DocumentSplit split = DocumentSplit::kBlankLines;
  InvalidUtf8Policy invalid_utf8 = InvalidUtf8Policy::kWarn;
  // A directory whose files are never input, though an input directory holds it: prepare's
  // --out (its temporary shards were read as corpus, and then its finished ones).
  std::string exclude_dir;
  // What reads the documents: SentencePiece's trainer (tokenizer train) takes an invalid
  // sequence as U+FFFD, where prepare's byte tokenizer keeps its bytes; the warning says which.
  bool for_sentencepiece_training = false;
};

struct CorpusFile {
  std::string path;         // as found (directory entries joined to the directory given)
  std::string compression;  // "none", "gzip", "xz", "zstd", ...
  bool jsonl = false;
  size_t bytes = 0;  // after decompression
  size_t documents = 0;
  size_t invalid_utf8 = 0;     // invalid sequences in the file
  size_t first_invalid = 0;    // byte offset (decompressed) of the first one, when invalid_utf8 > 0
  size_t empty_records = 0;    // JSONL records whose text is empty or blank (not documents)
  size_t dropped_invalid = 0;  // documents dropped for invalid UTF-8 (InvalidUtf8Policy::kSkip)
};

struct Corpus {
  std::vector<std::string> documents;
  std::vector<CorpusFile> files;
  std::vector<std::string> warnings;  // for the caller to print (invalid UTF-8 reports)
};

// Parses "text"/"jsonl"/"auto", "blank-lines"/"lines", "warn"/"error"/"skip"; throws naming the
// option and the accepted values.
CorpusFormat parse_corpus_format(const std::string& name);
DocumentSplit parse_document_split(const std::string& name);
InvalidUtf8Policy parse_invalid_utf8_policy(const std::string& name);

// The same string for every name of one file (its device and inode, so hard links are one
// file too; the canonical path when stat fails): how a file named twice is found.
std::string same_file_key(const std::string& path);

// The files the inputs name, in reading order: files as given, directories' regular files
// (recursively, hidden names skipped) sorted by path. Throws on a missing input, an empty
// directory or a file named twice. Files under exclude_dir are left out, and so are chainlm's
// own directories found inside (data directories, runs, checkpoints), each said in `notes`.
std::vector<std::string> list_corpus_files(const std::vector<std::string>& inputs,
                                           const std::string& exclude_dir = "",
                                           std::vector<std::string>* notes = nullptr);

// Reads every file: decompresses it, refuses binary, UTF-16 and UTF-32 content and archives
// (tar, zip) with a message saying what to do, checks UTF-8 (per options.invalid_utf8: warn with
// the count and first offset, refuse, or drop the documents that hold invalid bytes), and splits
// it into documents. Text: blank-line or '%'-line separated (split_documents) or one per line;
// JSONL: one document per record's text field (invalid UTF-8 in a JSONL record, which JSON
// cannot hold, becomes U+FFFD under kWarn). Throws with file and line on malformed JSONL.
Corpus read_corpus(const CorpusOptions& options);

// read_corpus without holding the documents: on_document gets each one in reading order as it is
// found, and the Corpus returned has the files and warnings but no documents. Memory: one file's
// decompressed bytes (`chainlm prepare` of a corpus larger than memory, in files).
Corpus stream_corpus(const CorpusOptions& options,
                     const std::function<void(std::string&&)>& on_document);

// One text file as read_corpus reads it, for the evaluation files (eval choice, eval pairs):
// decompressed, archives, UTF-16/32 and binary data refused with what to do, a UTF-8 byte-order
// mark dropped; its bytes, not split.
std::string read_text_file(const std::string& path);

// For a file read with read_text_file: "PATH: N invalid UTF-8 sequences, the first at byte B
// (line L); ..." as prepare warns of them, "" when the bytes are valid UTF-8.
std::string invalid_utf8_note(const std::string& path, std::string_view bytes);

}  // namespace chainlm
