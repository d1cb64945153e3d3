#include "io/corpus_reader.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/error.h"
#include "core/json_document.h"
#include "io/decompressed_file.h"
#include "io/run_path.h"
#include "io/text_documents.h"
#include "io/text_encoding.h"

namespace chainlm {
namespace fs = std::filesystem;
namespace {

// A name's extension in lower case (".JSONL" -> ".jsonl").
std::string lower_extension(const fs::path& p) {
  std::string e = p.extension().string();
  std::transform(e.begin(), e.end(), e.begin(), [](unsigned char c) { return std::tolower(c); });
  return e;
}

// ".gz", ".xz", ... (lower case): a name's suffix for its compression, not its content.
bool is_compression_suffix(const std::string& ext) {
  static const char* kCompressed[] = {".gz",   ".gzip", ".xz",  ".zst",
                                      ".zstd", ".bz2",  ".lz4", ".lzma"};
  return std::any_of(std::begin(kCompressed), std::end(kCompressed),
                     [&](const char* c) { return ext == c; });
}

// A path as one word of a shell command: as it is when plain, else in single quotes; "./" before
// a name starting with '-' (the iconv advice broke on "my file (1).txt" and "-n.txt", a trial).
std::string shell_word(const std::string& path) {
  const std::string p = !path.empty() && path[0] == '-' ? "./" + path : path;
  if (!p.empty() && p.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                        "0123456789_-./+,:@%=") == std::string::npos)
    return p;
  std::string quoted = "'";
  for (char c : p) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Where the iconv advice writes the converted text: beside the file, ".utf8" before its
// extension ("notes.txt" -> "notes.utf8.txt", "data.jsonl.gz" -> "data.utf8.jsonl"), so JSONL
// stays JSONL and the output is never the input (a fixed "converted.txt" truncated a corpus of
// that name, and turned JSONL into text; a trial); a number is added past a file that exists.
// A file in a directory this user cannot write (a shared, read-only dataset) gets its copy in the
// current directory, or else the temporary one: the advice failed there with "Permission denied".
std::string converted_name(const std::string& path, bool compressed) {
  fs::path p(path);
  // A compression suffix goes (a gzip file named data.jsonl keeps its .jsonl, a trial).
  if (compressed && is_compression_suffix(lower_extension(p))) p.replace_extension();
  const std::string ext = p.has_extension() ? p.extension().string() : ".txt";
  const auto writable = [](const fs::path& dir) {
    return ::access(dir.empty() ? "." : dir.c_str(), W_OK) == 0;
  };
  fs::path dir = p.parent_path();
  if (!writable(dir)) {
    std::error_code ec;
    const fs::path tmp = fs::temp_directory_path(ec);
    dir = writable(".") || ec ? fs::path() : tmp;
  }
  const fs::path stem = dir / p.stem();
  std::error_code ec;
  for (int n = 1;; ++n) {
    const fs::path out(stem.string() + (n == 1 ? ".utf8" : cat(".utf8-", n)) + ext);
    // Not even a dangling link: iconv's ">" would write through it.
    if (fs::symlink_status(out, ec).type() == fs::file_type::not_found) return out.string();
  }
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

// JSONL by name: "x.jsonl", "x.ndjson", also under a compression suffix ("x.jsonl.gz"), in any
// case ("X.JSONL", "x.ndjson.GZIP").
bool named_jsonl(const std::string& path) {
  fs::path p(path);
  if (is_compression_suffix(lower_extension(p))) p = p.stem();
  return lower_extension(p) == ".jsonl" || lower_extension(p) == ".ndjson";
}

size_t line_of(std::string_view bytes, size_t offset) {
  return 1 + static_cast<size_t>(std::count(bytes.begin(), bytes.begin() + offset, '\n'));
}

// Archives and non-UTF-8 encodings get a message saying what the file is and what to do.
void refuse_unreadable_content(const std::string& path, const DecompressedFile& file) {
  const std::string_view b = file.bytes;
  const std::string inside =
      file.compression == "none" ? "" : " (" + file.compression + "-compressed)";
  CHAINLM_CHECK(b.substr(0, 4) != std::string_view("PK\x03\x04", 4), path, " is a zip archive",
                inside, "; unzip it and pass the extracted files or their directory");
  CHAINLM_CHECK(b.size() < 262 || b.substr(257, 5) != "ustar", path, " is a tar archive", inside,
                "; extract it (tar -xf) and pass the extracted files or their directory");
  // The encoding is told from the first 64 KiB; a NUL byte anywhere is binary data (a block of
  // it appended to a text went into the shards, warned of only as invalid UTF-8).
  // (After the byte-order marks: UTF-16 text with a mark whose first NUL came after 64 KiB was
  // called binary data, a trial.)
  const TextEncoding encoding = detect_text_encoding(b);
  switch (encoding) {
    case TextEncoding::kUtf8:
    case TextEncoding::kUtf8Bom:
      if (const size_t nul = b.find('\0'); nul != std::string_view::npos)
        fail(path, " holds binary data", inside, ": a NUL byte at byte ", nul, " (line ",
             line_of(b, nul), "), not text; chainlm reads UTF-8 text and JSON Lines");
      return;
    case TextEncoding::kBinary:
      fail(path, " holds binary data", inside,
           ", not text; chainlm reads UTF-8 text and JSON Lines, plain or compressed (gzip, xz, "
           "zstd, bzip2)");
    default: {
      // iconv reads the text, not the compressed file: decompress into it (the advice named the
      // .gz itself, a trial).
      const std::string& z = file.compression;
      const std::string tool = z == "gzip" || z == "xz" || z == "bzip2" || z == "zstd" || z == "lz4"
                                   ? z
                               : z == "lzma" ? "xz"  // xz -dc reads legacy .lzma too
                                             : "";
      const std::string convert = cat("iconv -f ", iconv_encoding_name(encoding), " -t UTF-8");
      const std::string in = shell_word(path), out = shell_word(converted_name(path, z != "none"));
      fail(path, " is ", text_encoding_name(encoding), " text", inside,
           "; chainlm reads UTF-8: convert it first, e.g. ",
           z == "none"     ? cat(convert, " ", in, " > ", out)
           : !tool.empty() ? cat(tool, " -dc ", in, " | ", convert, " > ", out)
                           : cat("decompress it, then ", convert, " < decompressed > ", out));
    }
  }
}

// "PATH: N invalid UTF-8 sequences, the first at byte B (line L)": how every report of them opens.
std::string invalid_utf8_found(const std::string& path, std::string_view bytes,
                               const Utf8Check& utf8) {
  return cat(path, ": ", utf8.invalid, " invalid UTF-8 sequence", utf8.invalid == 1 ? "" : "s",
             ", the first at byte ", utf8.first_invalid, " (line ",
             line_of(bytes, utf8.first_invalid), ")");
}

std::string invalid_utf8_warning(const CorpusFile& f, std::string_view bytes,
                                 InvalidUtf8Policy policy, bool for_sentencepiece_training) {
  std::string message =
      invalid_utf8_found(f.path, bytes, Utf8Check{f.invalid_utf8, f.first_invalid});
  if (policy == InvalidUtf8Policy::kSkip) {
    message +=
        f.dropped_invalid == 1
            ? std::string("; dropped the document holding ") + (f.invalid_utf8 == 1 ? "it" : "them")
            : "; dropped the " + std::to_string(f.dropped_invalid) + " documents holding them";
  } else if (f.jsonl) {
    message += "; replaced by U+FFFD in the JSONL records (JSON cannot hold them)";
  } else {
    message += for_sentencepiece_training ? "; SentencePiece trains on each as U+FFFD. "
                                          : "; kept as bytes (the byte tokenizer keeps them, "
                                            "SentencePiece reads each as U+FFFD). ";
    message += "--invalid-utf8 skip drops those documents, --invalid-utf8 error stops";
  }
  if (f.invalid_utf8 >= 10)
    message +=
        ". Many invalid sequences: if the file is in a legacy encoding, convert it, e.g. "
        "iconv -f LATIN1 -t UTF-8";
  return message;
}

using DocumentSink = std::function<void(std::string&&)>;

// "a string", "an object", "null": a JSON value's type for messages.
std::string a_type(const nlohmann::json& value) {
  if (value.is_null()) return "null";
  const std::string name = value.type_name();
  return (std::string("aeiou").find(name[0]) == std::string::npos ? "a " : "an ") + name;
}

std::string keys_of(const nlohmann::json& object) {
  std::string keys;
  for (const auto& item : object.items()) keys += (keys.empty() ? "" : ", ") + item.key();
  return keys.empty() ? "no fields" : keys;
}

// The record's text field: a top-level key named exactly so, or else a dotted path into nested
// objects and arrays ("meta.body", "choices.0.text"), as datasets nest their text and as jq
// names it. Fails naming the first step the record lacks and what it has there. (The longest
// key first: at the top level that is the whole name.)
const nlohmann::json& text_field_of(const nlohmann::json& record, const std::string& name,
                                    const std::string& where) {
  const nlohmann::json* at = &record;
  std::string path;  // the steps taken so far
  for (size_t start = 0;;) {
    size_t dot = std::min(name.find('.', start), name.size());
    std::string step = name.substr(start, dot - start);
    const nlohmann::json* next = nullptr;
    if (at->is_object()) {
      // A key may hold dots itself ({"meta.data": {"text": ...}}): the longest key that the
      // rest of the path starts with, up to a dot, is the step (a trial could not reach it).
      for (size_t end = name.size(); end != std::string::npos && end > start;
           end = name.rfind('.', end - 1)) {
        const auto it = at->find(name.substr(start, end - start));
        if (it == at->end()) continue;
        next = &*it;
        dot = end;
        step = name.substr(start, end - start);
        break;
      }
    } else if (at->is_array() && !step.empty() && step.size() < 10 &&
               step.find_first_not_of("0123456789") == std::string::npos &&
               (step == "0" || step[0] != '0') && std::stoul(step) < at->size()) {
      // Item numbers as JSON Pointer writes them: no leading zeros.
      next = &(*at)[std::stoul(step)];
    }
    // An empty step that no key (".b", "a.") takes is a mistake in the name, not the record's.
    CHAINLM_CHECK(next != nullptr || !step.empty(), "--text-field \"", name,
                  "\": a path of field names and item numbers between dots has no empty steps");
    if (next == nullptr && at == &record) break;  // not even the first step: the message below
    if (next == nullptr)
      fail(where, ": the record has no \"", name, "\" field: \"", path, "\" is ",
           at->is_object()  ? cat("an object without \"", step, "\" (it has: ", keys_of(*at), ")")
           : at->is_array() ? cat("an array of ", at->size(), at->size() == 1 ? " item" : " items",
                                  ", without item ", step)
                            : a_type(*at),
           "; name the text field with --text-field");
    path += (path.empty() ? "" : ".") + step;
    at = next;
    if (dot == name.size()) return *at;
    start = dot + 1;
  }
  fail(where, ": the record has no \"", name, "\" field (it has: ", keys_of(record),
       "); name the text field with --text-field");
}

void read_jsonl(const CorpusOptions& o, std::string_view bytes, CorpusFile& f,
                const DocumentSink& emit) {
  size_t pos = 0, line_number = 0;
  while (pos < bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    if (nl == std::string_view::npos) nl = bytes.size();
    std::string_view line = bytes.substr(pos, nl - pos);
    pos = nl + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = f.path + ":" + std::to_string(line_number);
    std::string repaired;
    if (!check_utf8(line).ok()) {
      if (o.invalid_utf8 == InvalidUtf8Policy::kSkip) {
        ++f.dropped_invalid;
        continue;
      }
      repaired = replace_invalid_utf8(line);
      line = repaired;
    }
    nlohmann::json record;
    try {
      record = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      fail(where, ": not a JSON record: ", json_error_reason(e),
           " (JSON Lines hold one JSON object per line)");
    }
    CHAINLM_CHECK(record.is_object(), where, ": the record is a JSON ", record.type_name(),
                  ", not an object with a \"", o.text_field, "\" field");
    const nlohmann::json& field = text_field_of(record, o.text_field, where);
    CHAINLM_CHECK(field.is_string(), where, ": field \"", o.text_field, "\" is ", a_type(field),
                  ", not a string");
    std::string text = field.get<std::string>();
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      ++f.empty_records;
      continue;
    }
    ++f.documents;
    emit(std::move(text));
  }
}

void read_text(const CorpusOptions& o, std::string_view bytes, CorpusFile& f,
               const DocumentSink& emit) {
  auto keep = [&](std::string&& doc) {
    if (f.invalid_utf8 > 0 && o.invalid_utf8 == InvalidUtf8Policy::kSkip && !check_utf8(doc).ok()) {
      ++f.dropped_invalid;
      return;
    }
    ++f.documents;
    emit(std::move(doc));
  };
  if (o.split == DocumentSplit::kBlankLines) {
    for_each_document(bytes, keep);
    return;
  }
  for_each_line(bytes, [&](std::string_view line) {
    if (line.find_first_not_of(" \t") != std::string_view::npos) keep(std::string(line));
  });
}

}  // namespace

CorpusFormat parse_corpus_format(const std::string& name) {
  if (name == "auto") return CorpusFormat::kAuto;
  if (name == "text") return CorpusFormat::kText;
  if (name == "jsonl") return CorpusFormat::kJsonl;
  fail("--format ", name, " is not one of auto, text, jsonl");
}

DocumentSplit parse_document_split(const std::string& name) {
  if (name == "blank-lines") return DocumentSplit::kBlankLines;
  if (name == "lines") return DocumentSplit::kLines;
  fail("--split ", name, " is not one of blank-lines, lines");
}

InvalidUtf8Policy parse_invalid_utf8_policy(const std::string& name) {
  if (name == "warn") return InvalidUtf8Policy::kWarn;
  if (name == "error") return InvalidUtf8Policy::kError;
  if (name == "skip") return InvalidUtf8Policy::kSkip;
  fail("--invalid-utf8 ", name, " is not one of warn, error, skip");
}

std::string same_file_key(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0)
    return cat("inode ", (unsigned long long)st.st_dev, ":", (unsigned long long)st.st_ino);
  std::error_code ec;
  const std::string key = fs::weakly_canonical(path, ec).string();
  return ec ? path : key;
}

