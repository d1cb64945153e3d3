#pragma once
// One UTF-8 decoding step, shared by the text checks (io/text_encoding) and by printable(), which
// escapes the bytes of invalid sequences so that log lines stay UTF-8.
#include <cstddef>
#include <string_view>

namespace chainlm {

struct Utf8Sequence {
  size_t length;
  bool valid;
};

// The sequence at bytes[i]: its length when it is a valid character, or else the length of its
// "maximal subpart" (a valid lead byte and the continuation bytes that fit it before the
// failure, or one byte), which counts as one invalid sequence. This is Unicode's recommended
// practice (chapter 3, "U+FFFD substitution of maximal subparts"), as Python and browsers decode.
Utf8Sequence utf8_sequence_at(std::string_view bytes, size_t i);

}  // namespace chainlm
