#include "core/precision.h"

#include "core/error.h"

namespace chainlm {

Precision parse_precision(const std::string& name) {
  if (name == "fp32") return Precision::Fp32;
  if (name == "bf16") return Precision::Bf16;
  fail("unknown precision \"", name, "\": use fp32 or bf16");
}

const char* precision_name(Precision p) { return p == Precision::Bf16 ? "bf16" : "fp32"; }

}  // namespace chainlm
