#pragma once
// Lines of an evaluation file, for parsers that report 1-based line numbers.
#include <string>
#include <vector>

namespace chainlm {

// Splits at '\n' and drops a '\r' before it; a final newline does not start another line,
// so "" has no lines and "a\n" has one.
inline std::vector<std::string> split_text_lines(const std::string& text) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
    pos = nl + 1;
  }
  return lines;
}

}  // namespace chainlm
