#pragma once
// <immintrin.h> for the kernels' hand-vectorized paths (AVX-512 where the build targets it).
// GCC 12 reports its own _mm512_undefined_ps() pass-through operands as (maybe-)uninitialized,
// so its diagnostics are silenced around the header only, never around the kernels' code.
#if defined(__x86_64__) || defined(__i386__)
#if defined(__clang__)
#include <immintrin.h>
#else
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif
#endif
