#pragma once
// Splitting a plain-text corpus into documents, the unit `chainlm prepare` tokenizes (with BOS
// in front) and assigns to train or validation.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace chainlm {

// Documents are separated by one or more blank (whitespace-only) lines, or by a line holding
// only "%" (the fortune-file convention). Lines inside a document are joined with '\n'; "\r\n"
// line ends are accepted. Separators never produce empty documents.
std::vector<std::string> split_documents(std::string_view text);
// Each line of text without its "\n" or "\r\n" (a last line without one included).
void for_each_line(std::string_view text, const std::function<void(std::string_view)>& on_line);
// The same documents, handed over one at a time as they are found.
void for_each_document(std::string_view text,
                       const std::function<void(std::string&&)>& on_document);

}  // namespace chainlm
