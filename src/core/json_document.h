#pragma once
// JSON files chainlm reads as settings (model configs), parsed strictly. nlohmann's stream
// reader stops after the first value, so `{...} garbage` or a second object went unseen, and a
// key given twice silently took its last value: a config edited by hand could train another
// model than the one its first "dim" says. Here both are errors naming the file.
#include <nlohmann/json.hpp>
#include <string>

namespace chainlm {

// Parses text as one JSON value with nothing but whitespace after it and no object holding a
// key twice; throws chainlm::Error "<where>: invalid JSON: ..." or "<where>: key 'k' is given
// twice ...".
nlohmann::json parse_json_document(const std::string& text, const std::string& where);

// The parsing of both: nlohmann's exceptions as they come, and the first key given twice in
// one object in *duplicate ("" when none), with the keys of the objects around it
// ("logit_bias.0", "messages.role": arrays add nothing).
// *last_key, when given, is the last key read, named the same way: the field whose value a
// parse error stopped in, most often (a number too large for a double).
nlohmann::json parse_json_noting_duplicates(const std::string& text, std::string* duplicate,
                                            std::string* last_key = nullptr);

// What a JSON library error says without nlohmann's "[json.exception.parse_error.101] " tag:
// "parse error at line 1, column 9: ...". Other exceptions' messages as they are.
std::string json_error_reason(const std::exception& e);

}  // namespace chainlm
