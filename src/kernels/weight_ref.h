#pragma once
// A weight operand kept in fp32, in bf16 (docs/precision.md), block-quantized (quant.h,
// docs/quantization.md) or in fp32 panels (gemm_panels.h: an fp32 inference model's matrices).
// When several are set the narrowest is used: bf16 over fp32 (the fp32 copy is then the master
// weight of a bf16 training run), panels over plain fp32 (a tied embedding keeps its rows for
// the lookup); a quantized weight has no other form.
#include <cstdint>

#include "core/error.h"
#include "kernels/bf16.h"
#include "kernels/gemm_panels.h"
#include "kernels/quant.h"

namespace chainlm {

struct WeightRef {
  const float* f32 = nullptr;
  const bf16_t* bf16 = nullptr;
  const uint8_t* quant = nullptr;  // rows of quant_row_bytes(quant_type, row length) bytes
  QuantType quant_type = QuantType::kQ8_0;
  const float* panels = nullptr;  // the panels holding row panel_row, in [0, kPanel)
  int panel_row = 0;

  // The same operand n elements further on (a column offset into rows of a matrix). A
  // quantized row can only be entered at a block boundary.
  WeightRef offset(long n) const {
    WeightRef r{f32 ? f32 + n : nullptr,
                bf16 ? bf16 + n : nullptr,
                nullptr,
                quant_type,
                panels ? panels + n * kPanel : nullptr,
                panel_row};
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
    if (panels) {
      const long row = panel_row + n;
      r.panels = panels + row / kPanel * ld * (long)kPanel;
      r.panel_row = (int)(row % kPanel);
    }
    return r;
  }
};

}  // namespace chainlm
