#include "io/text_documents.h"

#include <cctype>

namespace chainlm {
namespace {

bool is_separator(std::string_view line) {
  size_t end = line.size();
  while (end > 0 && std::isspace(static_cast<unsigned char>(line[end - 1]))) --end;
  if (end == 0) return true;
  size_t begin = 0;
  while (begin < end && std::isspace(static_cast<unsigned char>(line[begin]))) ++begin;
  return end - begin == 1 && line[begin] == '%';
}

}  // namespace

void for_each_line(std::string_view text, const std::function<void(std::string_view)>& on_line) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(pos, nl - pos);
    pos = nl + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    on_line(line);
  }
}

void for_each_document(std::string_view text,
                       const std::function<void(std::string&&)>& on_document) {
  std::string current;
  bool in_document = false;
  for_each_line(text, [&](std::string_view line) {
    if (is_separator(line)) {
      if (in_document) on_document(std::move(current));
      current.clear();
      in_document = false;
      return;
    }
    if (in_document) current += '\n';
    current += line;
    in_document = true;
  });
  if (in_document) on_document(std::move(current));
}

std::vector<std::string> split_documents(std::string_view text) {
  std::vector<std::string> documents;
  for_each_document(text, [&](std::string&& d) { documents.push_back(std::move(d)); });
  return documents;
}

}  // namespace chainlm
