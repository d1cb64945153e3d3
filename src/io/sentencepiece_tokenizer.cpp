// SentencePiece models: loading, encoding/decoding, and training.
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <unordered_map>

#include "core/error.h"
#include "core/threads.h"
#include "io/atomic_file.h"
#include "io/tokenizer.h"

namespace chainlm {
namespace {

const std::string kSpaceMarker = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

class SentencePieceTokenizer final : public Tokenizer {
 public:
  SentencePieceTokenizer(const std::string& path, const std::string& bytes) : path_(path) {
    // A corrupt model can also make SentencePiece throw (its trie builder, darts-clone, throws
    // on a piece starting with NUL) instead of returning a status: both are "not a model".
    sentencepiece::util::Status status;
    try {
      status = sp_.LoadFromSerializedProto(bytes);
    } catch (const std::exception& e) {
      status = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, e.what());
    }
    CHAINLM_CHECK(status.ok(), path, ": not a SentencePiece model (", status.ToString(),
                  "). Accepted tokenizers: \"byte\", a SentencePiece .model file, or a data/"
                  "checkpoint directory holding tokenizer.model or tokenizer.json");
    CHAINLM_CHECK(sp_.GetPieceSize() > 0, path, ": SentencePiece model has no pieces");
  }

  std::vector<int> encode(const std::string& text) const override {
    std::vector<int> ids;
    auto status = sp_.Encode(text, &ids);
    CHAINLM_CHECK(status.ok(), path_, ": SentencePiece encode failed: ", status.ToString());
    return ids;
  }

  std::string decode(const std::vector<int>& ids) const override {
    for (int id : ids) check_id(id);
    std::string text;
    auto status = sp_.Decode(ids, &text);
    CHAINLM_CHECK(status.ok(), path_, ": SentencePiece decode failed: ", status.ToString());
    return text;
  }

  std::string decode_token(int prev_id, int id) const override {
    check_id(id);
    if (sp_.IsControl(id)) return "";
    if (sp_.IsUnknown(id)) return " \xE2\x81\x87 ";  // " ⁇ ", what SentencePiece's Decode shows
    const std::string& piece = sp_.IdToPiece(id);
    if (sp_.IsByte(id)) {  // "<0xAB>"
      return std::string(1, static_cast<char>(std::stoi(piece.substr(3, 2), nullptr, 16)));
    }
    std::string text;
    for (size_t i = 0; i < piece.size();) {
      if (piece.compare(i, kSpaceMarker.size(), kSpaceMarker) == 0) {
        text += ' ';
        i += kSpaceMarker.size();
      } else {
        text += piece[i++];
      }
    }
    // The dummy prefix SentencePiece adds at the start of the text is not part of it.
    if (prev_id == bos_id() && !text.empty() && text[0] == ' ') text.erase(0, 1);
    return text;
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }
  int bos_id() const override { return sp_.bos_id(); }
  int eos_id() const override { return sp_.eos_id(); }
  std::string kind() const override { return "sentencepiece"; }

 private:
  void check_id(int id) const {
    CHAINLM_CHECK(id >= 0 && id < sp_.GetPieceSize(), path_, ": token id ", id,
                  " is outside the vocabulary (0..", sp_.GetPieceSize() - 1, ")");
  }

  std::string path_;
  sentencepiece::SentencePieceProcessor sp_;
};

bool is_blank(const std::string& line) {
  for (char c : line)
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  return true;
}

// Feeds the corpus to the trainer one non-blank line at a time. Using an iterator rather than
// the trainer's `input` flag keeps paths with commas working (`input` is a comma list).
class LineIterator final : public sentencepiece::SentenceIterator {
 public:
  explicit LineIterator(const std::string& path) : in_(path, std::ios::binary) { Next(); }
  bool done() const override { return done_; }
  void Next() override {
    while (std::getline(in_, line_)) {
      if (!line_.empty() && line_.back() == '\r') line_.pop_back();
      if (!is_blank(line_)) return;
    }
    done_ = true;
  }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path, read_file(path));
}

void train_sentencepiece(const std::string& corpus_path, int vocab_size,
                         const std::string& out_model_path, uint64_t seed, bool verbose) {
  {
    std::ifstream in(corpus_path, std::ios::binary);
    CHAINLM_CHECK(in.good() && !std::filesystem::is_directory(corpus_path),
                  "cannot read tokenizer corpus ", corpus_path);
    std::string line;
    bool has_text = false;
    while (!has_text && std::getline(in, line)) has_text = !is_blank(line);
    CHAINLM_CHECK(has_text, "tokenizer corpus ", corpus_path, " is empty (no non-blank lines)");
  }
  // 256 byte pieces + unk/bos/eos are always in the vocabulary with byte_fallback.
  CHAINLM_CHECK(vocab_size > 259 && vocab_size <= (1 << 24), "tokenizer vocab size ", vocab_size,
                " is out of range: byte fallback needs more than 259 pieces");

  // The LLaMA conventions: BPE with byte fallback so no text is ever <unk>, identity
  // normalization and kept whitespace so decode(encode(text)) == text, digits split.
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      {"character_coverage", "0.9995"},
      {"split_digits", "true"},
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"allow_whitespace_only_pieces", "true"},
      {"input_sentence_size", "2000000"},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(std::max(1, num_threads()))},
      {"minloglevel", verbose ? "0" : "2"},  // 2 = errors only; they also come back as status
  };
  // The sentence sampler draws from SentencePiece's global generator; seeding it makes the
  // model a function of (corpus, vocab_size, seed).
  unsigned int folded_seed = static_cast<unsigned int>(seed ^ (seed >> 32));
  if (folded_seed == ~0u) folded_seed = 0x9E3779B9u;  // ~0u means "seed from random_device"
  sentencepiece::SetRandomGeneratorSeed(folded_seed);
  LineIterator lines(corpus_path);
  std::string model_bytes;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &lines, &model_bytes);
  CHAINLM_CHECK(status.ok(), "SentencePiece training on ", corpus_path,
                " failed: ", status.ToString());
  // Trained into memory, so only the .model is written (no .vocab beside it), atomically.
  write_file_atomic(out_model_path, model_bytes);
}

}  // namespace chainlm
