#include "core/text_list.h"

#include "core/error.h"

namespace chainlm {

std::string trim_blanks(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

std::vector<std::string> split_list(const std::string& s, const std::string& what) {
  const std::string whole = trim_blanks(s);
  CHAINLM_CHECK(whole.empty() || whole.back() != ',', what, ": '", s, "' ends with a comma");
  std::vector<std::string> items;
  if (whole.empty()) return items;
  for (size_t from = 0;;) {
    const size_t comma = whole.find(',', from);
    items.push_back(trim_blanks(
        whole.substr(from, comma == std::string::npos ? std::string::npos : comma - from)));
    if (comma == std::string::npos) return items;
    from = comma + 1;
  }
}

}  // namespace chainlm
