#include "io/hf_regex.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/error.h"

namespace chainlm {

struct HfRegex::Impl {
  pcre2_code* code = nullptr;
  pcre2_match_context* context = nullptr;
};

// A pattern with catastrophic backtracking on some input fails with an error naming it
// instead of hanging the tokenizer: the split patterns of real files need far less.
constexpr uint32_t kMatchLimit = 1000000;
constexpr uint32_t kHeapLimitKiB = 64 * 1024;

namespace {

// PCRE2's match data is per call: the tokenizer may encode from several threads at once.
struct MatchData {
  explicit MatchData(const pcre2_code* code) : data(pcre2_match_data_create_from_pattern(code, nullptr)) {
    CHAINLM_CHECK(data != nullptr, "out of memory creating a PCRE2 match block");
  }
  ~MatchData() { pcre2_match_data_free(data); }
  pcre2_match_data* data;
};

std::string pcre2_message(int code) {
  PCRE2_UCHAR buffer[256];
  pcre2_get_error_message(code, buffer, sizeof(buffer));
  return reinterpret_cast<const char*>(buffer);
}

}  // namespace

std::string with_oniguruma_classes(const std::string& pattern) {
  // Oniguruma's classes in Unicode mode, where PCRE2's (with UCP) differ:
  // - \s is White_Space. PCRE2 adds U+180E (MONGOLIAN VOWEL SEPARATOR, White_Space before
  //   Unicode 6.3), and a tokenizer dropped it as a space.
  // - \w is letters, marks, numbers and connector punctuation; PCRE2 10.42's is letters, numbers
  //   and "_", so a word was split at every combining mark (Devanagari's vowel signs).
  // - \h is a hexadecimal digit (PCRE2: horizontal space).
  // Inside a class the escapes become the properties themselves; \W and \H there stay as PCRE2
  // reads them (a negated set cannot be listed inside a class; no tokenizer uses them).
  static const char* kWord = "\\p{L}\\p{M}\\p{N}\\p{Pc}";
  std::string out;
  out.reserve(pattern.size() + 16);
  bool in_class = false;
  int nested = 0;  // classes open inside the current one
  for (size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '\\' && i + 1 < pattern.size()) {
      const char n = pattern[++i];
      if (n == 'Q') {  // a literal run up to \E, copied as it is
        const size_t end = pattern.find("\\E", i + 1);
        const size_t stop = end == std::string::npos ? pattern.size() : end + 2;
        out.append(pattern, i - 1, stop - (i - 1));
        i = stop - 1;
        continue;
      }
      if (n == 's')
        out += "\\p{White_Space}";
      else if (n == 'S')
        out += "\\P{White_Space}";
      else if (n == 'w')
        out += in_class ? std::string(kWord) : cat("[", kWord, "]");
      else if (n == 'W' && !in_class)
        out += cat("[^", kWord, "]");
      else if (n == 'h')
        out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
      else if (n == 'H' && !in_class)
        out += "[^0-9a-fA-F]";
      else {
        out += c;
        out += n;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      // A ']' first in a class (after an optional '^') is a literal.
      if (i + 1 < pattern.size() && pattern[i + 1] == '^') out += pattern[++i];
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += pattern[++i];
      continue;
    }
    if (in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == ':') {  // [:alpha:]
      const size_t end = pattern.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(pattern, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    // A class inside a class is their union to Oniguruma (BLOOM's " ?[^(\s|[.,!?…])]+"), a
    // literal '[' to PCRE2, whose class then ended early ("unmatched closing parenthesis"). A
    // nested class that is not negated is spelled into the outer one. A negated one, and "&&"
    // (Oniguruma's intersection), PCRE2 would read as literal characters: refused.
    CHAINLM_CHECK(!(in_class && c == '[' && i + 1 < pattern.size() && pattern[i + 1] == '^'),
                  "the regex '", pattern,
                  "' nests a negated class in a class, which chainlm cannot give PCRE2");
    CHAINLM_CHECK(!(in_class && c == '&' && i + 1 < pattern.size() && pattern[i + 1] == '&'),
                  "the regex '", pattern,
                  "' intersects classes (&&), which chainlm cannot give PCRE2");
    if (in_class && c == '[') {
      ++nested;
      if (i + 1 < pattern.size() && pattern[i + 1] == ']') out += "\\]", ++i;  // "[]..." holds ']'
      continue;
    }
    if (in_class && c == ']' && nested > 0) {
      --nested;
      continue;
    }
    if (in_class && c == ']') in_class = false;
    out += c;
  }
  return out;
}

HfRegex::HfRegex(const std::string& pattern, const std::string& where) : impl_(std::make_unique<Impl>()) {
  int error = 0;
  PCRE2_SIZE offset = 0;
  // UCP: \d and case folding follow Unicode properties, as Oniguruma's do; \s, \w and \h are
  // Oniguruma's by with_oniguruma_classes. NO_UTF_CHECK at match time is safe because callers
  // pass valid UTF-8 only.
  std::string translated;
  try {
    translated = with_oniguruma_classes(pattern);
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                              PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
  CHAINLM_CHECK(impl_->code != nullptr, where, ": the regex '", pattern, "' does not compile (PCRE2: ",
                pcre2_message(error), " at offset ", offset, ")");
  // JIT makes splitting a corpus several times faster; without it (some platforms) PCRE2's
  // interpreter gives the same matches.
  (void)pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE);
  impl_->context = pcre2_match_context_create(nullptr);
  CHAINLM_CHECK(impl_->context != nullptr, "out of memory creating a PCRE2 match context");
  pcre2_set_match_limit(impl_->context, kMatchLimit);
  pcre2_set_heap_limit(impl_->context, kHeapLimitKiB);
  pattern_ = pattern;
}

HfRegex::~HfRegex() {
  pcre2_match_context_free(impl_->context);
  pcre2_code_free(impl_->code);
}

std::vector<std::pair<size_t, size_t>> HfRegex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  MatchData md(impl_->code);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (from <= text.size()) {
    const int rc = pcre2_match(impl_->code, subject, text.size(), from, PCRE2_NO_UTF_CHECK, md.data, impl_->context);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    CHAINLM_CHECK(rc >= 0, "the regex '", pattern_, "' failed on a text of ", text.size(), " bytes (PCRE2: ",
                  pcre2_message(rc), ")");
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md.data);
    const size_t s = ov[0], e = ov[1];
    if (s == e && have_last && last_end == e) {
      if (from >= text.size()) break;
      from += utf8_char_length(static_cast<unsigned char>(text[from]));
      continue;
    }
    out.emplace_back(s, e);
    from = e;
    have_last = true;
    last_end = e;
  }
  return out;
}

bool HfRegex::matches_at_start(std::string_view text) const {
  MatchData md(impl_->code);
  const int rc = pcre2_match(impl_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), 0,
                             PCRE2_NO_UTF_CHECK | PCRE2_ANCHORED, md.data, impl_->context);
  CHAINLM_CHECK(rc >= 0 || rc == PCRE2_ERROR_NOMATCH, "the regex '", pattern_, "' failed (PCRE2: ",
                pcre2_message(rc), ")");
  return rc >= 0;
}

const HfRegex& unicode_whitespace() {
  static const HfRegex re("\\p{White_Space}", "the whitespace class");
  return re;
}

}  // namespace chainlm
