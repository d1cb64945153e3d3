#pragma once
// Per-chain RMSNorm (SPEC A3): every chain slice of a row is normalized by its own mean
// square, so output chain i depends on input chain i only (whole-row RMSNorm would break
// chain causality). With one chain it is the ordinary LLaMA RMSNorm.
//   x, y  are (M, split.prefix(k)) with row strides ldx, ldy
//   gain  is (split.total())
//   rstd  is (M, split.n()): 1/sqrt(mean(x_chain^2) + eps), saved for backward
#include "kernels/bf16.h"
#include "kernels/chain_split.h"

namespace chainlm {

void rmsnorm_forward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                     const float* gain, float eps, float* y, int ldy, float* rstd);
// The same with y rounded to bf16 as it is written (bit for bit to_bf16_rows of the fp32 y): in
// a bf16 training step the normalized rows are GEMM inputs only.
void rmsnorm_forward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                     const float* gain, float eps, bf16_t* y, int ldy, float* rstd);

// dx += d/dx, dgain += d/dgain (dgain may be null: frozen gains).
void rmsnorm_backward(const ChainSplit& split, int k, int M, const float* x, int ldx,
                      const float* gain, const float* rstd, const float* dy, int lddy, float* dx,
                      int lddx, float* dgain);

}  // namespace chainlm
