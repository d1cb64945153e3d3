#pragma once
// Rows of IEEE half-precision values (the 16-bit KV cache, infer/kv_cache.h): conversions of n
// values with F16C where the build has it, bit-identical to quant.h's scalar fp16_from_float
// (round to nearest even, overflow to infinity) and float_from_fp16 (exact) for every value
// but NaN payloads (a NaN stays a NaN).
#include <cstdint>

namespace chainlm {

void fp16_from_floats(const float* src, uint16_t* dst, long n);
void floats_from_fp16(const uint16_t* src, float* dst, long n);

// The scalar loops alone (what builds without F16C run; the tests compare the two).
void fp16_from_floats_portable(const float* src, uint16_t* dst, long n);
void floats_from_fp16_portable(const uint16_t* src, float* dst, long n);

}  // namespace chainlm
