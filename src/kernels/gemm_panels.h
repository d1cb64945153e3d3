#pragma once
// fp32 weights in panels of kPanel output rows (docs/architecture.md "fp32 inference weights in
// panels"): an N x K weight W (row-major, rows K floats apart) is stored as ceil(N / kPanel)
// panels, panel p holding W[p*kPanel + j][k] at p*ld*kPanel + k*kPanel + j (zero past N). A GEMM
// C = A W^T then broadcasts A[r][k] against the panel's row k: kPanel outputs per FMA pair, one
// accumulator per output, the weights read once in order, whatever the number of rows. The
// kernel keeps 8 rows x 32 outputs in registers and ran at the FMA peak (~510 GFLOP/s on the
// 2-core AVX-512 VM, where oneDNN's sgemm reached 190-435 at 64-2048 rows and the few-row
// kernel's dot products ~1 FMA per cycle at 8 rows; bench/RESULTS.md).
//
// Every output sums its products in k order, one fused multiply-add at a time from 0, the same
// for every M, every thread count and every column range: a row's result does not depend on the
// rows beside it (decoding batches stay bit-invariant, gemm.h kMaxDecodeRows), and the portable
// build computes the same bits with std::fma.
#include <cstddef>

namespace chainlm {

constexpr int kPanel = 32;

// Floats the panels of an N x K weight take.
inline std::size_t panel_floats(int N, int K) {
  return (std::size_t)((N + kPanel - 1) / kPanel) * K * kPanel;
}
// Packs W (N x K, rows ldw floats apart) into P (panel_floats(N, K) floats, the tail zeroed).
void pack_panels(int N, int K, const float* W, int ldw, float* P);

// C(M, N) = A(M, K) . W^T + beta C for output columns [col0, col0 + N) of a packed weight whose
// rows are ld floats long: P points at its panels (advanced by k0 * kPanel to start the sums at
// column k0 of its rows, WeightRef::offset). col0 may fall inside a panel.
void gemm_nt_panels(int M, int N, int K, const float* A, int lda, const float* P, int ld, int col0,
                    float* C, int ldc, float beta);

// Thread t's share [n0, n1) of N output columns starting at col0, cut at panel boundaries
// (threads never compute the same panel).
void panel_column_share(int col0, int N, int t, int nt, int* n0, int* n1);

// Whether gemm_nt_panels runs on 512-bit vectors in this build. Models pack their fp32 inference
// weights only then: the portable loop (same bits) is for tests and correctness elsewhere.
bool gemm_panels_native();

}  // namespace chainlm
