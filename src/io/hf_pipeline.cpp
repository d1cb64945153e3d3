#include "io/hf_pipeline.h"

#include <array>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/hf_regex.h"
#include "io/text_encoding.h"

namespace chainlm {

namespace {

using json = nlohmann::json;

std::string encode_utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += char(cp);
  } else if (cp < 0x800) {
    s += char(0xC0 | (cp >> 6));
    s += char(0x80 | (cp & 0x3F));
  } else {
    s += char(0xE0 | (cp >> 12));
    s += char(0x80 | ((cp >> 6) & 0x3F));
    s += char(0x80 | (cp & 0x3F));
  }
  return s;
}

struct ByteLevelTables {
  std::array<std::string, 256> to_char;
  std::array<int, 324> to_byte;  // code point (all below 324) -> byte, -1 for others
  ByteLevelTables() {
    to_byte.fill(-1);
    int extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cp = printable ? b : 256 + extra++;
      to_char[b] = encode_utf8(cp);
      to_byte[cp] = b;
    }
  }
};
const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables t;
  return t;
}

const std::string& type_of(const json& j, const char* what, const std::string& where) {
  CHAINLM_CHECK(j.is_object() && j.contains("type") && j["type"].is_string(), where, ": a ", what,
                " must be an object with a \"type\"");
  return j["type"].get_ref<const std::string&>();
}

std::string string_field(const json& j, const char* key, const std::string& def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  CHAINLM_CHECK(j[key].is_string(), where, ": '", key, "' must be a string");
  return j[key].get<std::string>();
}

bool bool_field(const json& j, const char* key, bool def, const std::string& where) {
  if (!j.contains(key) || j[key].is_null()) return def;
  CHAINLM_CHECK(j[key].is_boolean(), where, ": '", key, "' must be true or false");
  return j[key].get<bool>();
}

// The fields tokenizers requires (serde: "missing field"): a file without one does not load
// there, and a default here tokenized as no one meant (a Replace without its content deleted
// every match).
std::string required_string(const json& j, const char* key, const std::string& where) {
  CHAINLM_CHECK(j.contains(key) && !j[key].is_null(), where, ": '", key,
                "' is missing (tokenizers requires it)");
  return string_field(j, key, "", where);
}

bool required_bool(const json& j, const char* key, const std::string& where) {
  CHAINLM_CHECK(j.contains(key) && !j[key].is_null(), where, ": '", key,
                "' is missing (tokenizers requires it)");
  return bool_field(j, key, false, where);
}

int count_field(const json& j, const char* key, const std::string& where) {
  CHAINLM_CHECK(j.contains(key), where, ": '", key, "' is missing (tokenizers requires it)");
  CHAINLM_CHECK(j[key].is_number_unsigned(), where, ": '", key, "' must be a non-negative integer");
  return j[key].get<int>();
}

// Non-overlapping occurrences of literal in text, left to right, as byte ranges.
std::vector<std::pair<size_t, size_t>> literal_matches(std::string_view text, const std::string& literal) {
  std::vector<std::pair<size_t, size_t>> out;
  if (literal.empty()) return out;
  for (size_t at = text.find(literal); at != std::string_view::npos; at = text.find(literal, at + literal.size()))
    out.emplace_back(at, at + literal.size());
  return out;
}

// A {"String": s} or {"Regex": r} pattern: matches as byte ranges.
struct Pattern {
  std::string literal;
  std::unique_ptr<HfRegex> regex;
  Pattern(const json& j, const std::string& where) {
    CHAINLM_CHECK(j.is_object() && j.size() == 1 && (j.contains("String") || j.contains("Regex")) &&
                      j.begin().value().is_string(),
                  where, ": a pattern must be {\"String\": ...} or {\"Regex\": ...}");
    if (j.contains("Regex"))
      regex = std::make_unique<HfRegex>(j["Regex"].get<std::string>(), where);
    else
      literal = j["String"].get<std::string>();
  }
  std::vector<std::pair<size_t, size_t>> find(std::string_view text) const {
    return regex ? regex->find_all(text) : literal_matches(text, literal);
  }
};

// text with every match replaced by content.
std::string replace_matches(const std::string& text, const std::vector<std::pair<size_t, size_t>>& matches,
                            const std::string& content) {
  std::string out;
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    out.append(text, prev, s - prev);
    out += content;
    prev = e;
  }
  out.append(text, prev, std::string::npos);
  return out;
}

