#pragma once
// The number format of a run's GEMM operands (docs/precision.md): fp32, or bf16 (bf16
// weights and GEMM inputs, fp32 accumulation; norms, softmax, residual stream and loss in fp32).
#include <string>

namespace chainlm {

enum class Precision { Fp32, Bf16 };

// "fp32" / "bf16"; anything else throws, naming the valid values.
Precision parse_precision(const std::string& name);
const char* precision_name(Precision p);

}  // namespace chainlm
