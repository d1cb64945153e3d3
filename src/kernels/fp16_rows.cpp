#include "kernels/fp16_rows.h"

#include "kernels/quant.h"
#include "kernels/simd.h"

namespace chainlm {

void fp16_from_floats_portable(const float* src, uint16_t* dst, long n) {
  for (long i = 0; i < n; ++i) dst[i] = fp16_from_float(src[i]);
}

void floats_from_fp16_portable(const uint16_t* src, float* dst, long n) {
  for (long i = 0; i < n; ++i) dst[i] = float_from_fp16(src[i]);
}

void fp16_from_floats(const float* src, uint16_t* dst, long n) {
  long i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  fp16_from_floats_portable(src + i, dst + i, n - i);
}

void floats_from_fp16(const uint16_t* src, float* dst, long n) {
  long i = 0;
#if defined(__F16C__)
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  floats_from_fp16_portable(src + i, dst + i, n - i);
}

}  // namespace chainlm