std::string replace_all(const std::string& text, const Pattern& pattern, const std::string& content) {
  return replace_matches(text, pattern.find(text), content);
}

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const json& j, const std::string& where) {
  const std::string b = string_field(j, "behavior", "", where);
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  fail(where, ": unknown split behavior '", b,
       "' (Removed, Isolated, MergedWithPrevious, MergedWithNext or Contiguous)");
}

struct Span {
  size_t start, end;
  bool flag;  // before the behavior: a match; after: to be removed
};

// tokenizers' NormalizedString::split: the pattern's matches and the stretches between them,
// combined by the behavior; empty pieces are dropped.
void split_by(const HfPiece& piece, const std::vector<std::pair<size_t, size_t>>& found, Behavior behavior,
              bool invert, std::vector<HfPiece>& out) {
  std::vector<Span> spans;
  size_t prev = 0;
  for (const auto& [s, e] : found) {
    if (prev != s) spans.push_back({prev, s, false});
    spans.push_back({s, e, true});
    prev = e;
  }
  if (prev != piece.text.size()) spans.push_back({prev, piece.text.size(), false});
  if (invert)
    for (Span& s : spans) s.flag = !s.flag;
  std::vector<Span> pieces;
  bool previous_match = false;
  switch (behavior) {
    case Behavior::kIsolated:
      for (Span s : spans) pieces.push_back({s.start, s.end, false});
      break;
    case Behavior::kRemoved:
      pieces = spans;
      break;
    case Behavior::kContiguous:
      for (const Span& s : spans) {
        if (s.flag == previous_match && !pieces.empty())
          pieces.back().end = s.end;
        else
          pieces.push_back({s.start, s.end, false});
        previous_match = s.flag;
      }
      break;
    case Behavior::kMergedWithPrevious:
      for (const Span& s : spans) {
        if (s.flag && !previous_match && !pieces.empty())
          pieces.back().end = s.end;
        else
          pieces.push_back({s.start, s.end, false});
        previous_match = s.flag;
      }
      break;
    case Behavior::kMergedWithNext:
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->flag && !previous_match && !pieces.empty())
          pieces.back().start = it->start;
        else
          pieces.push_back({it->start, it->end, false});
        previous_match = it->flag;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
  }
  for (const Span& s : pieces)
    if (!s.flag && s.end > s.start) out.push_back({piece.text.substr(s.start, s.end - s.start), piece.at_start && s.start == 0});
}

// Splits every piece with `fn(piece, out)`.
template <typename Fn>
std::vector<HfPiece> for_each_piece(std::vector<HfPiece> pieces, Fn fn) {
  std::vector<HfPiece> out;
  for (const HfPiece& p : pieces) fn(p, out);
  return out;
}

enum class Prepend { kAlways, kFirst, kNever };

// Metaspace's settings: replacement and prepend_scheme (or the older add_prefix_space).
Prepend parse_prepend(const json& j, const std::string& where) {
  if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
    const std::string s = string_field(j, "prepend_scheme", "", where);
    if (s == "always") return Prepend::kAlways;
    if (s == "first") return Prepend::kFirst;
    if (s == "never") return Prepend::kNever;
    fail(where, ": unknown prepend_scheme '", s, "' (always, first or never)");
  }
  return bool_field(j, "add_prefix_space", true, where) ? Prepend::kAlways : Prepend::kNever;
}

std::string replacement_of(const json& j, const std::string& where) {
  const std::string r = string_field(j, "replacement", string_field(j, "str_rep", "\xE2\x96\x81", where), where);
  CHAINLM_CHECK(!r.empty() && utf8_char_length(static_cast<unsigned char>(r[0])) == r.size(), where,
                ": Metaspace's replacement must be one character");
  return r;
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.compare(0, prefix.size(), prefix) == 0; }

// Sequences nest a few levels in real tokenizers; 100,000 levels overflowed the stack here.
constexpr int kMaxSequenceDepth = 64;

std::vector<const json*> flatten(const json& j, const char* sequence_key, const char* what,
                                 const std::string& where, int depth = 0) {
  std::vector<const json*> out;
  if (j.is_null()) return out;
  if (type_of(j, what, where) == "Sequence") {
    CHAINLM_CHECK(j.contains(sequence_key) && j[sequence_key].is_array(), where, ": a Sequence ", what,
                  " needs the array '", sequence_key, "'");
    CHAINLM_CHECK(depth < kMaxSequenceDepth, where, ": Sequences nested more than ",
                  kMaxSequenceDepth, " deep (a tokenizer's nest a few)");
    for (const json& inner : j[sequence_key]) {
      std::vector<const json*> more = flatten(inner, sequence_key, what, where, depth + 1);
      out.insert(out.end(), more.begin(), more.end());
    }
  } else {
    out.push_back(&j);
  }
  return out;
}

}  // namespace

