#include "core/json_document.h"

#include <set>
#include <vector>

#include "core/error.h"

namespace chainlm {

std::string json_error_reason(const std::exception& e) {
  std::string what = e.what();
  const size_t close = what.find("] ");
  if (what.rfind("[json.exception", 0) == 0 && close != std::string::npos) what.erase(0, close + 2);
  return what;
}

nlohmann::json parse_json_noting_duplicates(const std::string& text, std::string* duplicate,
                                            std::string* last_key) {
  using Event = nlohmann::json::parse_event_t;
  // Each object being read, innermost last: the keys seen so far, the last of them, and where the
  // object is ("logit_bias": a duplicate inside it is named "logit_bias.0", not "0").
  struct Open {
    std::set<std::string> keys;
    std::string last, path;
  };
  std::vector<Open> open;
  duplicate->clear();
  auto check_keys = [&](int, Event event, nlohmann::json& parsed) {
    if (event == Event::object_start) {
      std::string path;
      if (!open.empty())
        path =
            open.back().path.empty() ? open.back().last : open.back().path + "." + open.back().last;
      open.push_back({{}, "", path});
    } else if (event == Event::object_end) {
      if (!open.empty()) open.pop_back();
    } else if (event == Event::key && !open.empty()) {
      Open& o = open.back();
      o.last = parsed.get<std::string>();
      const std::string named = o.path.empty() ? o.last : o.path + "." + o.last;
      if (duplicate->empty() && !o.keys.insert(o.last).second) *duplicate = named;
      if (last_key) *last_key = named;
    }
    return true;
  };
  return nlohmann::json::parse(text, check_keys);  // strict: trailing content is an error
}

nlohmann::json parse_json_document(const std::string& text, const std::string& where) {
  std::string duplicate;
  nlohmann::json j;
  try {
    j = parse_json_noting_duplicates(text, &duplicate);
  } catch (const nlohmann::json::exception& e) {
    fail(where, ": invalid JSON: ", json_error_reason(e));
  }
  CHAINLM_CHECK(duplicate.empty(), where, ": key '",
                duplicate.size() > 80 ? duplicate.substr(0, 80) + "..." : duplicate,
                "' is given twice in one object; which value is meant cannot be told");
  return j;
}

}  // namespace chainlm
