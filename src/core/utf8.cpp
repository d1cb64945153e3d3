#include "core/utf8.h"

namespace chainlm {

Utf8Sequence utf8_sequence_at(std::string_view bytes, size_t i) {
  const auto b = [&](size_t k) { return static_cast<unsigned char>(bytes[k]); };
  const unsigned char c = b(i);
  if (c < 0x80) return {1, true};
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;  // overlong
    if (c == 0xED) hi = 0x9F;  // surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;  // overlong
    if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
  } else {
    return {1, false};  // continuation byte, C0/C1 (overlong) or F5..FF
  }
  for (size_t k = 1; k < len; ++k) {
    if (i + k >= bytes.size()) return {k, false};
    const unsigned char next = b(i + k);
    const bool fits = k == 1 ? next >= lo && next <= hi : (next & 0xC0) == 0x80;
    if (!fits) return {k, false};
  }
  return {len, true};
}

}  // namespace chainlm
