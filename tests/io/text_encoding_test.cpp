// UTF-8 validation against glibc's iconv (an independent decoder), and the encoding detector on
// the shapes of files users pass by mistake.
#include "io/text_encoding.h"

#include <gtest/gtest.h>
#include <iconv.h>

#include <cstdint>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "core/rng.h"

namespace chainlm {
namespace {

// Offset of the first byte iconv refuses converting UTF-8 to UTF-32 (npos when it all converts):
// EILSEQ stops at an invalid sequence, EINVAL at one cut off by the end of the input.
size_t iconv_first_invalid(const std::string& bytes) {
  iconv_t cd = iconv_open("UTF-32LE", "UTF-8");
  EXPECT_NE(cd, reinterpret_cast<iconv_t>(-1));
  std::string in = bytes;
  std::string out(4 * bytes.size() + 16, '\0');
  char* inp = in.data();
  size_t inleft = in.size();
  char* outp = out.data();
  size_t outleft = out.size();
  const size_t r = iconv(cd, &inp, &inleft, &outp, &outleft);
  iconv_close(cd);
  return r == static_cast<size_t>(-1) ? static_cast<size_t>(inp - in.data()) : std::string::npos;
}

TEST(CheckUtf8, KnownSequences) {
  EXPECT_TRUE(check_utf8("").ok());
  EXPECT_TRUE(check_utf8("plain ASCII\n").ok());
  EXPECT_TRUE(check_utf8("caf\xC3\xA9 \xE6\xB0\xB4 \xF0\x9F\x90\xB8").ok());  // é 水 🐸
  EXPECT_TRUE(check_utf8("\xF4\x8F\xBF\xBF").ok());                           // U+10FFFF
  EXPECT_TRUE(check_utf8("\xED\x9F\xBF").ok());                               // U+D7FF

  const struct {
    const char* bytes;
    size_t invalid, first;
  } bad[] = {
      {"caf\xE9 ol\xE9", 2, 3},  // Latin-1 bytes
      // Counts are Python's (one U+FFFD per maximal subpart): an overlong or surrogate form is
      // invalid byte by byte, a valid lead cut short counts once with its continuations.
      {"\xC0\xAF", 2, 0},              // overlong '/'
      {"\xE0\x80\xAF", 3, 0},          // overlong, three bytes
      {"\xF0\x80\x80\xAF", 4, 0},      // overlong, four bytes
      {"ab\xED\xA0\x80", 3, 2},        // a UTF-16 surrogate
      {"\xF4\x90\x80\x80", 4, 0},      // above U+10FFFF
      {"\xF8\x88\x80\x80\x80", 5, 0},  // five-byte form
      {"x\xE6\xB0", 1, 1},             // cut off at the end
      {"x\xF0\x9F\x90!", 1, 1},        // cut off before '!'
      {"\x80\x80 z \xBF", 3, 0},       // stray continuation bytes
      {"\xFF\xFE", 2, 0},
  };
  for (const auto& c : bad) {
    const Utf8Check check = check_utf8(c.bytes);
    EXPECT_EQ(check.invalid, c.invalid) << testing::PrintToString(std::string(c.bytes));
    EXPECT_EQ(check.first_invalid, c.first) << testing::PrintToString(std::string(c.bytes));
  }
}

TEST(CheckUtf8, AgreesWithIconvOnRandomBytes) {
  // Mostly valid text with some damage, so both long valid runs and every kind of error occur.
  const std::string pieces[] = {
      "a",    " ",           "\xC3\xA9",     "\xE6\xB0\xB4", "\xF0\x9F\x90\xB8",
      "\xC3", "\x80",        "\xED\xA0\x80", "\xE0\x80\xAF", "\xF4\x90\x80\x80",
      "\xFF", "\xEF\xBB\xBF"};
  Rng rng(11);
  for (int trial = 0; trial < 3000; ++trial) {
    std::string s;
    const size_t n = rng.below(12);
    for (size_t i = 0; i < n; ++i) {
      if (rng.below(8) == 0)
        s += static_cast<char>(rng.below(256));
      else
        s += pieces[rng.below(rng.below(3) == 0 ? 12 : 5)];  // valid pieces are the first five
    }
    const Utf8Check check = check_utf8(s);
    const size_t reference = iconv_first_invalid(s);
    ASSERT_EQ(check.ok(), reference == std::string::npos) << testing::PrintToString(s);
    if (!check.ok()) {
      ASSERT_EQ(check.first_invalid, reference) << testing::PrintToString(s);
    }
  }
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out += static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16));
  return out;
}

