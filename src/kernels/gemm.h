#pragma once
// Row-major sgemm wrappers over the GEMM backend (gemm_backend.h: oneDNN or OpenBLAS) and the
// few-row kernels of decoding. Every GEMM of the engine goes through
// these three so the transposition conventions live in one place.
namespace chainlm {

// C(M,N) = A(M,K) · B(N,K)^T + beta*C     (B stored row-major as N rows of K: a weight)
void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);
// C(M,N) = A(M,K) · B(K,N) + beta*C
void gemm_nn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);
// C(M,N) = A(K,M)^T · B(K,N) + beta*C     (weight gradients: dW = dY^T X)
void gemm_tn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);

}  // namespace chainlm
