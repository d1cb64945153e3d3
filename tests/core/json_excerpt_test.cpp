// JSON values quoted in error messages: bounded depth and length, whatever the value.
#include "core/json_excerpt.h"

#include <gtest/gtest.h>

#include <string>

namespace chainlm {
namespace {

using nlohmann::json;

TEST(JsonExcerpt, SmallValuesAreTheirDump) {
  for (const char* text : {"3", "-2.5", "1e+300", "\"abc\"", "null", "true", "[]", "{}",
                           R"([1, "a", {"k": [2]}])"}) {
    const json v = json::parse(text);
    EXPECT_EQ(json_excerpt(v), v.dump()) << text;
  }
  EXPECT_EQ(json_excerpt(json::parse(R"({"a": 1, "b": [true, null]})")),
            R"({"a":1,"b":[true,null]})");
}

// Regression of fuzzing findings: dump() recursed once per level and overflowed the stack on a
// deeply nested value quoted in an error message.
TEST(JsonExcerpt, DeepNestingIsElidedWithoutRecursingThroughIt) {
  const int depth = 1000000;
  const json v = json::parse(std::string(depth, '[') + std::string(depth, ']'));
  EXPECT_EQ(json_excerpt(v), "[[[[[[[[[...]]]]]]]]]");
  EXPECT_EQ(json_excerpt(json::parse("[[[[[[[[[]]]]]]]]]")), "[[[[[[[[[]]]]]]]]]");
}

TEST(JsonExcerpt, LongValuesAreCut) {
  const std::string long_string(1000, 'x');
  EXPECT_EQ(json_excerpt(json(long_string), 20), "\"" + std::string(19, 'x') + "...");
  json many = json::array();
  for (int i = 0; i < 10000; ++i) many.push_back(i);
  const std::string e = json_excerpt(many, 50);
  EXPECT_EQ(e.size(), 53u);
  EXPECT_EQ(e.substr(0, 7), "[0,1,2,");
  EXPECT_EQ(e.substr(50), "...");
}

TEST(JsonExcerpt, InvalidUtf8BuiltInMemoryIsReplaced) {
  EXPECT_EQ(json_excerpt(json(std::string("a\xff"))), "\"a\xEF\xBF\xBD\"");
}

}  // namespace
}  // namespace chainlm
