// The quantized GEMM for many rows of A (prefill, evaluation): C = A · dequant(B)^T with A's rows
// quantized to Q8_0 blocks (gemm_quant.cpp), B in Q4_0 or Q8_0 blocks.
//
// The few-row kernel (gemm_quant.cpp) gives each output C[m,n] its own register of eight int32
// partial sums per block, then converts, scales and accumulates them: about six instructions
// per 32 multiply-adds, more than fp32 FMAs need for the same work, so many rows would run
// slower in integers than in fp32. Here the eight int32 lanes are eight weight rows instead:
// a group of 8 weight rows is repacked once per GEMM so that one 32-byte vector holds codes
// 4g..4g+3 of each of the 8 rows (lane j = row j), and each row of A meets it through a
// broadcast of its own 4 activations 4g..4g+3. Eight such products cover a block for 8 columns
// at once; their 16-bit sums stay exact for Q4_0 (16 products of at most 15 x 127 fit in int16)
// so they widen once per block, and the block's scales, 8 weight scales in one vector times
// the activation's, are applied by one multiply and one FMA for the 8 columns. That is about 2
// instructions per 32 multiply-adds for Q4_0 (4 for Q8_0, whose signed weights need the sign
// trick and a widening per product), which is what lets 4-bit weights prefill faster than fp32.
//
// The repacking (codes unpacked to bytes, scales to floats) costs one pass over the group's
// blocks, shared by all M rows; the repacked group (8 x K bytes of codes, plus Q8_0's signs)
// stays in L1 while the rows of A pass, kTileRows at a time, each with its own accumulator of
// the 8 columns.
#include <algorithm>
#include <vector>

#include "core/error.h"
#include "core/threads.h"
#include "kernels/gemm_quant_rows.h"

namespace chainlm {

#if defined(CHAINLM_QUANT_AVX2)

namespace {

constexpr int kGroup = 8;    // weight rows per group: AVX2's int32 lanes
constexpr int kTileRows = 8;  // rows of A per pass over a repacked group
constexpr int kGroupBytes = kGroup * kQuantBlock;  // codes of one block of a group

// A group of 8 weight rows, repacked: per block b, the 8 scales as floats (d[b*8 + j]), and the
// codes as 8 vectors of 32 bytes (codes[b*256 + g*32 + j*4 + t] = code 4g+t of row j): Q4_0's
// nibbles 0..15 (the weight plus 8); Q8_0's |w|, with w itself in `signs` (its sign goes onto
// the activations: the u8 x s8 instructions need one unsigned side).
struct Group {
  std::vector<float> d;
  std::vector<uint8_t> codes;
  std::vector<int8_t> signs;
};

// Rows of 8 int32 lanes in, columns out: out[g] lane j = in[j] lane g.
inline void transpose8x8(const __m256i in[8], __m256i* out) {
  __m256i t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_epi32(in[i], in[i + 1]);
    t[i + 1] = _mm256_unpackhi_epi32(in[i], in[i + 1]);
  }
  for (int i = 0; i < 8; i += 4)
    for (int h = 0; h < 2; ++h) {
      u[i + h] = _mm256_unpacklo_epi64(t[i + h], t[i + h + 2]);
      u[i + h + 2] = _mm256_unpackhi_epi64(t[i + h], t[i + h + 2]);
    }
  // u[h] holds lane L[h] of rows 0..3 in its low half and lane L[h] + 4 in its high half;
  // u[h + 4] the same of rows 4..7.
  constexpr int L[4] = {0, 2, 1, 3};
  for (int h = 0; h < 4; ++h) {
    _mm256_storeu_si256(out + L[h], _mm256_permute2x128_si256(u[h], u[h + 4], 0x20));
    _mm256_storeu_si256(out + L[h] + 4, _mm256_permute2x128_si256(u[h], u[h + 4], 0x31));
  }
}

template <QuantType T>
void repack(const uint8_t* B, size_t b_row, int n, int rows, int nb, Group& g) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18;
  // Every element is written below (rows past `rows`: zero codes, zero scale): no clearing.
  g.d.resize((size_t)nb * kGroup);
  g.codes.resize((size_t)nb * kGroupBytes);
  if (T == QuantType::kQ8_0) g.signs.resize((size_t)nb * kGroupBytes);
  for (int b = 0; b < nb; ++b) {
    __m256i v[kGroup], w[kGroup];
    for (int j = 0; j < kGroup; ++j) {
      if (j >= rows) {
        v[j] = w[j] = _mm256_setzero_si256();
        g.d[(size_t)b * kGroup + j] = 0.0f;
        continue;
      }
      const uint8_t* block = B + (size_t)(n + j) * b_row + b * wb;
      g.d[(size_t)b * kGroup + j] = scale_of(block);
      if constexpr (T == QuantType::kQ8_0) {
        w[j] = weights_q8_0(block);
        v[j] = _mm256_sign_epi8(w[j], w[j]);
      } else {
        v[j] = nibbles_q4_0(block);
      }
    }
    // Row j's codes 4q..4q+3 are its int32 lane q: a transpose puts them in lane j of vector q.
    transpose8x8(v, reinterpret_cast<__m256i*>(g.codes.data() + (size_t)b * kGroupBytes));
    if constexpr (T == QuantType::kQ8_0)
      transpose8x8(w, reinterpret_cast<__m256i*>(g.signs.data() + (size_t)b * kGroupBytes));
  }
}

