#pragma once
// Block-quantized weights (docs/quantization.md): llama.cpp's Q8_0 and Q4_0 layouts, so a GGUF
// export copies the blocks as they are. A row of K weights is ceil(K/32) blocks of 32; each
// block holds an fp16 scale d and 32 small integers q, the weight being d*q:
//   Q8_0  34 bytes: d, then q[0..31] as int8; d = max|x| / 127, q = round(x / d).
//   Q4_0  18 bytes: d, then 16 bytes whose low nibbles are q[0..15] and high nibbles q[16..31],
//         stored as q+8 in 0..15; d = m / -8 where m is the element of largest magnitude (so
//         it maps to -8 exactly), q = clamp(round(x / d), -8, 7).
// A row whose length is not a multiple of 32 is padded with zeros to whole blocks (chainlm's
// chain blocks need not be 32-aligned; GGUF export then keeps such tensors in f16).
#include <cstddef>
#include <cstdint>
#include <string>

namespace chainlm {

enum class QuantType { kQ8_0, kQ4_0 };

constexpr int kQuantBlock = 32;

// "q8_0" / "q4_0", and back (throws naming the accepted names).
const char* quant_type_name(QuantType type);
QuantType parse_quant_type(const std::string& name);

// Bytes of one block, and of a row of K weights (whole blocks).
size_t quant_block_bytes(QuantType type);
inline size_t quant_blocks(long K) {
  return static_cast<size_t>((K + kQuantBlock - 1) / kQuantBlock);
}
inline size_t quant_row_bytes(QuantType type, long K) {
  return quant_blocks(K) * quant_block_bytes(type);
}

// IEEE half precision: rounding to nearest even (overflow to infinity), and exact widening.
uint16_t fp16_from_float(float x);
float float_from_fp16(uint16_t h);

// The reference conversions, one row: quantize K floats into quant_row_bytes(type, K) bytes
// (the last block zero-padded); dequantize them back into K floats. `importance` (K
// non-negative floats, or null for all ones) weighs each column's squared error in Q4_0's
// choice of block scale: a matrix fed by an RMSNorm passes its gains squared (model_quant.cpp),
// so columns the gain amplifies are kept more exactly. Q8_0 ignores it (max-abs rule).
void quantize_row(QuantType type, const float* x, long K, uint8_t* out,
                  const float* importance = nullptr);
void dequantize_row(QuantType type, const uint8_t* in, long K, float* out);

// Throws, naming `where` and `tensor`, when a block's fp16 scale is not finite (stored blocks
// from a checkpoint or GGUF file: a corrupt file, as a non-finite fp32 weight would be).
void check_finite_block_scales(QuantType type, const uint8_t* blocks, size_t bytes, const std::string& where,
                               const std::string& tensor);

// Rows of an (N, K) matrix, one after another (threads over rows).
void quantize_rows(QuantType type, const float* x, long N, long K, uint8_t* out,
                   const float* importance = nullptr);

// The activation side of a quantized GEMM: a row of K floats as Q8_0 blocks (as llama.cpp
// quantizes activations for its Q8_0 and Q4_0 dot products), zero-padded to whole blocks.
inline void quantize_activation_row(const float* x, long K, uint8_t* out) {
  quantize_row(QuantType::kQ8_0, x, K, out);
}

}  // namespace chainlm
