#pragma once
// SwiGLU gate: g = silu(a) * b, elementwise.
//   a, b, g are (M, width) with row stride ld (the FFN inner width of the active chains)
#include "kernels/bf16.h"

namespace chainlm {

void swiglu_forward(int M, int width, const float* a, const float* b, float* g, int ld);
// da, db are overwritten (not accumulated): they are the only consumers' gradients.
void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, float* da,
                     float* db, int ld);

// The same with the outputs rounded to bf16 as they are written, bit for bit what to_bf16_rows
// gives on the fp32 outputs: in a bf16 training step they are GEMM inputs only, and rounding
// them here saves writing them in fp32 and a pass that reads them back (bench/RESULTS.md).
void swiglu_forward(int M, int width, const float* a, const float* b, bf16_t* g, int ld);
void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, bf16_t* da,
                     bf16_t* db, int ld);

}  // namespace chainlm