const std::string& byte_level_char(unsigned char byte) { return byte_level_tables().to_char[byte]; }

// ---------------------------------------------------------------- normalizers

struct HfNormalizer::Step {
  virtual ~Step() = default;
  virtual std::string apply(std::string text) const = 0;
  // Whether the step deletes the text's first character (so the new first one is not the
  // input's): tokenizers aligns every character to the input, and Metaspace's "first" scheme
  // asks whether a piece starts at input offset 0. A replaced or prepended character takes the
  // offset of what it replaces or precedes, so only deletions move the start.
  virtual bool deletes_start(const std::string&) const { return false; }
};

namespace {

struct PrependNorm : HfNormalizer::Step {
  std::string prefix;
  std::string apply(std::string text) const override { return text.empty() ? text : prefix + text; }
};

// What a normalizer may make of a text: LLaMA's and GPT's replace a character by another of up to
// 4 bytes and prepend one. A tokenizer.json replacing "a" by a thousand of them, four times over,
// took a 4-byte prompt to 4 GB (std::bad_alloc, in a server too): a step may write at most
// kStepGrowth times its input, the whole pipeline kTotalGrowth times the text, plus some bytes.
constexpr size_t kStepGrowth = 8, kTotalGrowth = 16, kGrowthSlack = 4096;

struct ReplaceNorm : HfNormalizer::Step {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  std::string where;
  std::string apply(std::string text) const override {
    const auto matches = pattern->find(text);
    size_t matched = 0;
    for (const auto& [s, e] : matches) matched += e - s;
    const size_t out = text.size() - matched + matches.size() * content.size();
    CHAINLM_CHECK(out <= kStepGrowth * text.size() + kGrowthSlack, where, ": a Replace would make ",
                  out, " bytes of ", text.size(),
                  ": more than a tokenizer's normalizer makes (a tokenizer.json built "
                  "to exhaust memory?)");
    return replace_matches(text, matches, content);
  }
  bool deletes_start(const std::string& text) const override {
    if (!content.empty() || text.empty()) return false;
    const auto matches = pattern->find(text);
    return !matches.empty() && matches.front().first == 0 && matches.front().second > 0;
  }
};

struct StripNorm : HfNormalizer::Step {
  bool left = true, right = true;
  std::string apply(std::string text) const override {
    const auto ws = unicode_whitespace().find_all(text);
    size_t begin = 0, end = text.size();
    if (left)
      for (const auto& [s, e] : ws) {
        if (s != begin) break;
        begin = e;
      }
    if (right)
      for (auto it = ws.rbegin(); it != ws.rend() && end > begin; ++it) {
        if (it->second != end) break;
        end = it->first;
      }
    return text.substr(begin, end - begin);
  }
  bool deletes_start(const std::string& text) const override {
    return left && !text.empty() && unicode_whitespace().matches_at_start(text);
  }
};

}  // namespace

HfNormalizer::HfNormalizer(const json& j, const std::string& where)
    : where_(where + ": normalizer") {
  const std::string at = where + ": normalizer";
  for (const json* step : flatten(j, "normalizers", "normalizer", at)) {
    const std::string& type = type_of(*step, "normalizer", at);
    if (type == "Prepend") {
      auto s = std::make_unique<PrependNorm>();
      s->prefix = required_string(*step, "prepend", at);
      steps_.push_back(std::move(s));
    } else if (type == "Replace") {
      CHAINLM_CHECK(step->contains("pattern"), at, ": Replace needs a 'pattern'");
      auto s = std::make_unique<ReplaceNorm>();
      s->pattern = std::make_unique<Pattern>((*step)["pattern"], at);
      s->content = required_string(*step, "content", at);
      s->where = at;
      steps_.push_back(std::move(s));
    } else if (type == "Strip") {
      auto s = std::make_unique<StripNorm>();
      s->left = required_bool(*step, "strip_left", at);
      s->right = required_bool(*step, "strip_right", at);
      steps_.push_back(std::move(s));
    } else {
      fail(at, ": '", type, "' is not supported (chainlm reads Sequence, Prepend, Replace and Strip; Unicode ",
           "normalization forms such as NFC and lowercasing are not implemented)");
    }
  }
}