inline __m256i broadcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// The block product of one activation row with the group's 8 rows, as 8 int32 lanes.
template <QuantType T>
inline __m256i block_dot(const __m256i* codes, const __m256i* signs, const int8_t* qa, int32_t sum8) {
  if constexpr (T == QuantType::kQ4_0) {
    // 16-bit sums: 8 products of 2 x (15 x 127) at most, 30,480 < 32,767.
    __m256i p[kQuantBlock / 4];
    for (int q = 0; q < kQuantBlock / 4; ++q)
      p[q] = _mm256_maddubs_epi16(_mm256_loadu_si256(codes + q), broadcast4(qa + 4 * q));
    // A tree of additions: three dependent steps rather than seven.
    const __m256i s16 = _mm256_add_epi16(_mm256_add_epi16(_mm256_add_epi16(p[0], p[1]), _mm256_add_epi16(p[2], p[3])),
                                         _mm256_add_epi16(_mm256_add_epi16(p[4], p[5]), _mm256_add_epi16(p[6], p[7])));
    return _mm256_sub_epi32(_mm256_madd_epi16(s16, _mm256_set1_epi16(1)), _mm256_set1_epi32(sum8));
  } else {
    // 127 x 127 x 2 per 16-bit lane: widened after every product.
    __m256i s32 = _mm256_setzero_si256();
    for (int q = 0; q < kQuantBlock / 4; ++q) {
      const __m256i sa = _mm256_sign_epi8(broadcast4(qa + 4 * q), _mm256_loadu_si256(signs + q));
      s32 = _mm256_add_epi32(s32, _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_loadu_si256(codes + q), sa), _mm256_set1_epi16(1)));
    }
    return s32;
  }
}

// The rows of A as the kernel reads them: in tiles of kTileRows rows (the last padded with zero
// rows), per block the tile's codes (kTileRows x 32 bytes), then its scales, then its sums of
// codes times 8, so one pointer walks a tile's blocks with constant offsets.
constexpr int kTileBlockBytes = kTileRows * (kQuantBlock + 4 + 4);

void pack_rows(const QuantizedRows& a, int M, std::vector<uint8_t>& out) {
  const int tiles = (M + kTileRows - 1) / kTileRows;
  out.resize((size_t)tiles * a.nb * kTileBlockBytes);
  uint8_t* base = out.data();
  // The padding rows of the last tile are zeros (codes, scales and sums); the rest is copied.
  if (M % kTileRows != 0)
    std::memset(base + (size_t)(tiles - 1) * a.nb * kTileBlockBytes, 0, (size_t)a.nb * kTileBlockBytes);
#pragma omp parallel for schedule(static) if ((long)M * a.nb * kQuantBlock >= kParallelMinWork)
  for (int m = 0; m < M; ++m) {
    const int t = m / kTileRows, i = m % kTileRows;
    for (int b = 0; b < a.nb; ++b) {
      uint8_t* tb = base + ((size_t)t * a.nb + b) * kTileBlockBytes;
      std::memcpy(tb + i * kQuantBlock, a.q_row(m) + b * kQuantBlock, kQuantBlock);
      std::memcpy(tb + kTileRows * kQuantBlock + 4 * i, a.d_row(m) + b, 4);
      std::memcpy(tb + kTileRows * (kQuantBlock + 4) + 4 * i, a.sum8_row(m) + b * kSumLanes, 4);
    }
  }
}

