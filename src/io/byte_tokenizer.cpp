#include "core/error.h"
#include "io/tokenizer.h"

namespace chainlm {

std::vector<int> ByteTokenizer::encode(const std::string& text) const {
  std::vector<int> ids(text.size());
  for (size_t i = 0; i < text.size(); ++i) ids[i] = static_cast<unsigned char>(text[i]);
  return ids;
}

std::string ByteTokenizer::decode(const std::vector<int>& ids) const {
  std::string text;
  text.reserve(ids.size());
  for (int id : ids) text += decode_token(-1, id);
  return text;
}

std::string ByteTokenizer::decode_token(int /*prev_id*/, int id) const {
  CHAINLM_CHECK(id >= 0 && id < kVocabSize, "byte tokenizer: token id ", id,
                " is outside the vocabulary (0..", kVocabSize - 1, ")");
  if (id >= 256) return "";  // BOS / EOS carry no text
  return std::string(1, static_cast<char>(id));
}

}  // namespace chainlm
