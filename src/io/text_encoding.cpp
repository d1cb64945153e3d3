#include "io/text_encoding.h"

#include <algorithm>
#include <cstdint>

#include "core/utf8.h"

namespace chainlm {
namespace {

bool starts_with(std::string_view bytes, std::string_view prefix) {
  return bytes.substr(0, prefix.size()) == prefix;
}

// The whitespace code units (space, newline, tab, no-break and ideographic space) of bytes read
// as UTF-16 (unit 2) or UTF-32 (unit 4) in the given order, or -1 when they do not read as text:
// code points valid (UTF-16's surrogates in pairs, none in UTF-32, nothing past U+10FFFF), no
// noncharacters U+FFFE/U+FFFF, no C0 or C1 controls but tab, newline, carriage return and form
// feed, and, from 8 characters on, some whitespace. Files of 16- or 32-bit numbers (token ids
// from a shard without its header, samples) have NULs in the same places as such text: their
// small values are control codes, and they hold no spaces or newlines (a user trial had a
// uint16 token-id file read as UTF-16 and converted into Latin Extended garbage). Where both
// orders read as text, the right one has more whitespace (its newlines are U+000A, the other
// order's U+0A00).
long text_whitespace(std::string_view bytes, int unit, bool little_endian) {
  const size_t units = bytes.size() / unit;
  bool expect_low = false;
  long whitespace = 0;
  for (size_t i = 0; i < units; ++i) {
    uint32_t u = 0;
    for (int b = 0; b < unit; ++b) {
      const auto byte =
          static_cast<unsigned char>(bytes[i * unit + (little_endian ? unit - 1 - b : b)]);
      u = u << 8 | byte;
    }
    const bool high_surrogate = u >= 0xD800 && u <= 0xDBFF,
               low_surrogate = u >= 0xDC00 && u <= 0xDFFF;
    if (unit == 4 && (high_surrogate || low_surrogate || u > 0x10FFFF)) return -1;
    if (unit == 2) {
      if (expect_low != low_surrogate) return -1;
      expect_low = high_surrogate;
    }
    if (u == 0xFFFE || u == 0xFFFF) return -1;
    const bool control = u < 0x20 || (u >= 0x7F && u <= 0x9F);
    if (control && u != '\t' && u != '\n' && u != '\r' && u != '\f') return -1;
    whitespace += u == ' ' || u == '\n' || u == '\t' || u == 0x3000 || u == 0xA0;
  }
  // (A high surrogate last may be the head's cut through a pair.)
  return whitespace > 0 || units < 8 ? whitespace : -1;
}

bool reads_as_text(std::string_view bytes, int unit, bool little_endian) {
  return text_whitespace(bytes, unit, little_endian) >= 0;
}

// The share of bytes that are printable ASCII or whitespace: ~95% in ASCII or Latin-1 text
// (with stray NULs it is binary data, not UTF-16), under half in UTF-16 of another script.
bool mostly_ascii(std::string_view bytes) {
  size_t n = 0;
  for (char c : bytes) n += (c >= 0x20 && c < 0x7F) || c == '\n' || c == '\t' || c == '\r';
  return n * 10 >= bytes.size() * 8;
}

}  // namespace

Utf8Check check_utf8(std::string_view bytes) {
  Utf8Check check;
  size_t i = 0;
  while (i < bytes.size()) {
    // ASCII runs are most of any corpus: skip them without the general decoder.
    if (static_cast<unsigned char>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const Utf8Sequence s = utf8_sequence_at(bytes, i);
    if (!s.valid && check.invalid++ == 0) check.first_invalid = i;
    i += s.length;
  }
  return check;
}

std::string replace_invalid_utf8(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    const Utf8Sequence s = utf8_sequence_at(bytes, i);
    if (s.valid)
      out.append(bytes.substr(i, s.length));
    else
      out += "\xEF\xBF\xBD";
    i += s.length;
  }
  return out;
}

void Utf8CharCount::add(std::string_view piece) {
  const std::string bytes = open_ + std::string(piece);
  const size_t counted = open_.size();  // the open character's bytes: counted already
  open_.clear();
  size_t i = 0;
  while (i < bytes.size()) {
    const Utf8Sequence s = utf8_sequence_at(bytes, i);
    if (i >= counted) ++count_;
    const auto lead = static_cast<unsigned char>(bytes[i]);
    if (!s.valid && i + s.length == bytes.size() && lead >= 0xC2 && lead <= 0xF4) {
      open_ = bytes.substr(i);  // cut short by the piece's end: the next piece may finish it
      return;
    }
    i += s.length;
  }
}

TextEncoding detect_text_encoding(std::string_view bytes) {
  // UTF-32 LE's mark starts with UTF-16 LE's: test it first.
  if (starts_with(bytes, std::string_view("\xFF\xFE\x00\x00", 4))) return TextEncoding::kUtf32Le;
  if (starts_with(bytes, std::string_view("\x00\x00\xFE\xFF", 4))) return TextEncoding::kUtf32Be;
  if (starts_with(bytes, "\xFF\xFE")) return TextEncoding::kUtf16Le;
  if (starts_with(bytes, "\xFE\xFF")) return TextEncoding::kUtf16Be;

  const std::string_view head = bytes.substr(0, size_t{1} << 16);
  size_t nul_even = 0, nul_odd = 0;
  for (size_t i = 0; i < head.size(); ++i)
    if (head[i] == '\0') ++(i % 2 ? nul_odd : nul_even);
  if (nul_even + nul_odd > 0) {
    // UTF-32 without a mark: the top byte of every code unit is NUL (code points end at
    // U+10FFFF), the lowest nearly never; the next one is NUL in the BMP but not for emoji,
    // so it is not required (reads_as_text checks every code point).
    size_t nul4[4] = {0, 0, 0, 0};
    for (size_t i = 0; i < head.size(); ++i)
      if (head[i] == '\0') ++nul4[i % 4];
    // A pattern takes two code units at least: one NUL in "abc\0def" is binary data, not a
    // code unit of UTF-16 (whose iconv would have made garbage of it; a docs trial).
    const size_t quads = head.size() / 4;
    if (quads >= 2 && nul4[3] >= quads && nul4[0] <= quads / 4 && reads_as_text(head, 4, true))
      return TextEncoding::kUtf32Le;
    if (quads >= 2 && nul4[0] >= quads && nul4[3] <= quads / 4 && reads_as_text(head, 4, false))
      return TextEncoding::kUtf32Be;
    // ASCII-range UTF-16 has a NUL in nearly every high byte and none in the low bytes.
    const size_t pairs = head.size() / 2;
    if (nul_odd >= 2 && nul_odd * 3 >= pairs && nul_even <= nul_odd / 50 &&
        reads_as_text(head, 2, true))
      return TextEncoding::kUtf16Le;
    if (nul_even >= 2 && nul_even * 3 >= pairs && nul_odd <= nul_even / 50 &&
        reads_as_text(head, 2, false))
      return TextEncoding::kUtf16Be;
    // Fewer NULs, in what reads as UTF-16 text but not as ASCII or Latin-1 text: another
    // script with ASCII newlines (Chinese, Japanese, Cyrillic: a user trial had them called
    // binary data), one NUL in a line of 16 characters or more. The order is the one that
    // reads as text, or of two, the one with more whitespace: NULs alone mislead (the low byte
    // of U+4E00 "一" is NUL, and so are bytes of emoji's surrogates). ASCII or Latin-1 text with
    // stray NULs, even with control codes (a log's colours), stays binary data.
    const size_t nuls = nul_odd + nul_even;
    if ((nuls >= 2 || pairs >= 16) && !mostly_ascii(head)) {
      const long le_ws = text_whitespace(head, 2, true), be_ws = text_whitespace(head, 2, false);
      if (le_ws >= 0 || be_ws >= 0) {
        const bool le = le_ws != be_ws ? le_ws > be_ws : nul_odd >= nul_even;
        return le ? TextEncoding::kUtf16Le : TextEncoding::kUtf16Be;
      }
    }
    return TextEncoding::kBinary;
  }
  // Without NULs, text in a legacy 8-bit encoding (Latin-1, ...) has a few invalid sequences
  // per hundred bytes; compressed or encrypted data has one every few bytes.
  const Utf8Check check = check_utf8(head);
  if (head.size() >= 64 && check.invalid * 8 > head.size()) return TextEncoding::kBinary;
  return starts_with(bytes, "\xEF\xBB\xBF") ? TextEncoding::kUtf8Bom : TextEncoding::kUtf8;
}

const char* iconv_encoding_name(TextEncoding encoding) {
  switch (encoding) {
    case TextEncoding::kUtf16Le:
      return "UTF-16LE";
    case TextEncoding::kUtf16Be:
      return "UTF-16BE";
    case TextEncoding::kUtf32Le:
      return "UTF-32LE";
    case TextEncoding::kUtf32Be:
      return "UTF-32BE";
    default:
      return "UTF-8";
  }
}

const char* text_encoding_name(TextEncoding encoding) {
  switch (encoding) {
    case TextEncoding::kUtf8:
      return "UTF-8";
    case TextEncoding::kUtf8Bom:
      return "UTF-8 (with a byte-order mark)";
    case TextEncoding::kUtf16Le:
      return "UTF-16 (little-endian)";
    case TextEncoding::kUtf16Be:
      return "UTF-16 (big-endian)";
    case TextEncoding::kUtf32Le:
      return "UTF-32 (little-endian)";
    case TextEncoding::kUtf32Be:
      return "UTF-32 (big-endian)";
    case TextEncoding::kBinary:
      return "binary data";
  }
  return "unknown";
}

}  // namespace chainlm
