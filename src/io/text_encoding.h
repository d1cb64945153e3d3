#pragma once
// What kind of bytes a corpus file holds, before anything is tokenized: UTF-8 text (with a count
// of invalid sequences, so bad bytes are reported rather than silently becoming U+FFFD), UTF-16 or
// UTF-32 (refused with a conversion hint), or binary data (refused).
#include <cstddef>
#include <string>
#include <string_view>

namespace chainlm {

struct Utf8Check {
  size_t invalid = 0;  // invalid sequences: maximal subparts, as a U+FFFD-replacing decoder counts
  size_t first_invalid = std::string::npos;  // byte offset of the first one
  bool ok() const { return invalid == 0; }
};

// Validates UTF-8 strictly: overlong forms, surrogates (U+D800..DFFF) and code points above
// U+10FFFF are invalid. Each maximal subpart of an ill-formed sequence counts once (Unicode's
// recommended practice, which Python's errors="replace" and browsers follow).
Utf8Check check_utf8(std::string_view bytes);

// bytes with every invalid sequence replaced by U+FFFD (what a lenient decoder would do).
std::string replace_invalid_utf8(std::string_view bytes);

// The characters replace_invalid_utf8 makes of bytes given piece by piece (a completion's tokens):
// those that start in the pieces given so far, a character a piece ends inside counted with that
// piece and not again with the piece that finishes it. After each piece, count() is where the
// next piece's text starts in the decoded text, in code points. A stray continuation byte is a
// character (its U+FFFD) wherever it stands.
class Utf8CharCount {
 public:
  void add(std::string_view piece);
  std::size_t count() const { return count_; }

 private:
  std::string open_;  // the start of a character the last piece ended inside (counted)
  std::size_t count_ = 0;
};

enum class TextEncoding { kUtf8, kUtf8Bom, kUtf16Le, kUtf16Be, kUtf32Le, kUtf32Be, kBinary };

// Classifies a file's (decompressed) bytes from byte-order marks and the pattern of NUL bytes in
// its first 64 KiB: UTF-16 text has a NUL in every other byte, binary data has NULs anywhere or
// mostly invalid UTF-8. Text without a BOM and without NULs is UTF-8 (possibly with errors).
TextEncoding detect_text_encoding(std::string_view bytes);

// "UTF-16 (little-endian)", "binary data", ... for messages.
// The encoding's name for iconv -f, byte order included (a file without a byte-order mark
// converted as plain "UTF-16" is read in the wrong order).
const char* iconv_encoding_name(TextEncoding encoding);
const char* text_encoding_name(TextEncoding encoding);

}  // namespace chainlm
