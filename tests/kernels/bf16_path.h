// Chooses which of the bf16 GEMMs' two paths a test runs: bf16 instructions where the CPU has
// them (AVX512-BF16 dot products, oneDNN; for every size, whatever their rate on this CPU), or
// rounded operands through the fp32 kernels (what CPUs without them run; forced here so that every
// machine tests it). Restores the CPU's own path when it goes out of scope.
#pragma once

#include "kernels/gemm.h"

namespace chainlm::test {

struct Bf16Path {
  explicit Bf16Path(bool emulated) {
    set_bf16_gemm_path(emulated ? Bf16GemmPath::Emulated : Bf16GemmPath::Instructions);
  }
  ~Bf16Path() { set_bf16_gemm_path(Bf16GemmPath::Auto); }
  Bf16Path(const Bf16Path&) = delete;
  Bf16Path& operator=(const Bf16Path&) = delete;
};

}  // namespace chainlm::test