// One tile of rows of A against the repacked group: C[m+i, n..n+cols) for i < rows.
template <QuantType T>
void group_tile(const Group& g, const uint8_t* tile, int nb, int m, int rows, float* C, int ldc, int n, int cols,
                float beta) {
  __m256 acc[kTileRows];
  for (int i = 0; i < kTileRows; ++i) acc[i] = _mm256_setzero_ps();
  const auto* codes = reinterpret_cast<const __m256i*>(g.codes.data());
  const auto* signs = reinterpret_cast<const __m256i*>(g.signs.data());
  for (int b = 0; b < nb; ++b, tile += kTileBlockBytes) {
    const __m256i* cb = codes + (size_t)b * (kQuantBlock / 4);
    const __m256i* sb = T == QuantType::kQ8_0 ? signs + (size_t)b * (kQuantBlock / 4) : nullptr;
    const __m256 dw = _mm256_loadu_ps(g.d.data() + (size_t)b * kGroup);
    const auto* qa = reinterpret_cast<const int8_t*>(tile);
    const auto* da = reinterpret_cast<const float*>(tile + kTileRows * kQuantBlock);
    const auto* sa = reinterpret_cast<const int32_t*>(tile + kTileRows * (kQuantBlock + 4));
    for (int i = 0; i < kTileRows; ++i) {
      const __m256i dot = block_dot<T>(cb, sb, qa + i * kQuantBlock, sa[i]);
      acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(dw, _mm256_broadcast_ss(da + i)), acc[i]);
    }
  }
  for (int i = 0; i < rows; ++i) {
    float* c = C + (long)(m + i) * ldc + n;
    alignas(32) float out[kGroup];
    _mm256_store_ps(out, acc[i]);
    for (int j = 0; j < cols; ++j) c[j] = beta == 0.0f ? out[j] : out[j] + beta * c[j];
  }
}

#if defined(CHAINLM_QUANT_AVX512)
// The same with AVX-512 VNNI: vpdpbusd multiplies and accumulates straight into int32 lanes, so
// a block needs neither 16-bit partial sums nor their widening, and one 512-bit register covers
// the group's 8 rows twice over: int32 lane 2j holds row j's codes 8p..8p+3 and lane 2j+1 its
// codes 8p+4..8p+7 for pair p (repacked so), and a broadcast of 8 activation bytes meets both.
// Four such products cover a block; each row's two lanes are summed after the last block. Both
// types take the same kernel: a code is the weight plus an offset (8 for Q4_0's nibbles, 128
// for Q8_0, which makes its signed weights unsigned), taken off once per block through the
// activations' sum (offset x sum(q) = sum8 x offset / 8). About 13 instructions per 256
// multiply-adds against about 28 in the AVX2 kernel above.
struct WideGroup {
  std::vector<float> d;         // per block, 16 floats: row j's scale in lanes 2j and 2j+1
  std::vector<uint8_t> codes;   // per block, 4 vectors of 64 bytes (pair p: 8 bytes per row)
};

template <QuantType T>
void repack_wide(const uint8_t* B, size_t b_row, int n, int rows, int nb, WideGroup& g) {
  constexpr size_t wb = T == QuantType::kQ8_0 ? 34 : 18;
  g.d.resize((size_t)nb * 2 * kGroup);
  g.codes.resize((size_t)nb * kGroupBytes);
  for (int b = 0; b < nb; ++b) {
    uint8_t* dst = g.codes.data() + (size_t)b * kGroupBytes;
    for (int j = 0; j < kGroup; ++j) {
      float dw = 0.0f;  // rows past `rows`: zero scale (and zero codes), so zero output
      __m256i c = _mm256_setzero_si256();
      if (j < rows) {
        const uint8_t* block = B + (size_t)(n + j) * b_row + b * wb;
        dw = scale_of(block);
        c = T == QuantType::kQ8_0 ? _mm256_xor_si256(weights_q8_0(block), _mm256_set1_epi8(char(0x80)))
                                  : nibbles_q4_0(block);
      }
      g.d[(size_t)b * 2 * kGroup + 2 * j] = g.d[(size_t)b * 2 * kGroup + 2 * j + 1] = dw;
      alignas(32) uint64_t parts[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(parts), c);
      for (int p = 0; p < 4; ++p) std::memcpy(dst + p * 64 + j * 8, &parts[p], 8);
    }
  }
}

