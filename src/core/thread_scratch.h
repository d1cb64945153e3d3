#pragma once
// Per-thread buffers that only grow, for kernels that need temporary space on every call and
// run on several threads at once: after warm-up the hot paths never allocate. Each kernel names
// its own Owner type, so two kernels never share a buffer (one may hold its operands in its
// buffer while it calls the other), and `slot` tells one kernel's buffers apart. Buffers start on
// a cache line (core/aligned_vector.h). What a buffer held is kept only while no call asks that
// slot for more. Take the pointer outside an OpenMP region and hand it in: inside, each thread
// would get its own buffer.
#include <cstddef>

#include "core/aligned_vector.h"

namespace chainlm {

template <typename T, typename Owner, int Slots = 1>
T* thread_scratch(int slot, std::size_t n) {
  static_assert(Slots >= 1);
  thread_local AlignedVector<T> buf[Slots];
  if (buf[slot].size() < n) buf[slot].resize(n);
  return buf[slot].data();
}

}  // namespace chainlm
