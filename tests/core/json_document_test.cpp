// Settings files parsed whole: trailing content and a key given twice are errors naming the
// file, while the same key in different objects, and whitespace after the value, are fine.
#include "core/json_document.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "../error_of.h"

namespace chainlm {
namespace {

using test::error_of;

TEST(JsonDocument, ReadsOneValueWithNothingAfterIt) {
  const nlohmann::json j =
      parse_json_document(" {\"a\": [1, {\"b\": 2}], \"c\": {\"b\": 3}} \n\t", "f.json");
  EXPECT_EQ(j["a"][1]["b"], 2);
  EXPECT_EQ(j["c"]["b"], 3);
  // The same key in sibling and nested objects is no repetition.
  EXPECT_NO_THROW(parse_json_document(R"([{"k": 1}, {"k": 2}, {"k": {"k": 3}}])", "f.json"));
  for (const char* text : {"{} x", "{}{}", "[1] 2", "{\"a\": 1}}"}) {
    const std::string what = error_of([&] { parse_json_document(text, "f.json"); });
    EXPECT_EQ(what.rfind("f.json: invalid JSON: ", 0), 0u) << text << ": " << what;
    EXPECT_EQ(what.find("[json.exception"), std::string::npos) << what;
  }
}

TEST(JsonDocument, AKeyGivenTwiceInOneObjectIsRefused) {
  for (const char* text : {R"({"dim": 1, "dim": 2})", R"({"x": {"a": 1, "b": 2, "a": 1}})",
                           R"([0, {"p": {"q": 1}, "p": 2}])"}) {
    const std::string what = error_of([&] { parse_json_document(text, "c.json"); });
    EXPECT_NE(what.find("c.json: key '"), std::string::npos) << text << ": " << what;
    EXPECT_NE(what.find("' is given twice"), std::string::npos) << what;
  }
  // Named with the keys of the objects around it (arrays add nothing).
  for (const auto& [text, key] : std::vector<std::pair<std::string, std::string>>{
           {R"({"dim": 1, "dim": 2})", "dim"},
           {R"({"x": {"a": 1, "b": 2, "a": 1}})", "x.a"},
           {R"({"m": [{"r": 1}, {"r": 1, "r": 2}]})", "m.r"},
           {R"({"a": {"b": {}}, "c": {"d": {"e": 1, "e": 2}}})", "c.d.e"},
           {R"([0, {"p": {"q": 1}, "p": 2}])", "p"}}) {
    std::string duplicate;
    parse_json_noting_duplicates(text, &duplicate);
    EXPECT_EQ(duplicate, key) << text;
  }
  // After a nested object closes, its keys no longer count against the outer one.
  EXPECT_NO_THROW(parse_json_document(R"({"a": {"b": 1}, "b": 2})", "c.json"));
}

}  // namespace
}  // namespace chainlm
