#pragma once
// The playground page served at GET /: src/serve/playground.html, embedded at build time
// (cmake/embed_file.cmake) so the binary ships it.
#include <string_view>

namespace chainlm {

std::string_view playground_html();

}  // namespace chainlm
