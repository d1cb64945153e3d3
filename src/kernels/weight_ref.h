#pragma once
// A weight operand kept in fp32 or in bf16 (docs/precision.md). When both are set, bf16 is
// used: the fp32 copy is then the master weight of a bf16 training run.
#include "kernels/bf16.h"

namespace chainlm {

struct WeightRef {
  const float* f32 = nullptr;
  const bf16_t* bf16 = nullptr;
  // The same operand n elements further on (a column offset into rows of a matrix).
  WeightRef offset(long n) const { return {f32 ? f32 + n : nullptr, bf16 ? bf16 + n : nullptr}; }
};

}  // namespace chainlm