// Vectors from Python's decoder (tests/io/data/make_utf8_vectors.py): the same count of invalid
// sequences and the same U+FFFD replacement, case by case.
TEST(ReplaceInvalidUtf8, MatchesPythonsReplaceDecoder) {
  std::ifstream in(std::string(CHAINLM_SOURCE_DIR) + "/tests/io/data/utf8_replace_vectors.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json vectors = nlohmann::json::parse(in);
  ASSERT_GE(vectors["cases"].size(), 100u);
  for (const auto& v : vectors["cases"]) {
    const std::string bytes = from_hex(v["bytes"].get<std::string>());
    const std::string replaced = from_hex(v["replaced"].get<std::string>());
    EXPECT_EQ(check_utf8(bytes).invalid, v["invalid"].get<size_t>()) << v["bytes"];
    EXPECT_EQ(replace_invalid_utf8(bytes), replaced) << v["bytes"];
    EXPECT_TRUE(check_utf8(replaced).ok());
  }
  EXPECT_EQ(replace_invalid_utf8("caf\xE9!"), "caf\xEF\xBF\xBD!");
  EXPECT_EQ(replace_invalid_utf8("ok \xF0\x9F\x90\xB8"), "ok \xF0\x9F\x90\xB8");
}

// Utf8CharCount, given bytes piece by piece (a completion's tokens): after each piece, the code
// points of the text a replacing decoder makes of every byte so far (an unfinished character one
// U+FFFD, as at the text's end), on Python's vectors given a byte at a time and in two pieces.
size_t code_points(const std::string& utf8) {
  size_t n = 0;
  for (unsigned char c : utf8) n += (c & 0xC0) != 0x80;
  return n;
}

TEST(Utf8CharCount, CountsTheCharactersOfTheReplacedTextPieceByPiece) {
  std::ifstream in(std::string(CHAINLM_SOURCE_DIR) + "/tests/io/data/utf8_replace_vectors.json");
  ASSERT_TRUE(in.good());
  const nlohmann::json vectors = nlohmann::json::parse(in);
  for (const auto& v : vectors["cases"]) {
    const std::string bytes = from_hex(v["bytes"].get<std::string>());
    const size_t whole = code_points(from_hex(v["replaced"].get<std::string>()));
    Utf8CharCount one_by_one;
    for (size_t i = 0; i < bytes.size(); ++i) {
      one_by_one.add(bytes.substr(i, 1));
      ASSERT_EQ(one_by_one.count(), code_points(replace_invalid_utf8(bytes.substr(0, i + 1))))
          << v["bytes"] << " after byte " << i;
    }
    EXPECT_EQ(one_by_one.count(), whole) << v["bytes"];
    for (size_t cut = 0; cut <= bytes.size(); ++cut) {
      Utf8CharCount two;
      two.add(bytes.substr(0, cut));
      two.add(bytes.substr(cut));
      ASSERT_EQ(two.count(), whole) << v["bytes"] << " cut at " << cut;
    }
  }
  // A stray continuation byte after a whole character is one (it was counted as none).
  Utf8CharCount c;
  for (const char* piece : {"h", "\x82", "t", "\xC3", "\xA9", "!"}) c.add(piece);
  EXPECT_EQ(c.count(), 5u);
}

std::string utf16le(const std::string& ascii) {
  std::string out;
  for (char c : ascii) out += std::string{c, '\0'};
  return out;
}

TEST(DetectTextEncoding, FilesUsersPass) {
  const std::string text = "The quick brown fox jumps over the lazy dog.\n";
  EXPECT_EQ(detect_text_encoding(text), TextEncoding::kUtf8);
  EXPECT_EQ(detect_text_encoding(""), TextEncoding::kUtf8);
  EXPECT_EQ(detect_text_encoding("\xEF\xBB\xBFhello"), TextEncoding::kUtf8Bom);
  // Latin-1 prose: a few invalid sequences, still text (reported later, not refused here).
  EXPECT_EQ(detect_text_encoding("Le caf\xE9 est tr\xE8s bon, et la cr\xE8me aussi. " + text),
            TextEncoding::kUtf8);

  EXPECT_EQ(detect_text_encoding("\xFF\xFE" + utf16le(text)), TextEncoding::kUtf16Le);
  EXPECT_EQ(detect_text_encoding(utf16le(text)), TextEncoding::kUtf16Le);  // no BOM
  std::string be = utf16le(text);
  be.insert(be.begin(), '\0');
  be.pop_back();
  EXPECT_EQ(detect_text_encoding(be), TextEncoding::kUtf16Be);
  EXPECT_EQ(detect_text_encoding("\xFE\xFF" + be), TextEncoding::kUtf16Be);
  EXPECT_EQ(detect_text_encoding(std::string("\xFF\xFE\0\0h\0\0\0", 8)), TextEncoding::kUtf32Le);
  EXPECT_EQ(detect_text_encoding(std::string("\0\0\xFE\xFF\0\0\0h", 8)), TextEncoding::kUtf32Be);
  // UTF-32 without a mark (iconv -t UTF-32LE / UTF-32BE): "binary data" before. ASCII, and text
  // whose code points fill the second byte (U+4E00..: "一二三").
  std::string le32, be32;
  for (char c : text) {
    le32 += std::string(1, c) + std::string(3, '\0');
    be32 += std::string(3, '\0') + std::string(1, c);
  }
  EXPECT_EQ(detect_text_encoding(le32), TextEncoding::kUtf32Le);
  EXPECT_EQ(detect_text_encoding(be32), TextEncoding::kUtf32Be);
  const std::string cjk_le = std::string("\x00\x4E\x00\x00\x8C\x4E\x00\x00\x09\x4E\x00\x00", 12);
  EXPECT_EQ(detect_text_encoding(cjk_le + le32), TextEncoding::kUtf32Le);
  // One NUL in a short file is no code unit pattern: binary data, not UTF-16 or UTF-32 (it was
  // called UTF-16 and iconv suggested, a docs trial). Two UTF-16 code units still are text.
  EXPECT_EQ(detect_text_encoding(std::string("abc\0def\n", 8)), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(std::string("ab\0\n", 4)), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(std::string("abc\0", 4)), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(utf16le("hi")), TextEncoding::kUtf16Le);
  // iconv needs the byte order spelled out for files without a mark.
  EXPECT_STREQ(iconv_encoding_name(TextEncoding::kUtf16Be), "UTF-16BE");
  EXPECT_STREQ(iconv_encoding_name(TextEncoding::kUtf32Le), "UTF-32LE");

  // Text outside Latin without a mark has NULs only in its ASCII characters' high bytes (here
  // the newlines) and in U+xx00 characters' low bytes ("一" is U+4E00): it was called binary
  // data (a user trial). The bytes are Python's: ("中文文本。\n第二行，一些汉字。\n" * 3)
  // .encode("utf-16-le"), "utf-16-be" and "Привет, мир!\n".encode("utf-16-le").
  const std::string one = "2d4e876587652c6702300a002c7b8c4e4c880cff004e9b4e496c575b02300a00";
  EXPECT_EQ(detect_text_encoding(from_hex(one + one + one)), TextEncoding::kUtf16Le);
  const std::string one_be = "4e2d65876587672c3002000a7b2c4e8c884cff0c4e004e9b6c495b573002000a";
  EXPECT_EQ(detect_text_encoding(from_hex(one_be + one_be + one_be)), TextEncoding::kUtf16Be);
  EXPECT_EQ(detect_text_encoding(from_hex("1f04400438043204350442042c0020003c043804400421000a00")),
            TextEncoding::kUtf16Le);
  // Chinese where "一" (U+4E00, a NUL low byte) is common: more NULs on the wrong side, so the
  // order is the one with whitespace (a trial got binary data, or UTF-16BE for a short file).
  std::string yi_le, yi_be;
  for (int i = 0; i < 20; ++i)
    for (char16_t c :
         std::u16string(u"一天，他一个人走在路上，看见一只小猫。它一直跟着他，一步也不离开。\n")) {
      yi_le += std::string{static_cast<char>(c & 0xFF), static_cast<char>(c >> 8)};
      yi_be += std::string{static_cast<char>(c >> 8), static_cast<char>(c & 0xFF)};
    }
  EXPECT_EQ(detect_text_encoding(yi_le), TextEncoding::kUtf16Le);
  EXPECT_EQ(detect_text_encoding(yi_be), TextEncoding::kUtf16Be);
  EXPECT_EQ(detect_text_encoding(yi_le.substr(0, 68)), TextEncoding::kUtf16Le);  // one line
  // One line of Japanese, one NUL (its newline's): Python's "これは日本語のテストです。
  // 東京は日本の首都です。\n".encode("utf-16-le").
  EXPECT_EQ(detect_text_encoding(from_hex(
                "53308c306f30e5652c679e8a6e30c630b930c8306730593002307167ac4e6f30e5652c676e30969"
                "9fd906730593002300a00")),
            TextEncoding::kUtf16Le);
  // Emoji in UTF-32 without a mark (their second byte is not NUL).
  std::string emoji32;
  for (int i = 0; i < 40; ++i) {
    const uint32_t c = i % 5 == 4 ? ' ' : 0x1F600 + i;
    emoji32 += std::string{static_cast<char>(c & 0xFF), static_cast<char>((c >> 8) & 0xFF),
                           static_cast<char>(c >> 16), '\0'};
  }
  EXPECT_EQ(detect_text_encoding(emoji32), TextEncoding::kUtf32Le);
  // A Latin-1 log with stray NULs: binary data (a trial got UTF-16LE).
  std::string latin1 = "caf\xE9 ok!\n";
  latin1 += '\0';
  for (int i = 0; i < 30; ++i) latin1 += "caf\xE9 ok!\n";
  latin1 += '\0';
  EXPECT_EQ(detect_text_encoding(latin1), TextEncoding::kBinary);
  // Ten 32-bit or 16-bit numbers: binary data, though too few to show a pattern of text.
  std::string ten32, ten16;
  for (uint32_t v : {40215u, 318u, 9999u, 27u, 50000u, 1234u, 777u, 4242u, 31337u, 65u}) {
    ten32 += std::string{static_cast<char>(v & 0xFF), static_cast<char>((v >> 8) & 0xFF),
                         static_cast<char>(v >> 16), '\0'};
    ten16 += std::string{static_cast<char>((v % 1000) >> 8), static_cast<char>((v % 1000) & 0xFF)};
  }
  EXPECT_EQ(detect_text_encoding(ten32), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(ten16), TextEncoding::kBinary);
  // ASCII text with stray NULs on one side reads as UTF-16 (as CJK) too: binary data still.
  const char stray[] = "The quick brown fox jumps\0over the lazy dog\0 Pack my box.\n";
  EXPECT_EQ(detect_text_encoding(std::string(stray, sizeof stray - 1)), TextEncoding::kBinary);
  // Nor is a log with colour codes (ESC) and stray NULs (a trial: called UTF-16, its iconv
  // made CJK of it), or files of 16- and 32-bit numbers such as token ids without a header
  // (small values are control codes, and there is no whitespace among them).
  std::string log;
  for (int line = 0; line < 60; ++line)
    log += "2024-05-01 12:00:00 \x1b[32mINFO\x1b[0m worker 0 finished job ok\n";
  for (size_t at : {301, 903, 1503}) log[at] = '\0';
  EXPECT_EQ(detect_text_encoding(log), TextEncoding::kBinary);
  std::string ids16, ids32, no_bos16, small16;
  const auto u16 = [](uint32_t v) {
    return std::string{static_cast<char>(v & 0xFF), static_cast<char>(v >> 8)};
  };
  for (int i = 0; i < 2000; ++i) {
    const uint32_t id = i % 151 == 0 ? 1 : 259 + (i * 7919) % 253;  // tok512's pieces, BOS 1
    ids16 += u16(id);
    ids32 += u16(id) + std::string(2, '\0');
    // Without BOS, a byte piece (id 35-124: "#" to "|" as UTF-16) every 50: characters all,
    // but no whitespace.
    no_bos16 += u16(i % 50 == 0 ? 35 + i % 90 : 259 + (i * 7919) % 253);
    small16 += u16(1 + (i * 37) % 255);
  }
  EXPECT_EQ(detect_text_encoding(ids16), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(ids32), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(no_bos16), TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(small16), TextEncoding::kBinary);
  // Binary data with more NULs on one side is not such text: 16-bit values that are control
  // codes, or a lone surrogate (U+DBFF), among CJK code units ("中文文本汉字一些" in UTF-16LE,
  // with three NULs of "一" on the other side).
  const std::string cjk = "2d4e876587652c67496c575b004e9b4e";
  EXPECT_EQ(detect_text_encoding(from_hex(cjk + cjk + "0100" + cjk + "0200" + "0a000a00")),
            TextEncoding::kBinary);
  EXPECT_EQ(detect_text_encoding(from_hex(cjk + cjk + "ffdb" + cjk + "0a000a000a000a00")),
            TextEncoding::kBinary);

  // An ELF header and random bytes are binary.
  EXPECT_EQ(detect_text_encoding(std::string("\x7F"
                                             "ELF\x02\x01\x01\0\0\0\0\0",
                                             12) +
                                 text),
            TextEncoding::kBinary);
  Rng rng(5);
  std::string noise;
  for (int i = 0; i < 4096; ++i) noise += static_cast<char>(1 + rng.below(255));  // no NULs
  EXPECT_EQ(detect_text_encoding(noise), TextEncoding::kBinary);
  // Random bytes with NULs, one in 64 on average: binary, whichever side has more.
  for (int round = 0; round < 20; ++round) {
    std::string bytes;
    for (int i = 0; i < 4096; ++i)
      bytes += rng.below(64) == 0 ? '\0' : static_cast<char>(1 + rng.below(255));
    EXPECT_EQ(detect_text_encoding(bytes), TextEncoding::kBinary) << round;
  }
}

}  // namespace
}  // namespace chainlm
