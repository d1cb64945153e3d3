#pragma once
// The text stages of a Hugging Face tokenizer.json around its model: normalizers (text ->
// text), pre-tokenizers (text -> pieces the model encodes one by one) and decoders (tokens ->
// text), each parsed from its JSON object and applied as tokenizers applies it. Supported are
// the components LLaMA-family files use; anything else is refused by name at load time:
//   normalizers     Sequence, Prepend, Replace, Strip
//   pre-tokenizers  Sequence, ByteLevel, Split, Digits, Metaspace, Whitespace, WhitespaceSplit
//   decoders        Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace chainlm {

class HfRegex;

// A stretch of text on its way to the model. at_start: it begins at the start of the input
// (Metaspace's prepend_scheme "first" adds "▁" only there).
struct HfPiece {
  std::string text;
  bool at_start = false;
};

class HfNormalizer {
 public:
  // `j` is tokenizer.json's "normalizer" (null for none).
  HfNormalizer(const nlohmann::json& j, const std::string& where);
  ~HfNormalizer();
  // start_moved (when given) is set when a step deleted the text's first character: the
  // normalized text then no longer starts at the input's offset 0 (Metaspace's "first").
  std::string normalize(std::string text, bool* start_moved = nullptr) const;
  bool empty() const { return steps_.empty(); }

 struct Step;  // one component; public so the .cpp's components can derive from it

 private:
  std::vector<std::unique_ptr<Step>> steps_;
  std::string where_;
};

class HfPreTokenizer {
 public:
  HfPreTokenizer(const nlohmann::json& j, const std::string& where);
  ~HfPreTokenizer();
  // Splits (and maps, for ByteLevel) one normalized stretch into the model's pieces.
  std::vector<HfPiece> split(HfPiece piece) const;

 struct Step;  // one component; public so the .cpp's components can derive from it

 private:
  std::vector<std::unique_ptr<Step>> steps_;
};

class HfDecoder {
 public:
  HfDecoder(const nlohmann::json& j, const std::string& where);
  ~HfDecoder();
  // The text of the tokens. lossy: invalid UTF-8 from byte tokens becomes U+FFFD as
  // tokenizers' decode does; otherwise the raw bytes stay (for streaming, where a character
  // may be split over tokens). Without a decoder the tokens are joined with spaces, as there.
  std::string decode(std::vector<std::string> tokens, bool lossy) const;

 struct Step;  // one component; public so the .cpp's components can derive from it

 private:
  std::vector<std::unique_ptr<Step>> steps_;
  bool none_ = true;
};

// GPT-2's byte-to-character table (bytes_to_unicode): the byte-level alphabet's character for
// each byte, as UTF-8.
const std::string& byte_level_char(unsigned char byte);

}  // namespace chainlm
