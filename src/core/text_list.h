#pragma once
// Comma-separated lists as options give them ("--add-chains 2, 2", "--chain-schedule 1:16,4"):
// one reading for every such option, so that spaces and commas mean the same in each.
#include <string>
#include <vector>

namespace chainlm {

// s without the spaces and tabs around it.
std::string trim_blanks(const std::string& s);

// "a, b ,c" -> {"a", "b", "c"}: the items, each trimmed of blanks; "" has none, and an empty
// item between commas is kept as "" (for the caller to refuse as what it is not). A trailing
// comma, which would otherwise vanish, is refused: "<what>: '<s>' ends with a comma".
std::vector<std::string> split_list(const std::string& s, const std::string& what);

}  // namespace chainlm
