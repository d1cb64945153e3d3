#pragma once
// JSON values quoted in error messages. nlohmann's dump() recurses once per nesting level, so
// dumping a hostile value ("dim": [[[[... a million deep) overflows the stack (found by fuzzing);
// and a long value would bury the message. json_excerpt recurses at most kMaxDepth levels and
// stops after about max_chars characters.
#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace chainlm {

// The JSON text of v as dump() writes it, but with containers nested deeper than 8 levels
// written as [...] or {...}, and cut with "..." once it is longer than max_chars. Strings with invalid UTF-8 (possible
// only in values built in memory) show U+FFFD.
std::string json_excerpt(const nlohmann::json& v, std::size_t max_chars = 200);

}  // namespace chainlm
