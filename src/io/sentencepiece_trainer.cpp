// Training SentencePiece models (`chainlm tokenizer train`), with SentencePiece's errors turned
// into messages that name chainlm's options rather than the trainer's flags and source lines.
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/corpus_reader.h"
#include "io/tokenizer.h"

namespace chainlm {
namespace {

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n\v\f") == std::string_view::npos;
}

// Feeds the trainer the non-blank lines of the documents, one sentence at a time, without
// copying the corpus (an iterator rather than the trainer's `input` flag, which reads files).
// The longest sentence SentencePiece's trainer takes (max_sentence_length, in bytes). Longer
// lines (one-paragraph JSONL records, text without newlines) are cut into pieces this long or
// shorter, at the last space before the limit or else between characters: the trainer
// silently skipped them, and a corpus of only such lines failed with "!sentences_.empty()".
constexpr size_t kMaxSentenceBytes = 65536;
// SentencePiece's BPE trainer keeps a word's character positions in 16 bits: a word (a run
// without spaces) of ~32k characters crashed it, one of 64k aborted it. Runs longer than this
// end the sentence before them, or are cut between characters when a sentence starts with one
// (a base64 blob or minified JSON in a corpus: its pieces are learned all the same).
constexpr size_t kMaxWordBytes = 8192;

class DocumentLineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit DocumentLineIterator(const std::vector<std::string>& documents) : docs_(documents) {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    while (rest_.empty() && doc_ < docs_.size()) {
      const std::string& doc = docs_[doc_];
      if (pos_ > doc.size()) {
        ++doc_;
        pos_ = 0;
        continue;
      }
      size_t nl = doc.find('\n', pos_);
      if (nl == std::string::npos) nl = doc.size();
      std::string_view line(doc.data() + pos_, nl - pos_);
      pos_ = nl + 1;
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!is_blank(line)) rest_ = line;
    }
    if (rest_.empty()) {
      done_ = true;
      return;
    }
    size_t cut = rest_.size();
    if (cut > kMaxSentenceBytes) {
      cut = rest_.rfind(' ', kMaxSentenceBytes - 1);
      if (cut == std::string_view::npos || cut == 0) {  // no space: between two characters
        cut = kMaxSentenceBytes;
        while (cut > 0 && (static_cast<unsigned char>(rest_[cut]) & 0xC0) == 0x80) --cut;
      }
    }
    for (size_t i = 0, run_start = 0; i < cut; ++i) {
      if (rest_[i] == ' ') {
        run_start = i + 1;
      } else if (i - run_start >= kMaxWordBytes) {
        cut = run_start;
        if (cut == 0) {
          cut = kMaxWordBytes;
          while (cut > 0 && (static_cast<unsigned char>(rest_[cut]) & 0xC0) == 0x80) --cut;
        }
        break;
      }
    }
    line_.assign(rest_.substr(0, cut));
    rest_.remove_prefix(cut);
    if (is_blank(line_)) Next();  // a piece of spaces alone, between two cuts
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& docs_;
  size_t doc_ = 0, pos_ = 0;
  std::string_view rest_;  // what is left of the current line
  std::string line_;
  bool done_ = false;
};

// "Internal: ./src/trainer_interface.cc(660) [(a) == (b)] Vocabulary size too high ..." ->
// "Vocabulary size too high ...": the status code, source line and failed condition mean
// nothing to a user.
std::string trainer_reason(const std::string& status) {
  const size_t cc = status.find(".cc(");
  if (cc == std::string::npos) return status;
  size_t end = status.find(") ", cc);
  if (end == std::string::npos) return status;
  end += 2;
  std::string condition;
  if (end < status.size() && status[end] == '[') {
    const size_t close = status.find("] ", end);
    if (close == std::string::npos) return status;
    condition = status.substr(end + 1, close - end - 1);
    end = close + 2;
  }
  const std::string message = end < status.size() ? status.substr(end) : "";
  // Some checks carry no message: then the failed condition is all there is to say.
  return message.empty() ? "its check " + condition + " failed" : message;
}

// The two errors users meet: a vocabulary the corpus cannot fill, and one too small for the
// corpus's characters. Both are answered with chainlm's options.
std::string training_error(const std::string& status, const std::string& corpus,
                           const SentencePieceTrainOptions& o) {
  const std::string reason = trainer_reason(status);
  long limit = 0, asked = 0, needed = 0;
  const size_t high = reason.find("Please set it to a value <= ");
  if (high != std::string::npos &&
      std::sscanf(reason.c_str() + high, "Please set it to a value <= %ld", &limit) == 1) {
    return "tokenizer train: --vocab-size " + std::to_string(o.vocab_size) +
           " is more pieces than the corpus can fill (at most " + std::to_string(limit) +
           " here); lower --vocab-size, or train on more text";
  }
  const size_t small = reason.find("smaller than required_chars. ");
  if (small != std::string::npos &&
      std::sscanf(reason.c_str() + small, "smaller than required_chars. %ld vs %ld", &asked,
                  &needed) == 2) {
    char coverage[32];
    std::snprintf(coverage, sizeof(coverage), "%g", o.character_coverage);
    std::string message = "tokenizer train: --vocab-size " + std::to_string(o.vocab_size) +
                          " cannot hold the " + std::to_string(needed) +
                          " pieces the corpus needs at "
                          "--character-coverage " +
                          coverage +
                          " (a piece per character it covers, plus 259 byte and control "
                          "pieces); raise --vocab-size to at least " +
                          std::to_string(needed);
    if (o.character_coverage > 0.98)
      message +=
          ", or lower --character-coverage (down to 0.98) so rarer characters are spelled "
          "in bytes";
    return message;
  }
  return "tokenizer train: SentencePiece training on " + corpus + " failed: " + reason;
}

