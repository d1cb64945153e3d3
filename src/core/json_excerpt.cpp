#include "core/json_excerpt.h"

namespace chainlm {

namespace {

constexpr int kMaxDepth = 8;

// Appends v to out until out reaches limit characters; returns false once it has.
bool append(const nlohmann::json& v, int depth, std::size_t limit, std::string& out) {
  if (out.size() >= limit) return false;
  if (!v.is_structured()) {
    out += v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return out.size() < limit;
  }
  const bool array = v.is_array();
  if (depth >= kMaxDepth) {
    out += v.empty() ? (array ? "[]" : "{}") : (array ? "[...]" : "{...}");
    return out.size() < limit;
  }
  out += array ? '[' : '{';
  bool first = true;
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (!first) out += ',';
    first = false;
    if (!array) {
      out += nlohmann::json(it.key()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      out += ':';
    }
    if (!append(it.value(), depth + 1, limit, out)) return false;
  }
  out += array ? ']' : '}';
  return out.size() < limit;
}

}  // namespace

std::string json_excerpt(const nlohmann::json& v, std::size_t max_chars) {
  std::string out;
  if (!append(v, 0, max_chars, out) || out.size() > max_chars) {
    out.resize(std::min(out.size(), max_chars));
    out += "...";
  }
  return out;
}

}  // namespace chainlm
