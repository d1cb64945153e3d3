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

// Q4_0 codes of a block for scale d: clamp(floor(x / d + 8.5), 0, 15) (q = code - 8), with the
// squared error they leave.
double q4_0_codes(const float* v, const float* w, float d, uint8_t* codes) {
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  double sse = 0;
  for (int i = 0; i < kQuantBlock; ++i) {
    codes[i] = static_cast<uint8_t>(std::clamp(static_cast<int>(std::floor(v[i] * id + 8.5f)), 0, 15));
    const double e = v[i] - static_cast<double>(d) * (codes[i] - 8);
    sse += w[i] * e * e;
  }
  return sse;
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
  uint8_t codes[kQuantBlock], best_codes[kQuantBlock];
  // The scale as stored (fp16) is the one the codes must be computed for.
  float best_d = float_from_fp16(fp16_from_float(m / -8.0f));
  double best = q4_0_codes(v, w, best_d, best_codes);
  const auto consider = [&](float d) {
    d = float_from_fp16(fp16_from_float(d));
    const double sse = q4_0_codes(v, w, d, codes);
    if (sse < best) {
      best = sse;
      best_d = d;
      std::copy(codes, codes + kQuantBlock, best_codes);
    }
  };
  for (float level : {-8.0f, 7.0f})
    for (int j = 0; j <= 20; ++j) {
      consider(m / level * (1.0f - 0.01f * j));
      double xq = 0, qq = 0;  // codes of this candidate (in `codes` whether kept or not)
      for (int i = 0; i < kQuantBlock; ++i) {
        const int q = codes[i] - 8;
        xq += static_cast<double>(w[i]) * v[i] * q;
        qq += static_cast<double>(w[i]) * q * q;
      }
      if (qq > 0) consider(static_cast<float>(xq / qq));
    }
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