HfNormalizer::~HfNormalizer() = default;

std::string HfNormalizer::normalize(std::string text, bool* start_moved) const {
  const size_t limit = kTotalGrowth * text.size() + kGrowthSlack;
  for (const auto& s : steps_) {
    if (start_moved && s->deletes_start(text)) *start_moved = true;
    text = s->apply(std::move(text));
    CHAINLM_CHECK(text.size() <= limit, where_, ": the normalizer makes more than ", kTotalGrowth,
                  " times the text's bytes: more than a tokenizer's makes (a tokenizer.json built "
                  "to exhaust memory?)");
  }
  return text;
}

// ---------------------------------------------------------------- pre-tokenizers

struct HfPreTokenizer::Step {
  virtual ~Step() = default;
  virtual std::vector<HfPiece> apply(std::vector<HfPiece> pieces) const = 0;
};

namespace {

constexpr const char* kGpt2Regex =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct ByteLevelPre : HfPreTokenizer::Step {
  bool add_prefix_space = true;
  std::unique_ptr<HfRegex> regex;  // GPT-2's, when use_regex
  std::vector<HfPiece> apply(std::vector<HfPiece> pieces) const override {
    std::vector<HfPiece> split = for_each_piece(std::move(pieces), [&](HfPiece p, std::vector<HfPiece>& out) {
      if (add_prefix_space && !starts_with(p.text, " ")) p.text = " " + p.text;
      if (regex)
        split_by(p, regex->find_all(p.text), Behavior::kIsolated, false, out);
      else if (!p.text.empty())
        out.push_back(std::move(p));
    });
    for (HfPiece& p : split) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char c : p.text) mapped += byte_level_char(c);
      p.text = std::move(mapped);
    }
    return split;
  }
};

struct SplitPre : HfPreTokenizer::Step {
  std::unique_ptr<Pattern> pattern;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  std::vector<HfPiece> apply(std::vector<HfPiece> pieces) const override {
    return for_each_piece(std::move(pieces), [&](const HfPiece& p, std::vector<HfPiece>& out) {
      split_by(p, pattern->find(p.text), behavior, invert, out);
    });
  }
};

// Digits, Whitespace, WhitespaceSplit and Metaspace's split: a character class, each matching
// character its own match (tokenizers' char-predicate patterns), then a behavior.
struct CharClassPre : HfPreTokenizer::Step {
  std::unique_ptr<HfRegex> regex;
  Behavior behavior = Behavior::kIsolated;
  bool invert = false;
  std::vector<HfPiece> apply(std::vector<HfPiece> pieces) const override {
    return for_each_piece(std::move(pieces), [&](const HfPiece& p, std::vector<HfPiece>& out) {
      split_by(p, regex->find_all(p.text), behavior, invert, out);
    });
  }
};

struct MetaspacePre : HfPreTokenizer::Step {
  std::string replacement;
  Prepend prepend = Prepend::kAlways;
  bool split = true;
  std::vector<HfPiece> apply(std::vector<HfPiece> pieces) const override {
    return for_each_piece(std::move(pieces), [&](HfPiece p, std::vector<HfPiece>& out) {
      p.text = replace_matches(p.text, literal_matches(p.text, " "), replacement);
      if (!starts_with(p.text, replacement) &&
          (prepend == Prepend::kAlways || (prepend == Prepend::kFirst && p.at_start)))
        p.text = replacement + p.text;
      if (!split) {
        if (!p.text.empty()) out.push_back(std::move(p));
        return;
      }
      split_by(p, literal_matches(p.text, replacement), Behavior::kMergedWithNext, false, out);
    });
  }
};

}  // namespace

