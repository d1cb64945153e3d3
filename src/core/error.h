#pragma once
// The one error type of chainlm. Every failure caused by user input (configs, files,
// prompts, command lines) throws chainlm::Error with a message that names what was wrong
// and where; the CLI prints it and exits non-zero.
#include <sstream>
#include <stdexcept>
#include <string>

namespace chainlm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
inline void format_to(std::ostringstream&) {}
template <typename T, typename... Rest>
void format_to(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  format_to(os, rest...);
}
}  // namespace detail

// Concatenates its arguments with operator<< into one message.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  detail::format_to(os, args...);
  return os.str();
}

template <typename... Args>
[[noreturn]] void fail(const Args&... args) {
  throw Error(cat(args...));
}

}  // namespace chainlm

// CHAINLM_CHECK(cond, "message parts", ...) throws chainlm::Error when cond is false.
#define CHAINLM_CHECK(cond, ...)             \
  do {                                       \
    if (!(cond)) ::chainlm::fail(__VA_ARGS__); \
  } while (0)