std::vector<std::string> list_corpus_files(const std::vector<std::string>& inputs,
                                           const std::string& exclude_dir,
                                           std::vector<std::string>* notes) {
  CHAINLM_CHECK(!inputs.empty(), "no input files given");
  std::vector<std::string> files;
  std::vector<std::string> walk_of;  // per file: the input directory it was found in, "" if named
  for (const std::string& input : inputs) {
    std::error_code ec;
    CHAINLM_CHECK(fs::exists(input, ec), "input ", input, " does not exist");
    if (!fs::is_directory(input, ec)) {
      files.push_back(input);
      walk_of.emplace_back();
      continue;
    }
    CHAINLM_CHECK(
        exclude_dir.empty() || !fs::equivalent(input, exclude_dir, ec), "input directory ", input,
        " is where the output goes (--out): give the output a directory of its own, e.g. ",
        (fs::path(input) / "data").string());
    std::vector<std::string> found;
    auto it =
        fs::recursive_directory_iterator(input, fs::directory_options::skip_permission_denied, ec);
    CHAINLM_CHECK(!ec, "cannot list input directory ", input, ": ", ec.message());
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      CHAINLM_CHECK(!ec, "cannot list input directory ", input, ": ", ec.message());
      if (is_hidden(it->path())) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (!exclude_dir.empty() && it->is_directory(ec) &&
          fs::equivalent(it->path(), exclude_dir, ec)) {
        if (notes)
          notes->push_back(cat("skipped ", it->path().string(), ": the output directory (--out)"));
        it.disable_recursion_pending();
        continue;
      }
      // chainlm's own outputs under an input directory (an earlier prepare's --out, a run, a
      // checkpoint) are no text: their shards stopped the next prepare as "binary data".
      if (it->is_directory(ec)) {
        if (const DirectoryKind kind = directory_kind(it->path().string());
            kind != DirectoryKind::kOther) {
          if (notes)
            notes->push_back(cat("skipped ", it->path().string(), ": a chainlm ",
                                 directory_kind_name(kind), ", not text"));
          it.disable_recursion_pending();
          continue;
        }
      }
      // What an interrupted prepare or write left (train.bin.tmp.PID.N, name.tmp.PID.N): chainlm's
      // temporaries, no text ("binary data" stopped the prepare of the directory holding them).
      const std::string name = it->path().filename().string();
      if ((name.rfind("train.bin.tmp.", 0) == 0 || name.rfind("val.bin.tmp.", 0) == 0) &&
          it->is_regular_file(ec)) {
        if (notes)
          notes->push_back(cat("skipped ", it->path().string(), ": a chainlm temporary file"));
        continue;
      }
      if (it->is_regular_file(ec)) found.push_back(it->path().string());
    }
    CHAINLM_CHECK(!found.empty(), "input directory ", input, " holds no files");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
    walk_of.resize(files.size(), input);
  }
  std::map<std::string, size_t> seen;  // same_file_key -> its first index in files
  std::vector<std::string> unique;
  for (size_t i = 0; i < files.size(); ++i) {
    const auto [it, inserted] = seen.emplace(same_file_key(files[i]), i);
    if (inserted) {
      unique.push_back(files[i]);
      continue;
    }
    // A link beside its target in a directory (Debian's fortunes: art.u8 -> art) is read once;
    // a file named on the command line and found again (or named twice) is a mistake, said.
    const std::string& first = files[it->second];
    const bool walked = !walk_of[i].empty(), first_walked = !walk_of[it->second].empty();
    // Named and found in a directory given: say which directory (the message named the file
    // twice, a user trial).
    const std::string& dir = walked ? walk_of[i] : walk_of[it->second];
    const std::string& named = walked ? first : files[i];
    const std::string& found = walked ? files[i] : first;
    CHAINLM_CHECK(walked || first_walked, "input ", files[i], " is given twice",
                  first == files[i] ? std::string() : cat(" (also as ", first, ")"),
                  "; each file is read once");
    CHAINLM_CHECK(walked && first_walked, "input ", named, " is named and also found in directory ",
                  dir, found == named ? std::string() : cat(" (as ", found, ")"),
                  "; each file is read once: leave out one of the two");
    if (notes)
      notes->push_back(cat("skipped ", files[i], ": the same file as ", first, ", read once"));
  }
  return unique;
}

