#include "core/printable.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/utf8.h"

namespace chainlm {

std::string printable(std::string_view text, std::string_view also) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  auto escape = [&](unsigned char byte) {
    out += "\\x";
    out += kHex[byte >> 4];
    out += kHex[byte & 15];
  };
  for (size_t i = 0; i < text.size();) {
    const auto byte = static_cast<unsigned char>(text[i]);
    if (byte >= 0x80) {  // a character, or bytes that are none (each escaped)
      const Utf8Sequence seq = utf8_sequence_at(text, i);
      for (size_t k = 0; k < seq.length; ++k)
        if (seq.valid)
          out += text[i + k];
        else
          escape(static_cast<unsigned char>(text[i + k]));
      i += seq.length;
      continue;
    }
    if (byte < 0x20 || byte == 0x7f || also.find(text[i]) != std::string_view::npos)
      escape(byte);
    else
      out += text[i];
    ++i;
  }
  return out;
}

std::string shell_word(std::string_view text) {
  const bool plain = !text.empty() && std::all_of(text.begin(), text.end(), [](char ch) {
    return std::isalnum((unsigned char)ch) || std::strchr("_./:=@%+,-", ch) != nullptr;
  });
  if (plain) return std::string(text);
  std::string out = "'";
  for (char ch : text) out += ch == '\'' ? std::string("'\\''") : std::string(1, ch);
  return out + "'";
}

}  // namespace chainlm
