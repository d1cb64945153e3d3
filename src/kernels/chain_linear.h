#pragma once
// Chain-of-Linear (SPEC A2): output chain i sees input chains 0..i only.
//   x  is (M, in.prefix(k)) with row stride ldx
//   w[i] is (out.width(i), in.end(i)), row-major: block i of the block lower-triangular weight
//   y  is (M, out.prefix(k)) with row stride ldy
// k is the number of active chains (sub-model k). Every block is one GEMM over a growing
// input prefix; no zero-filled dense weight exists anywhere.
#include <initializer_list>
#include <vector>

#include "kernels/chain_split.h"
#include "kernels/gemm.h"

namespace chainlm {

struct ChainLinear {
  ChainSplit in, out;
};

// y[:, chain i] = x[:, :in.end(i)] · w[i]^T + beta * y[:, chain i] for i < k.
// beta = 1 adds onto y (fuses a residual connection into the GEMM).
void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const float* const* w, float* y, int ldy, float beta = 0.0f);
// The same over blocks in fp32 or bf16 (gemm.h WeightRef: bf16 blocks make bf16 GEMMs).
void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const WeightRef* w, float* y, int ldy, float beta = 0.0f);

// One output of the shared-input form below: y (+)= x · w^T over blocks i < k.
struct ChainLinearOutput {
  const ChainLinear* cl;
  int k;
  const WeightRef* w;
  float* y;
  int ldy;
  float beta = 0.0f;
};
// Several Chain-of-Linears of one input x (the q, k and v projections; w1 and w3): with at most
// kMaxDecodeRows rows every block of every one in one parallel region (gemm_nt_jobs), otherwise
// chain_linear_forward for each. The same bits either way.
void chain_linear_forward(int M, const float* x, int ldx,
                          std::initializer_list<ChainLinearOutput> outs);
// Appends chain_linear_forward's block products to jobs (for gemm_nt_jobs).
void chain_linear_jobs(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                       const WeightRef* w, float* y, int ldy, float beta,
                       std::vector<GemmNtJob>& jobs);

// The same with x already rounded to bf16 (rows ldx apart), for bf16 blocks only: an activation
// that feeds several Chain-of-Linears is rounded once (the model's bf16 training step).
void chain_linear_forward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                          const WeightRef* w, float* y, int ldy, float beta = 0.0f);

// dx[:, :in.end(i)] += dy[:, chain i] · w[i]       (skipped when dx is null; with
//                                                  dx_overwrite the active columns of dx
//                                                  are overwritten instead of accumulated)
// dw[i] += dy[:, chain i]^T · x[:, :in.end(i)]      (skipped for null dw[i]: a frozen block)
// With first = f > 0 (chain tuning, SPEC A7: chains < f frozen) blocks i < f are skipped
// entirely and dx is computed only for the input columns >= in.prefix(f): by chain causality
// the frozen chains' activations depend on frozen parameters only, so their gradients are
// never needed. Those dx columns are left untouched; with f >= k nothing is done.
void chain_linear_backward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                           const float* const* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite = false, int first = 0);
// The same over blocks in fp32 or bf16: with bf16 blocks every product is a bf16 GEMM (dy, x
// rounded to bf16; weight gradients still accumulate in fp32).
void chain_linear_backward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                           const WeightRef* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite = false, int first = 0);
// The same with x already in bf16 (bf16 blocks only); dy is rounded once for all blocks.
void chain_linear_backward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                           const WeightRef* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite = false, int first = 0);
// The same with dy in bf16 too (its producer rounded it as it wrote it: SwiGLU's backward).
// Column c of dy is the output column c (the active blocks' columns; those below
// out.prefix(first) are not read).
void chain_linear_backward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                           const WeightRef* w, const bf16_t* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite = false, int first = 0);

}  // namespace chainlm
