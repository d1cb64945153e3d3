#include "kernels/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/threads.h"

namespace chainlm {

namespace {

constexpr size_t kQ8Bytes = 2 + kQuantBlock;      // 34
constexpr size_t kQ4Bytes = 2 + kQuantBlock / 2;  // 18

void put_scale(uint8_t* block, float d) {
  const uint16_t h = fp16_from_float(d);
  std::memcpy(block, &h, 2);
}

float get_scale(const uint8_t* block) {
  uint16_t h;
  std::memcpy(&h, block, 2);
  return float_from_fp16(h);
}

// x[0..n) of one block, zero-padded to 32.
void load_block(const float* x, long n, float* v) {
  for (long i = 0; i < kQuantBlock; ++i) v[i] = i < n ? x[i] : 0.0f;
}

void quantize_block_q8_0(const float* v, uint8_t* block) {
  float amax = 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) amax = std::max(amax, std::fabs(v[i]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  put_scale(block, d);
  auto* q = reinterpret_cast<int8_t*>(block + 2);
  for (int i = 0; i < kQuantBlock; ++i)
    q[i] = static_cast<int8_t>(std::round(v[i] * id));  // half away from zero, as llama.cpp
}

// Q4_0 level of x for scale d (inverse id): clamp(floor(x / d + 8.5), 0, 15) - 8. Truncated,
// then clamped as an integer, which is the same (truncation and floor differ only below 0,
// where both clamp to 0) and, unlike float clamps, lets GCC vectorize the search below. The
// caller keeps |x / d| small (d >= max|x| / 64), so the conversion cannot overflow.
inline float q4_0_level(float x, float id) {
  int k = static_cast<int>(x * id + 8.5f);
  k = k < 0 ? 0 : k;
  k = k > 15 ? 15 : k;
  return static_cast<float>(k - 8);
}

// The candidate scales Q4_0's search tries per block, a multiple of 16 (the vector lanes).
constexpr int kQ4Candidates = 48;

// What each candidate scale d[c] leaves: the weighted squared error of the codes it gives, and
// the two sums of its least-squares scale for those codes (sum w x q / sum w q^2). The inner
// loop runs over candidates, each with its own sums: it vectorizes without reassociating any
// sum (the search evaluates 96 scales per block: this is the quantizer's whole cost).
void q4_0_fits(const float* v, const float* w, const float* __restrict d, float* __restrict sse,
               float* __restrict xq, float* __restrict qq) {
  float id[kQ4Candidates];
  for (int c = 0; c < kQ4Candidates; ++c) {
    id[c] = d[c] != 0.0f ? 1.0f / d[c] : 0.0f;
    sse[c] = xq[c] = qq[c] = 0.0f;
  }
  for (int i = 0; i < kQuantBlock; ++i) {
    const float x = v[i], wi = w[i];
    for (int c = 0; c < kQ4Candidates; ++c) {
      const float q = q4_0_level(x, id[c]);
      const float e = x - d[c] * q;
      sse[c] += wi * e * e;
      xq[c] += wi * x * q;
      qq[c] += wi * q * q;
    }
  }
}

// llama.cpp's rule maps the element of largest magnitude m to -8 (d = m / -8). Sixteen levels
// are few, so the scale is chosen instead as the one of least squared error among that rule,
// m mapped to +7 (d = m / 7), both shrunk by up to 20% in steps of 1% (the largest element then
// clamps by about a step at most), and, for each of these, the least-squares scale of the codes
// it gave (sum x q / sum q^2, the best d for those codes; codes recomputed for it, which can
// only lower the error again): the same format, decoded the same way, with less error per block.
void quantize_block_q4_0(const float* v, const float* w, uint8_t* block) {
  float amax = 0.0f, m = 0.0f;  // the element of largest magnitude, with its sign
  for (int i = 0; i < kQuantBlock; ++i)
    if (std::fabs(v[i]) > amax) {
      amax = std::fabs(v[i]);
      m = v[i];
    }
  // Candidates as stored (fp16): the scale the codes must be computed for. The first is the
  // rule; unused slots, and scales below amax / 64 (or not numbers: a least-squares scale of
  // degenerate codes), repeat it (a tie never replaces the best).
  const auto fp16 = [](float d) { return float_from_fp16(fp16_from_float(d)); };
  const auto usable = [&](float d) { return std::fabs(d) >= amax / 64.0f; };
  float d[kQ4Candidates], sse[kQ4Candidates], xq[kQ4Candidates], qq[kQ4Candidates];
  int n = 0;
  for (float level : {-8.0f, 7.0f})
    for (int j = 0; j <= 20; ++j) d[n++] = fp16(m / level * (1.0f - 0.01f * j));  // >= amax / 10
  while (n < kQ4Candidates) d[n++] = d[0];
  q4_0_fits(v, w, d, sse, xq, qq);
  float best_d = d[0], best = sse[0];
  const auto keep_best = [&] {  // among the candidates in d, their errors in sse
    for (int c = 0; c < kQ4Candidates; ++c)
      if (sse[c] < best) {
        best = sse[c];
        best_d = d[c];
      }
  };
  keep_best();
  // The least-squares scale of each candidate's codes.
  for (int c = 0; c < kQ4Candidates; ++c) {
    const float ls = qq[c] > 0.0f ? fp16(xq[c] / qq[c]) : d[0];
    d[c] = usable(ls) ? ls : d[0];
  }
  q4_0_fits(v, w, d, sse, xq, qq);
  keep_best();
  uint8_t best_codes[kQuantBlock];
  const float id = best_d != 0.0f ? 1.0f / best_d : 0.0f;
  for (int i = 0; i < kQuantBlock; ++i) best_codes[i] = static_cast<uint8_t>(q4_0_level(v[i], id) + 8.0f);
  put_scale(block, best_d);
  uint8_t* q = block + 2;
  for (int i = 0; i < kQuantBlock / 2; ++i)
    q[i] = static_cast<uint8_t>(best_codes[i] | (best_codes[i + kQuantBlock / 2] << 4));
}

}  // namespace

const char* quant_type_name(QuantType type) {
  return type == QuantType::kQ8_0 ? "q8_0" : "q4_0";
}

QuantType parse_quant_type(const std::string& name) {
  if (name == "q8_0") return QuantType::kQ8_0;
  if (name == "q4_0") return QuantType::kQ4_0;
  fail("quantization type ", name, " is not one of q8_0, q4_0");
}

size_t quant_block_bytes(QuantType type) {
  return type == QuantType::kQ8_0 ? kQ8Bytes : kQ4Bytes;
}

uint16_t fp16_from_float(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t abs = u & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);   // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to infinity
  if (abs < 0x38800000u) {
    // Subnormal half (or zero): the value in units of 2^-24, rounded to nearest even.
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 16777216.0f;  // exact: a power-of-two scaling
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even.
  uint32_t h = ((abs >> 13) - ((127 - 15) << 10));
  const uint32_t rest = abs & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // may carry into the exponent
  return static_cast<uint16_t>(sign | h);
}

float float_from_fp16(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float out;
  if (exp == 0) {
    out = std::ldexp(static_cast<float>(mant), -24);  // zero or subnormal
    return sign ? -out : out;
  }
  const uint32_t u = exp == 31 ? sign | 0x7f800000u | (mant << 13)
                               : sign | ((exp + 127 - 15) << 23) | (mant << 13);
  std::memcpy(&out, &u, 4);
  return out;
}

void quantize_row(QuantType type, const float* x, long K, uint8_t* out, const float* importance) {
  const size_t bytes = quant_block_bytes(type);
  float v[kQuantBlock], w[kQuantBlock];
  for (long b = 0; b * kQuantBlock < K; ++b) {
    load_block(x + b * kQuantBlock, K - b * kQuantBlock, v);
    if (importance)
      load_block(importance + b * kQuantBlock, K - b * kQuantBlock, w);
    else
      std::fill(w, w + kQuantBlock, 1.0f);
    if (type == QuantType::kQ8_0)
      quantize_block_q8_0(v, out + b * bytes);
    else
      quantize_block_q4_0(v, w, out + b * bytes);
  }
}

void dequantize_row(QuantType type, const uint8_t* in, long K, float* out) {
  const size_t bytes = quant_block_bytes(type);
  for (long b = 0; b * kQuantBlock < K; ++b) {
    const uint8_t* block = in + b * bytes;
    const float d = get_scale(block);
    for (long i = 0; i < kQuantBlock && b * kQuantBlock + i < K; ++i) {
      int q;
      if (type == QuantType::kQ8_0)
        q = reinterpret_cast<const int8_t*>(block + 2)[i];
      else
        q = (i < kQuantBlock / 2 ? block[2 + i] & 0x0f : block[2 + i - kQuantBlock / 2] >> 4) - 8;
      out[b * kQuantBlock + i] = d * static_cast<float>(q);
    }
  }
}

void quantize_rows(QuantType type, const float* x, long N, long K, uint8_t* out, const float* importance) {
  const size_t row = quant_row_bytes(type, K);
  parallel_for(N, N * K, [&](long n) { quantize_row(type, x + n * K, K, out + n * row, importance); });
}

}  // namespace chainlm

namespace chainlm {

void check_finite_block_scales(QuantType type, const uint8_t* blocks, size_t bytes, const std::string& where,
                               const std::string& tensor) {
  const size_t block = quant_block_bytes(type);
  for (size_t at = 0; at < bytes; at += block) {
    const float d = float_from_fp16(static_cast<uint16_t>(blocks[at] | blocks[at + 1] << 8));
    CHAINLM_CHECK(std::isfinite(d), where, ": tensor '", tensor, "' has a non-finite block scale (", d,
                  ") in block ", at / block, ": the weights are corrupt");
  }
}

}  // namespace chainlm
