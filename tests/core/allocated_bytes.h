#pragma once
// What the program has allocated, for tests that check a memory estimate: the resident set in
// ordinary builds; under AddressSanitizer, whose allocator maps and fills memory its own way
// (fresh pages it knows are zero stay untouched), the allocator's own count of live bytes.
#include <cstdint>

#include "core/memory.h"

#if defined(__SANITIZE_ADDRESS__)
#define CHAINLM_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CHAINLM_TEST_ASAN 1
#endif
#endif

#ifdef CHAINLM_TEST_ASAN
#include <cstddef>
// From the sanitizer allocator's public interface (<sanitizer/allocator_interface.h>, which
// gcc does not install; libasan exports the function).
extern "C" std::size_t __sanitizer_get_current_allocated_bytes();
#endif

namespace chainlm::testing {

inline uint64_t allocated_bytes() {
#ifdef CHAINLM_TEST_ASAN
  return __sanitizer_get_current_allocated_bytes();
#else
  return current_rss_bytes();
#endif
}

}  // namespace chainlm::testing
