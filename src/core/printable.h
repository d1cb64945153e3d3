#pragma once
// Text from files and requests, made safe for a terminal or a log line: control bytes (and DEL)
// become \xNN, so a GGUF name holding ESC [2J does not clear the screen and a request path
// holding a newline does not forge a second log line; so do the bytes of invalid UTF-8, so the
// line stays UTF-8 (log pipelines reject or mangle others). Characters pass as they are.
#include <string>
#include <string_view>

namespace chainlm {

// `also` lists printable characters escaped too (the log's quotes).
std::string printable(std::string_view text, std::string_view also = "");

// A word to paste into a POSIX shell: `text` as it is when it holds only characters no shell
// reads specially, else in single quotes (a quote inside as '\''). For commands chainlm
// suggests ("Continue with: chainlm train --out 'my run' --resume").
std::string shell_word(std::string_view text);

}  // namespace chainlm
