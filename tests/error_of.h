#pragma once
// The message of the chainlm::Error a call throws, for tests that check what an error says.
#include <string>

#include "core/error.h"

namespace chainlm::test {

// e.what() of the chainlm::Error that f throws; "" when it throws none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace chainlm::test
