#pragma once
// Row-major C(M,N) = op(A) op(B) + beta C on oneDNN's matmul primitive (gemm_backend.h);
// internal to the kernels. op(A) = A (M x K, rows lda apart) or, transa, A^T with A K x M;
// op(B) = B (K x N) or, transb, B^T with B N x K.
#include "kernels/bf16.h"

namespace chainlm {

void onednn_sgemm(bool transa, bool transb, int M, int N, int K, const float* A, int lda,
                  const float* B, int ldb, float* C, int ldc, float beta);
// The same with A and B in bf16 and C in fp32 (fp32 accumulation): oneDNN's bf16 matmul, for
// CPUs with bf16 instructions (gemm_bf16.cpp decides).
void onednn_bf16_gemm(bool transa, bool transb, int M, int N, int K, const bf16_t* A, int lda,
                      const bf16_t* B, int ldb, float* C, int ldc, float beta);

}  // namespace chainlm
