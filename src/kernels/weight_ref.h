#pragma once
// A weight operand kept in fp32, in bf16 (docs/precision.md) or block-quantized (quant.h,
// docs/quantization.md). When several are set the narrowest is used: bf16 over fp32 (the fp32
// copy is then the master weight of a bf16 training run); a quantized weight has no other form.
#include <cstdint>

#include "core/error.h"
#include "kernels/bf16.h"
#include "kernels/quant.h"

namespace chainlm {

struct WeightRef {
  const float* f32 = nullptr;
  const bf16_t* bf16 = nullptr;
  const uint8_t* quant = nullptr;  // rows of quant_row_bytes(quant_type, row length) bytes
  QuantType quant_type = QuantType::kQ8_0;

  // The same operand n elements further on (a column offset into rows of a matrix). A
  // quantized row can only be entered at a block boundary.
  WeightRef offset(long n) const {
    WeightRef r{f32 ? f32 + n : nullptr, bf16 ? bf16 + n : nullptr, nullptr, quant_type};
    if (quant) {
      CHAINLM_CHECK(n % kQuantBlock == 0, "a quantized weight is entered at column ", n,
                    ", inside a block of ", kQuantBlock);
      r.quant = quant + (n / kQuantBlock) * quant_block_bytes(quant_type);
    }
    return r;
  }
  // The same operand n rows further on, rows of ld elements (a quantized row of
  // quant_row_bytes(quant_type, ld) bytes).
  WeightRef rows(long n, int ld) const {
    WeightRef r{f32 ? f32 + n * ld : nullptr, bf16 ? bf16 + n * ld : nullptr, nullptr, quant_type};
    if (quant) r.quant = quant + n * (long)quant_row_bytes(quant_type, ld);
    return r;
  }
};

}  // namespace chainlm
