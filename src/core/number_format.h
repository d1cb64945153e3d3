#pragma once
// Numbers as chainlm's tables and reports print them.
#include <string>

namespace chainlm {

// 1234567 -> "1,234,567".
std::string thousands(long v);
// A parameter or token count in millions or thousands: 1234567 -> "1.23M", 45600 -> "45.6K".
std::string short_count(long n);
// n and the noun, plural unless n is 1: (1, "chain") -> "1 chain", (3, "chain") -> "3 chains".
std::string count_of(long n, const std::string& noun);
// v with `digits` decimals; "—" for a value that is not finite (a loss never measured).
std::string fixed(double v, int digits);

}  // namespace chainlm