namespace {

constexpr std::string_view kUtf8Mark = "\xEF\xBB\xBF";
constexpr std::string_view kLineStartMark = "\n\xEF\xBB\xBF";  // one at the start of a line

// The bytes without the UTF-8 byte-order marks right after a newline.
std::string without_line_start_marks(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t from = 0;
  for (size_t at = bytes.find(kLineStartMark); at != std::string_view::npos;
       at = bytes.find(kLineStartMark, at + 1)) {
    out.append(bytes.substr(from, at + 1 - from));  // up to the newline
    from = at + kLineStartMark.size();
  }
  out.append(bytes.substr(from));
  return out;
}

}  // namespace

std::string read_text_file(const std::string& path) {
  DecompressedFile file = read_decompressed(path);
  refuse_unreadable_content(path, file);
  if (std::string_view(file.bytes).substr(0, 3) == kUtf8Mark) file.bytes.erase(0, 3);
  return std::move(file.bytes);
}

std::string invalid_utf8_note(const std::string& path, std::string_view bytes) {
  const Utf8Check utf8 = check_utf8(bytes);
  if (utf8.ok()) return "";
  return invalid_utf8_found(path, bytes, utf8) +
         "; each is read as U+FFFD, so those texts are not scored as written";
}

Corpus stream_corpus(const CorpusOptions& o,
                     const std::function<void(std::string&&)>& on_document) {
  CHAINLM_CHECK(!o.text_field.empty(), "--text-field must not be empty");
  Corpus corpus;
  for (const std::string& path : list_corpus_files(o.inputs, o.exclude_dir, &corpus.warnings)) {
    DecompressedFile file = read_decompressed(path);
    refuse_unreadable_content(path, file);
    std::string_view bytes = file.bytes;
    if (bytes.substr(0, 3) == kUtf8Mark) bytes.remove_prefix(3);  // a UTF-8 byte-order mark
    // Files joined with cat keep each one's mark, at the start of a line inside: dropped too (as
    // text they put a U+FEFF before a document; before a JSONL record they broke its JSON).
    std::string unmarked;  // a copy only for a file that has them
    if (bytes.find(kLineStartMark) != std::string_view::npos) {
      unmarked = without_line_start_marks(bytes);
      const size_t marks = (bytes.size() - unmarked.size()) / kUtf8Mark.size();
      bytes = unmarked;
      corpus.warnings.push_back(
          cat(path, ": ", marks, " UTF-8 byte-order mark", marks == 1 ? "" : "s",
              " at the start of a line inside the file (files joined with cat?); dropped"));
    }

    CorpusFile f;
    f.path = path;
    f.compression = file.compression;
    f.bytes = bytes.size();
    f.jsonl =
        o.format == CorpusFormat::kJsonl || (o.format == CorpusFormat::kAuto && named_jsonl(path));
    const Utf8Check utf8 = check_utf8(bytes);
    f.invalid_utf8 = utf8.invalid;
    f.first_invalid = utf8.ok() ? 0 : utf8.first_invalid;
    CHAINLM_CHECK(utf8.ok() || o.invalid_utf8 != InvalidUtf8Policy::kError,
                  invalid_utf8_found(path, bytes, utf8), "; refused by --invalid-utf8 error");

    if (f.jsonl)
      read_jsonl(o, bytes, f, on_document);
    else
      read_text(o, bytes, f, on_document);
    if (!utf8.ok())
      corpus.warnings.push_back(
          invalid_utf8_warning(f, bytes, o.invalid_utf8, o.for_sentencepiece_training));
    // Old Mac text ends its lines in CR alone: read as one line, and so one document, which
    // "holds a single document" did not explain.
    if (!f.jsonl && bytes.find('\n') == std::string_view::npos &&
        bytes.find('\r') != std::string_view::npos)
      corpus.warnings.push_back(
          cat(path,
              ": its lines end in CR alone (old Mac text), and lines end "
              "at LF: it was read as one line; convert it first, e.g. tr '\\r' '\\n' < ",
              path, " > converted.txt"));
    corpus.files.push_back(std::move(f));
  }
  return corpus;
}

Corpus read_corpus(const CorpusOptions& o) {
  std::vector<std::string> documents;
  Corpus corpus = stream_corpus(o, [&](std::string&& d) { documents.push_back(std::move(d)); });
  corpus.documents = std::move(documents);
  return corpus;
}

}  // namespace chainlm
