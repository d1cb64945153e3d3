#pragma once
// Evaluation task files (eval choice, eval pairs): read as prepare reads a corpus file, and cut
// into lines for parsers that report 1-based line numbers.
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "io/corpus_reader.h"
#include "io/text_documents.h"
#include "io/text_encoding.h"

namespace chainlm {

// The file's text (read_text_file: decompressed, other encodings refused by name), with a
// warning on stderr when it holds invalid UTF-8, as prepare and eval ppl give: such a task
// scores other text than the file's. Each invalid sequence becomes U+FFFD, as the warning says
// (a JSON parser refuses the raw bytes: a Latin-1 JSONL file was warned of, then refused).
inline std::string read_task_file(const std::string& path) {
  std::string text = read_text_file(path);
  if (const std::string note = invalid_utf8_note(path, text); !note.empty()) {
    std::fprintf(stderr, "warning: %s\n", note.c_str());
    text = replace_invalid_utf8(text);
  }
  return text;
}

// Splits at '\n' and drops a '\r' before it; a final newline does not start another line,
// so "" has no lines and "a\n" has one.
inline std::vector<std::string> split_text_lines(const std::string& text) {
  std::vector<std::string> lines;
  for_each_line(text, [&](std::string_view line) { lines.emplace_back(line); });
  return lines;
}

}  // namespace chainlm