template <QuantType T>
void group_tile_wide(const WideGroup& g, const uint8_t* tile, int nb, int m, int rows, float* C, int ldc, int n,
                     int cols, float beta) {
  constexpr int32_t kOffsetPer8 = T == QuantType::kQ8_0 ? 16 : 1;  // offset / 8
  __m512 acc[kTileRows];
  for (int i = 0; i < kTileRows; ++i) acc[i] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b, tile += kTileBlockBytes) {
    const uint8_t* cb = g.codes.data() + (size_t)b * kGroupBytes;
    const __m512i c0 = _mm512_loadu_si512(cb), c1 = _mm512_loadu_si512(cb + 64),
                  c2 = _mm512_loadu_si512(cb + 128), c3 = _mm512_loadu_si512(cb + 192);
    const __m512 dw = _mm512_loadu_ps(g.d.data() + (size_t)b * 2 * kGroup);
    const auto* qa = reinterpret_cast<const int8_t*>(tile);
    const auto* da = reinterpret_cast<const float*>(tile + kTileRows * kQuantBlock);
    const auto* sa = reinterpret_cast<const int32_t*>(tile + kTileRows * (kQuantBlock + 4));
    for (int i = 0; i < kTileRows; ++i) {
      const int8_t* a = qa + i * kQuantBlock;
      auto eight = [&](int p) {
        int64_t v;
        std::memcpy(&v, a + 8 * p, 8);
        return _mm512_set1_epi64(v);
      };
      // The offset's share, taken off row j's even lane from the start.
      __m512i dot = _mm512_maskz_set1_epi32(0x5555, -sa[i] * kOffsetPer8);
      dot = _mm512_dpbusd_epi32(dot, c0, eight(0));
      dot = _mm512_dpbusd_epi32(dot, c1, eight(1));
      dot = _mm512_dpbusd_epi32(dot, c2, eight(2));
      dot = _mm512_dpbusd_epi32(dot, c3, eight(3));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, _mm512_set1_ps(da[i])), acc[i]);
    }
  }
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 0, 0, 0, 0, 0, 0, 0, 0);
  for (int i = 0; i < rows; ++i) {
    float* c = C + (long)(m + i) * ldc + n;
    alignas(32) float out[kGroup];
    _mm256_store_ps(out, _mm256_add_ps(_mm512_castps512_ps256(_mm512_permutexvar_ps(evens, acc[i])),
                                       _mm512_castps512_ps256(_mm512_permutexvar_ps(odds, acc[i]))));
    for (int j = 0; j < cols; ++j) c[j] = beta == 0.0f ? out[j] : out[j] + beta * c[j];
  }
}

template <QuantType T>
void gemm_groups_wide(int n0, int n1, int M, int nb, const uint8_t* packed, const uint8_t* B, size_t b_row,
                      float* C, int ldc, float beta) {
  thread_local WideGroup g;
  for (int n = n0; n < n1; n += kGroup) {
    const int cols = std::min(kGroup, n1 - n);
    repack_wide<T>(B, b_row, n, cols, nb, g);
    for (int m = 0; m < M; m += kTileRows)
      group_tile_wide<T>(g, packed + (size_t)(m / kTileRows) * nb * kTileBlockBytes, nb, m,
                         std::min(kTileRows, M - m), C, ldc, n, cols, beta);
  }
}
#endif

template <QuantType T>
void gemm_groups(int n0, int n1, int M, int nb, const uint8_t* packed, const uint8_t* B, size_t b_row, float* C,
                 int ldc, float beta) {
  thread_local Group g;  // each thread's own (this runs inside the parallel region)
  for (int n = n0; n < n1; n += kGroup) {
    const int cols = std::min(kGroup, n1 - n);
    repack<T>(B, b_row, n, cols, nb, g);
    for (int m = 0; m < M; m += kTileRows)
      group_tile<T>(g, packed + (size_t)(m / kTileRows) * nb * kTileBlockBytes, nb, m, std::min(kTileRows, M - m),
                    C, ldc, n, cols, beta);
  }
}

}  // namespace

bool gemm_quant_interleaved_available() { return true; }

void gemm_quant_interleaved(QuantType type, int M, int N, const QuantizedRows& a, const uint8_t* B, size_t b_row,
                            float* C, int ldc, float beta, [[maybe_unused]] bool widest) {
  thread_local std::vector<uint8_t> packed_rows;
  pack_rows(a, M, packed_rows);
  const uint8_t* packed = packed_rows.data();  // taken here: the region's threads have their own
  // Threads take whole groups of 8 weight rows.
  const int groups = (N + kGroup - 1) / kGroup;
  for_column_ranges(groups, (long)M * N * a.nb * kQuantBlock / 4, [&](int g0, int g1) {
    const int n0 = g0 * kGroup, n1 = std::min(N, g1 * kGroup);
#if defined(CHAINLM_QUANT_AVX512)
    if (widest) {
      if (type == QuantType::kQ4_0)
        gemm_groups_wide<QuantType::kQ4_0>(n0, n1, M, a.nb, packed, B, b_row, C, ldc, beta);
      else
        gemm_groups_wide<QuantType::kQ8_0>(n0, n1, M, a.nb, packed, B, b_row, C, ldc, beta);
      return;
    }
#endif
    if (type == QuantType::kQ4_0)
      gemm_groups<QuantType::kQ4_0>(n0, n1, M, a.nb, packed, B, b_row, C, ldc, beta);
    else
      gemm_groups<QuantType::kQ8_0>(n0, n1, M, a.nb, packed, B, b_row, C, ldc, beta);
  });
}

#else

bool gemm_quant_interleaved_available() { return false; }

void gemm_quant_interleaved(QuantType, int, int, const QuantizedRows&, const uint8_t*, size_t, float*, int, float,
                            bool) {
  fail("gemm_quant_interleaved: this build has no AVX2 kernel for it");
}

#endif

}  // namespace chainlm
