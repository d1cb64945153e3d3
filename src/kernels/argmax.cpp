#include "kernels/argmax.h"

#include <cmath>

#include "kernels/simd.h"

namespace chainlm {

int first_argmax(const float* x, int n) {
  if (n <= 1 || std::isnan(x[0])) return 0;
  int i = 0;
  float m = x[0];
#if defined(__AVX512F__)
  __m512 m0 = _mm512_set1_ps(m), m1 = m0;
  for (; i + 32 <= n; i += 32) {
    m0 = _mm512_max_ps(_mm512_loadu_ps(x + i), m0);
    m1 = _mm512_max_ps(_mm512_loadu_ps(x + i + 16), m1);
  }
  m = _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
#elif defined(__AVX__)
  __m256 m0 = _mm256_set1_ps(m), m1 = m0;
  for (; i + 16 <= n; i += 16) {
    m0 = _mm256_max_ps(_mm256_loadu_ps(x + i), m0);
    m1 = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), m1);
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
  for (float v : lanes) m = v > m ? v : m;
#endif
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  // The first element equal to it (a zero maximum matches either sign: so does `>` above).
  int j = 0;
#if defined(__AVX512F__)
  const __m512 mv = _mm512_set1_ps(m);
  for (; j + 16 <= n; j += 16)
    if (const __mmask16 eq = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + j), mv, _CMP_EQ_OQ))
      return j + __builtin_ctz(eq);
#elif defined(__AVX__)
  const __m256 mv = _mm256_set1_ps(m);
  for (; j + 8 <= n; j += 8)
    if (const int eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + j), mv, _CMP_EQ_OQ)))
      return j + __builtin_ctz(eq);
#endif
  for (; j < n; ++j)
    if (x[j] == m) return j;
  return 0;  // not reached: m is one of x
}

}  // namespace chainlm
