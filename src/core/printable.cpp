#include "core/printable.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace chainlm {

std::string printable(std::string_view text, std::string_view also) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(text.size());
  for (const char ch : text) {
    const auto byte = static_cast<unsigned char>(ch);
    if (byte < 0x20 || byte == 0x7f || also.find(ch) != std::string_view::npos) {
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 15];
    } else {
      out += ch;
    }
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