// The trained model without the thread count it was trained with: SentencePiece records
// num_threads (TrainerSpec field 16, inside ModelProto field 2), so the same corpus and seed gave
// a file differing in that byte by the machine's cores, and the tokenizer checks, a CRC-32 of
// the file, refused data prepared with the other as "made with another tokenizer". The pieces
// do not depend on it. The libsentencepiece-dev headers leave out the proto classes, so the two
// fields are walked in protobuf's wire format (varint tags; wire types 0, 1, 2 and 5).
std::string without_thread_count(const std::string& model) {
  auto varint = [](const std::string& b, size_t& at) {
    uint64_t v = 0;
    for (int shift = 0; at < b.size() && shift < 64; shift += 7) {
      const uint8_t byte = (uint8_t)b[at++];
      v |= (uint64_t)(byte & 0x7f) << shift;
      if (!(byte & 0x80)) return v;
    }
    fail("SentencePiece's trained model is not a protobuf message (a bug)");
  };
  auto put_varint = [](std::string& out, uint64_t v) {
    for (; v >= 0x80; v >>= 7) out += (char)(uint8_t)(v | 0x80);
    out += (char)(uint8_t)v;
  };
  // The end of the field whose tag ends at `at`.
  auto skip = [&](const std::string& b, size_t at, uint64_t tag) {
    switch (tag & 7) {
      case 0:
        varint(b, at);
        return at;
      case 1:
        return at + 8;
      case 2: {
        const uint64_t n = varint(b, at);
        return at + n;
      }
      case 5:
        return at + 4;
      default:
        fail("SentencePiece's trained model has a protobuf wire type ", tag & 7, " (a bug)");
    }
  };
  std::string out;
  for (size_t at = 0; at < model.size();) {
    const size_t start = at;
    const uint64_t tag = varint(model, at);
    const size_t end = skip(model, at, tag);
    CHAINLM_CHECK(end <= model.size(), "SentencePiece's trained model is cut short (a bug)");
    if (tag != ((2u << 3) | 2)) {  // not the TrainerSpec: as it is
      out.append(model, start, end - start);
      at = end;
      continue;
    }
    size_t inner = at;
    const uint64_t length = varint(model, inner);
    std::string spec;
    for (size_t f = inner; f < inner + length;) {
      const size_t field_start = f;
      const uint64_t field_tag = varint(model, f);
      const size_t field_end = skip(model, f, field_tag);
      if (field_tag != ((16u << 3) | 0)) spec.append(model, field_start, field_end - field_start);
      f = field_end;
    }
    put_varint(out, tag);
    put_varint(out, spec.size());
    out += spec;
    at = end;
  }
  return out;
}

}  // namespace

std::string train_sentencepiece_model(const std::vector<std::string>& documents,
                                      const std::string& corpus_name,
                                      const SentencePieceTrainOptions& o) {
  const bool has_text = std::any_of(documents.begin(), documents.end(),
                                    [](const std::string& d) { return !is_blank(d); });
  CHAINLM_CHECK(has_text, "tokenizer corpus ", corpus_name, " is empty (no non-blank lines)");
  CHAINLM_CHECK(o.vocab_size > 259 && o.vocab_size <= (1 << 24), "tokenizer vocab size ",
                o.vocab_size, " is out of range: byte fallback needs more than 259 pieces");
  // SentencePiece's BPE trainer accepts 0.98..1 (lower is meant for its unigram models).
  CHAINLM_CHECK(o.character_coverage >= 0.98 && o.character_coverage <= 1.0,
                "--character-coverage ", o.character_coverage, " must be between 0.98 and 1");

  // The LLaMA conventions: BPE with byte fallback so no text is ever <unk>, identity
  // normalization and kept whitespace so decode(encode(text)) == text, digits split.
  char coverage[32];
  std::snprintf(coverage, sizeof(coverage), "%.17g", o.character_coverage);
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(o.vocab_size)},
      {"byte_fallback", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"character_coverage", coverage},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      // Sentences up to 64 KiB (SentencePiece's default of 4,192 bytes would drop long
      // paragraphs, common in JSONL corpora); DocumentLineIterator cuts longer lines to fit.
      {"max_sentence_length", std::to_string(kMaxSentenceBytes)},
      // SentencePiece refuses more than 128 (its own check's words reached the user).
      {"num_threads", std::to_string(std::clamp(num_threads(), 1, 128))},
      {"minloglevel", o.verbose ? "0" : "2"},  // 2 = errors only; they also come back as status
  };
  // The sentence sampler draws from SentencePiece's global generator; seeding it makes the
  // model a function of (corpus, options).
  unsigned int folded_seed = static_cast<unsigned int>(o.seed ^ (o.seed >> 32));
  if (folded_seed == ~0u) folded_seed = 0x9E3779B9u;  // ~0u means "seed from random_device"
  sentencepiece::SetRandomGeneratorSeed(folded_seed);
  DocumentLineIterator lines(documents);
  std::string model_bytes;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model_bytes);
  if (!status.ok()) fail(training_error(status.ToString(), corpus_name, o));
  return without_thread_count(model_bytes);
}

void train_sentencepiece(const std::string& corpus_path, int vocab_size,
                         const std::string& out_model_path, uint64_t seed, bool verbose) {
  CorpusOptions corpus;
  corpus.inputs = {corpus_path};
  corpus.format = CorpusFormat::kText;
  corpus.split = DocumentSplit::kLines;
  SentencePieceTrainOptions o;
  o.vocab_size = vocab_size;
  o.seed = seed;
  o.verbose = verbose;
  write_file_atomic(out_model_path,
                    train_sentencepiece_model(read_corpus(corpus).documents, corpus_path, o));
}

}  // namespace chainlm