HfPreTokenizer::HfPreTokenizer(const json& j, const std::string& where) {
  const std::string at = where + ": pre_tokenizer";
  for (const json* step : flatten(j, "pretokenizers", "pre_tokenizer", at)) {
    const std::string& type = type_of(*step, "pre_tokenizer", at);
    if (type == "ByteLevel") {
      auto s = std::make_unique<ByteLevelPre>();
      s->add_prefix_space = bool_field(*step, "add_prefix_space", true, at);
      if (bool_field(*step, "use_regex", true, at)) s->regex = std::make_unique<HfRegex>(kGpt2Regex, at);
      steps_.push_back(std::move(s));
    } else if (type == "Split") {
      CHAINLM_CHECK(step->contains("pattern"), at, ": Split needs a 'pattern'");
      auto s = std::make_unique<SplitPre>();
      s->pattern = std::make_unique<Pattern>((*step)["pattern"], at);
      s->behavior = parse_behavior(*step, at);
      s->invert = bool_field(*step, "invert", false, at);
      steps_.push_back(std::move(s));
    } else if (type == "Digits") {
      auto s = std::make_unique<CharClassPre>();
      s->regex = std::make_unique<HfRegex>("\\p{N}", at);
      s->behavior = bool_field(*step, "individual_digits", false, at) ? Behavior::kIsolated : Behavior::kContiguous;
      steps_.push_back(std::move(s));
    } else if (type == "Whitespace") {
      // tokenizers: \w+|[^\w\s]+ kept, the rest (whitespace) removed, in Rust's regex crate,
      // whose \w (UTS #18) has Alphabetic, marks, decimal digits, connector punctuation and the
      // joiners (a ZWJ emoji sequence is one word), and \s is White_Space.
      auto s = std::make_unique<CharClassPre>();
      s->regex = std::make_unique<HfRegex>(
          "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]+|"
          "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}\\p{White_Space}]+",
          at);
      s->behavior = Behavior::kRemoved;
      s->invert = true;
      steps_.push_back(std::move(s));
    } else if (type == "WhitespaceSplit") {
      auto s = std::make_unique<CharClassPre>();
      s->regex = std::make_unique<HfRegex>("\\p{White_Space}", at);  // char::is_whitespace
      s->behavior = Behavior::kRemoved;
      steps_.push_back(std::move(s));
    } else if (type == "Metaspace") {
      auto s = std::make_unique<MetaspacePre>();
      s->replacement = replacement_of(*step, at);
      s->prepend = parse_prepend(*step, at);
      s->split = bool_field(*step, "split", true, at);
      steps_.push_back(std::move(s));
    } else {
      fail(at, ": '", type, "' is not supported (chainlm reads Sequence, ByteLevel, Split, Digits, Metaspace, ",
           "Whitespace and WhitespaceSplit)");
    }
  }
}

HfPreTokenizer::~HfPreTokenizer() = default;

std::vector<HfPiece> HfPreTokenizer::split(HfPiece piece) const {
  std::vector<HfPiece> pieces;
  if (!piece.text.empty()) pieces.push_back(std::move(piece));
  for (const auto& s : steps_) pieces = s->apply(std::move(pieces));
  return pieces;
}

// ---------------------------------------------------------------- decoders

struct HfDecoder::Step {
  virtual ~Step() = default;
  virtual std::vector<std::string> apply(std::vector<std::string> tokens, bool lossy) const = 0;
};

namespace {

// Each token's characters back to bytes; a token with a character outside the alphabet (an
// added token's text) stays as it is, as tokenizers does. One string for the whole chain.
struct ByteLevelDec : HfDecoder::Step {
  std::vector<std::string> apply(std::vector<std::string> tokens, bool lossy) const override {
    const ByteLevelTables& t = byte_level_tables();
    std::string bytes;
    for (const std::string& tok : tokens) {
      std::string mapped;
      bool all = true;
      for (size_t i = 0; i < tok.size() && all;) {
        const unsigned char c = tok[i];
        const size_t len = utf8_char_length(c);
        uint32_t cp = c;
        if (len == 2 && i + 1 < tok.size()) cp = ((c & 0x1F) << 6) | (tok[i + 1] & 0x3F);
        else if (len != 1) cp = 0xFFFF;  // 3- and 4-byte characters are outside the alphabet
        all = cp < t.to_byte.size() && t.to_byte[cp] >= 0;
        if (all) mapped += char(t.to_byte[cp]);
        i += len;
      }
      bytes += all ? mapped : tok;
    }
    return {lossy ? replace_invalid_utf8(bytes) : bytes};
  }
};

struct MetaspaceDec : HfDecoder::Step {
  std::string replacement;
  Prepend prepend = Prepend::kAlways;
  std::vector<std::string> apply(std::vector<std::string> tokens, bool) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      // tokenizers drops every replacement character of the first token (not only a leading
      // one) unless prepend_scheme is never.
      const std::string with = i == 0 && prepend != Prepend::kNever ? "" : " ";
      tokens[i] = replace_matches(tokens[i], literal_matches(tokens[i], replacement), with);
    }
    return tokens;
  }
};

