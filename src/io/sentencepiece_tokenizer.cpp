// SentencePiece models: loading, encoding and decoding (training: sentencepiece_trainer.cpp).
#include <sentencepiece_processor.h>

#include <vector>

#include "core/error.h"
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
    CHAINLM_CHECK(
        status.ok(), path, ": not a SentencePiece model (", status.ToString(),
        "). Accepted tokenizers: \"byte\", a SentencePiece .model file, a llama2.c tokenizer.bin, "
        "a Hugging Face tokenizer.json, a chainlm GGUF model, or a data/checkpoint/Hugging Face "
        "directory holding tokenizer.model, tokenizer.json or chainlm_tokenizer.json");
    CHAINLM_CHECK(sp_.GetPieceSize() > 0, path, ": SentencePiece model has no pieces");
    // The unknown token's text is the model's own (trainer_spec.unk_surface, " ⁇ " by default;
    // llama2.c's tok512.model spells it " \342\201\207 ", which Decode writes as it is).
    if (sp_.unk_id() >= 0 && sp_.unk_id() < sp_.GetPieceSize()) {
      const auto decoded = sp_.Decode(std::vector<int>{sp_.unk_id()}, &unk_surface_);
      if (!decoded.ok()) unk_surface_ = " \xE2\x81\x87 ";
    }
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
    if (sp_.IsUnknown(id)) return unk_surface_;  // what Decode writes for it
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
  std::string unk_surface_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece_tokenizer(const std::string& path) {
  return std::make_unique<SentencePieceTokenizer>(path, read_file(path));
}

std::unique_ptr<Tokenizer> sentencepiece_tokenizer_from_bytes(const std::string& model_bytes,
                                                              const std::string& where) {
  return std::make_unique<SentencePieceTokenizer>(where, model_bytes);
}

SentencePieceVocab sentencepiece_vocab(const std::string& model_bytes, const std::string& where) {
  sentencepiece::SentencePieceProcessor sp;
  sentencepiece::util::Status status;
  try {
    status = sp.LoadFromSerializedProto(model_bytes);
  } catch (const std::exception& e) {
    status = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, e.what());
  }
  CHAINLM_CHECK(status.ok(), where, ": not a SentencePiece model (", status.ToString(), ")");
  SentencePieceVocab v;
  const int n = sp.GetPieceSize();
  for (int id = 0; id < n; ++id) {
    v.pieces.push_back(sp.IdToPiece(id));
    v.scores.push_back(sp.GetScore(id));
    // llama.cpp's token types (llama_token_type): the processor does not expose
    // USER_DEFINED, which chainlm's and LLaMA's tokenizers do not have.
    v.types.push_back(sp.IsUnknown(id) ? 2 : sp.IsControl(id) ? 3 : sp.IsUnused(id) ? 5 : sp.IsByte(id) ? 6 : 1);
  }
  v.unk_id = sp.unk_id();
  v.bos_id = sp.bos_id();
  v.eos_id = sp.eos_id();
  // The normalizer spec is not exposed either: a model with the dummy prefix turns "a" into
  // "▁a", whose first piece starts with "▁" (or is its first byte when "▁" is no piece).
  std::vector<std::string> pieces;
  CHAINLM_CHECK(sp.Encode("a", &pieces).ok() && !pieces.empty(), where, ": SentencePiece cannot encode \"a\"");
  v.add_dummy_prefix = pieces[0].rfind(kSpaceMarker, 0) == 0 || pieces[0] == "<0xE2>";
  return v;
}

}  // namespace chainlm
