# Writes a C++ source defining `std::string_view chainlm::FUNCTION()` that returns the bytes of
# file IN, so a file a person edits (e.g. src/serve/playground.html) ships inside the binary.
# Usage: cmake -DIN=file -DOUT=file.cpp -DFUNCTION=name -P embed_file.cmake
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" hex_length)
math(EXPR size "${hex_length} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${hex}")
# Twenty bytes per line keeps the generated file readable in a diff or an editor.
string(REGEX REPLACE "(('[^']+',){20})" "\\1\n    " bytes "${bytes}")
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp"
"// Generated from ${name} by cmake/embed_file.cmake at build time: edit ${name} instead.
#include <string_view>

namespace chainlm {

namespace {
const char kBytes[${size} + 1] = {
    ${bytes}'\\0'};
}  // namespace

std::string_view ${FUNCTION}() { return std::string_view(kBytes, ${size}); }

}  // namespace chainlm
")
file(RENAME "${OUT}.tmp" "${OUT}")