struct ReplaceDec : HfDecoder::Step {
  std::unique_ptr<Pattern> pattern;
  std::string content;
  std::vector<std::string> apply(std::vector<std::string> tokens, bool) const override {
    for (std::string& t : tokens) t = replace_all(t, *pattern, content);
    return tokens;
  }
};

// Runs of "<0xXX>" tokens to the bytes they stand for: valid UTF-8 becomes one token, invalid
// a U+FFFD per byte (lossy) or the raw bytes (streaming).
struct ByteFallbackDec : HfDecoder::Step {
  static int byte_of(const std::string& t) {
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; ++i) {
      const char c = t[i];
      const int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return -1;
      v = v * 16 + d;
    }
    return v;
  }
  std::vector<std::string> apply(std::vector<std::string> tokens, bool lossy) const override {
    std::vector<std::string> out;
    std::string run;
    size_t run_tokens = 0;
    auto flush = [&] {
      if (run_tokens == 0) return;
      if (!lossy || check_utf8(run).ok())
        out.push_back(run);
      else
        for (size_t i = 0; i < run_tokens; ++i) out.push_back("\xEF\xBF\xBD");
      run.clear();
      run_tokens = 0;
    };
    for (std::string& t : tokens) {
      const int b = byte_of(t);
      if (b >= 0) {
        run += char(b);
        ++run_tokens;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    return out;
  }
};

struct FuseDec : HfDecoder::Step {
  std::vector<std::string> apply(std::vector<std::string> tokens, bool) const override {
    std::string all;
    for (const std::string& t : tokens) all += t;
    return {all};
  }
};

// Up to `start` leading and `stop` trailing copies of one character off each token.
struct StripDec : HfDecoder::Step {
  std::string content;
  int start = 0, stop = 0;
  std::vector<std::string> apply(std::vector<std::string> tokens, bool) const override {
    for (std::string& t : tokens) {
      size_t begin = 0, end = t.size();
      for (int i = 0; i < start && t.compare(begin, content.size(), content) == 0 && begin < end; ++i)
        begin += content.size();
      for (int i = 0; i < stop && end >= begin + content.size() &&
                      t.compare(end - content.size(), content.size(), content) == 0;
           ++i)
        end -= content.size();
      t = t.substr(begin, end - begin);
    }
    return tokens;
  }
};

}  // namespace

HfDecoder::HfDecoder(const json& j, const std::string& where) {
  const std::string at = where + ": decoder";
  none_ = j.is_null();
  for (const json* step : flatten(j, "decoders", "decoder", at)) {
    const std::string& type = type_of(*step, "decoder", at);
    if (type == "ByteLevel") {
      steps_.push_back(std::make_unique<ByteLevelDec>());
    } else if (type == "Metaspace") {
      auto s = std::make_unique<MetaspaceDec>();
      s->replacement = replacement_of(*step, at);
      s->prepend = parse_prepend(*step, at);
      steps_.push_back(std::move(s));
    } else if (type == "Replace") {
      CHAINLM_CHECK(step->contains("pattern"), at, ": Replace needs a 'pattern'");
      auto s = std::make_unique<ReplaceDec>();
      s->pattern = std::make_unique<Pattern>((*step)["pattern"], at);
      s->content = required_string(*step, "content", at);
      steps_.push_back(std::move(s));
    } else if (type == "ByteFallback") {
      steps_.push_back(std::make_unique<ByteFallbackDec>());
    } else if (type == "Fuse") {
      steps_.push_back(std::make_unique<FuseDec>());
    } else if (type == "Strip") {
      auto s = std::make_unique<StripDec>();
      s->content = string_field(*step, "content", " ", at);
      CHAINLM_CHECK(!s->content.empty() && utf8_char_length(static_cast<unsigned char>(s->content[0])) == s->content.size(),
                    at, ": Strip's content must be one character");
      s->start = count_field(*step, "start", at);
      s->stop = count_field(*step, "stop", at);
      steps_.push_back(std::move(s));
    } else {
      fail(at, ": '", type, "' is not supported (chainlm reads Sequence, ByteLevel, Metaspace, Replace, ",
           "ByteFallback, Fuse and Strip)");
    }
  }
}

HfDecoder::~HfDecoder() = default;

std::string HfDecoder::decode(std::vector<std::string> tokens, bool lossy) const {
  std::string out;
  if (none_) {
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  for (const auto& s : steps_) tokens = s->apply(std::move(tokens), lossy);
  for (const std::string& t : tokens) out += t;
  return out;
}

}  // namespace chainlm
