#pragma once
// std::vector storage that starts on a cache line, and for large buffers on a 2 MiB boundary
// with transparent huge pages requested (madvise). malloc puts large blocks 16 bytes past a page
// start, so every "64-byte aligned" tensor inside such a buffer was 16 bytes off a cache line and
// each 64-byte vector load of a weight row touched two lines: decoding the 30M model (a GEMV
// per weight) ran 1.8x slower for it on an AVX-512 CPU (bench/RESULTS.md, issue 20). Huge pages
// spare the TLB a miss per 4 KiB of weights streamed (where the kernel's THP setting allows it).
#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <vector>

namespace chainlm {

template <class T>
struct AlignedAllocator {
  using value_type = T;
  static constexpr std::size_t kLine = 64;
  static constexpr std::size_t kHugePage = std::size_t(2) << 20;

  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U>&) {}

  T* allocate(std::size_t n) {
    // No object may exceed PTRDIFF_MAX bytes, rounding up included (which also tells the
    // compiler the size it passes on is in range).
    if (n > (std::size_t(PTRDIFF_MAX) - kHugePage) / sizeof(T)) throw std::bad_array_new_length();
    const std::size_t bytes = n * sizeof(T);
    const std::size_t align = bytes >= kHugePage ? kHugePage : kLine;
    const std::size_t rounded = (bytes + align - 1) / align * align;  // aligned_alloc's rule
    void* p = std::aligned_alloc(align, rounded == 0 ? align : rounded);
    if (!p) throw std::bad_alloc();
    if (align == kHugePage) ::madvise(p, rounded, MADV_HUGEPAGE);  // a hint: failure is harmless
    return static_cast<T*>(p);
  }
  void deallocate(T* p, std::size_t) { std::free(p); }

  template <class U>
  bool operator==(const AlignedAllocator<U>&) const { return true; }
  template <class U>
  bool operator!=(const AlignedAllocator<U>&) const { return false; }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace chainlm
