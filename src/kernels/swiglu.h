#pragma once
// SwiGLU gate: g = silu(a) * b, elementwise.
//   a, b, g are (M, width) with row stride ld (the FFN inner width of the active chains)
namespace chainlm {

void swiglu_forward(int M, int width, const float* a, const float* b, float* g, int ld);
// da, db are overwritten (not accumulated): they are the only consumers' gradients.
void swiglu_backward(int M, int width, const float* a, const float* b, const float* dg, float* da,
                     float* db, int ld);

}  // namespace chainlm
