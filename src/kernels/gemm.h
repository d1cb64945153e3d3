#pragma once
// Row-major sgemm wrappers over the GEMM backend (gemm_backend.h: oneDNN or OpenBLAS) and the
// few-row kernels of decoding. Every GEMM of the engine goes through
// these three so the transposition conventions live in one place.
#include "kernels/bf16.h"
#include "kernels/quant.h"
#include "kernels/weight_ref.h"

namespace chainlm {

// Decoding steps multiply at most this many rows at once, and gemm_nt with at most this many
// rows is batch-invariant: every row of C gets the same bits as when that row of A is
// multiplied alone, whatever the weight's form (fp32, bf16, quantized). The server batches
// concurrent requests on this (a request's tokens do not depend on who shares its steps).
constexpr int kMaxDecodeRows = 8;
// gemm_nt with up to this many rows (a short prompt, a server's prompt piece) runs the few-row
// kernels over chunks of kMaxDecodeRows rows (fewer when the rows are long: gemm.cpp
// rows_per_pass), the weights read from memory once: 16 rows took a third to two thirds of the
// time of oneDNN's and OpenBLAS's sgemm, which pack the whole weight first; at 32 rows it was
// level or ahead at 1 and 2 threads on AVX2 and AVX-512, at 64 behind on AVX2 and at 1 thread
// (bench/RESULTS.md). Batch-invariant as well.
constexpr int kMaxStreamedRows = 32;
// Weight bytes x rows from which a quantized GEMM, and gemm_nt_jobs, split their columns over the
// threads. Measured (ref30m decode, 2 threads against 1, alternating binaries in one run): q4_0
// 0.96-1.13x with every GEMV split, 1.07-1.26x from 200-300 KB; q8_0 unchanged (its smallest
// GEMV, 278 KB, is still split).
constexpr long kThreadedWeightBytes = 256L * 1024;

// C(M,N) = A(M,K) · B(N,K)^T + beta*C     (B stored row-major as N rows of K: a weight)
void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);
// The same as a bf16 GEMM (gemm_bf16.cpp): B in bf16 (bf16.h) and A rounded to bf16 on the
// way in, the products (exact in fp32) summed in fp32, as bf16 hardware and oneDNN's bf16
// matmul compute it.
void gemm_nt_bf16(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta);
// The fp32 kernels' form of that product for more than kMaxDecodeRows rows, A's values already
// bf16 (rounded and widened): panels of B widened, through gemm_nt. The bits of the emulated
// path (bf16_gemm_native() false); for callers that widen one A for several products.
void gemm_nt_bf16_widened(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb,
                          float* C, int ldc, float beta);
// dx = dy W in bf16: C(M,N) = bf16(A)(M,K) · B(K,N) + beta C, B a bf16 weight.
void gemm_nn_bf16(int M, int N, int K, const float* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta);
// dW = dy^T x in bf16: C(M,N) = bf16(A)(K,M)^T · bf16(B)(K,N) + beta C.
void gemm_tn_bf16(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                  int ldc, float beta);
// The three with A already rounded to bf16 (and, for dW, B too): an operand that feeds several
// products (a Chain-of-Linear's blocks, the two backward GEMMs of one dy, the q/k/v projections
// of one normalized activation) is rounded once by the caller. Same results as the fp32-A forms.
void gemm_nt_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta);
void gemm_nn_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta);
void gemm_tn_bf16(int M, int N, int K, const bf16_t* A, int lda, const bf16_t* B, int ldb, float* C,
                  int ldc, float beta);
// Whether the large bf16 GEMMs (more than kMaxDecodeRows rows) run on oneDNN's bf16 kernels
// rather than as bf16-rounded operands through the fp32 kernels: with AMX, and with AVX512-BF16
// where its dot product outruns the fp32 FMA (bf16_dot_rate.h; not on Intel's Sapphire and
// Emerald Rapids without AMX, where it runs at half the FMA's rate). Few rows (decoding) run on
// bf16 dot products wherever the CPU has them.
bool bf16_gemm_native();
// Which path the bf16 GEMMs take: the CPU's choice above (Auto); rounded operands through the
// fp32 kernels for every size (Emulated: what CPUs without bf16 instructions run); or bf16
// instructions for every size wherever the CPU has them, whatever their rate (Instructions).
// Tests force each, so every machine tests both paths its CPU can run.
enum class Bf16GemmPath { Auto, Emulated, Instructions };
// Whether oneDNN, held to its ISA (ONEDNN_MAX_CPU_ISA lowers it), has bf16 instructions
// (AVX512-BF16 or AMX), whether or not bf16_gemm_native takes them for large GEMMs.
bool has_bf16_instructions();
void set_bf16_gemm_path(Bf16GemmPath p);

// The same with B block-quantized (quant.h; gemm_quant.cpp): B's rows are
// quant_row_bytes(type, ldb) bytes apart and K <= ldb. Each row of A is quantized to Q8_0 on the
// way in (as llama.cpp does), the block products are exact integer dot products, scaled and
// summed in fp32: few rows (decoding) one weight row at a time, many rows (prefill) through the
// interleaved kernel (gemm_quant_interleaved.cpp).
void gemm_nt_quant(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                   int ldb, float* C, int ldc, float beta);
// Whether gemm_nt_quant multiplies M rows of A unquantized, by weight panels dequantized to
// fp32 through the fp32 GEMM: builds without AVX2 (no interleaved kernel) from 16 rows on.
bool gemm_quant_dequantizes(int M);
// That path, whatever the build (tests run it on every machine).
void gemm_nt_quant_via_fp32(int M, int N, int K, const float* A, int lda, QuantType type, const uint8_t* B,
                            int ldb, float* C, int ldc, float beta);
// The integer path on the portable C++ dot products, whatever the build's SIMD and whatever M
// (tests run both).
void gemm_nt_quant_portable(int M, int N, int K, const float* A, int lda, QuantType type,
                            const uint8_t* B, int ldb, float* C, int ldc, float beta);
// The few-row path on its 256-bit (AVX2) kernel even where the build has the 512-bit one, which
// gives the same bits (tests run both; without AVX2 in the build this is the portable path).
void gemm_nt_quant_avx2(int M, int N, int K, const float* A, int lda, QuantType type,
                        const uint8_t* B, int ldb, float* C, int ldc, float beta);

// gemm_nt on whichever form the weight B has (weight_ref.h).
inline void gemm_nt(int M, int N, int K, const float* A, int lda, WeightRef B, int ldb, float* C,
                    int ldc, float beta) {
  if (B.quant)
    gemm_nt_quant(M, N, K, A, lda, B.quant_type, B.quant, ldb, C, ldc, beta);
  else if (B.bf16)
    gemm_nt_bf16(M, N, K, A, lda, B.bf16, ldb, C, ldc, beta);
  else if (B.panels)
    gemm_nt_panels(M, N, K, A, lda, B.panels, ldb, B.panel_row, C, ldc, beta);
  else
    gemm_nt(M, N, K, A, lda, B.f32, ldb, C, ldc, beta);
}
// One gemm_nt product, for gemm_nt_jobs.
struct GemmNtJob {
  int M, N, K;
  const float* A;
  int lda;
  WeightRef B;
  int ldb;
  float* C;
  int ldc;
  float beta;
  // If set, called on the thread that computed them once C's columns [n0, n1) (of N) are final,
  // for all M rows: element-wise work on the product's output done there needs neither a pass
  // of one thread over C afterwards nor a barrier (a batched decoding step's SwiGLU).
  void (*then)(const GemmNtJob& job, int n0, int n1, const void* ctx) = nullptr;
  const void* then_ctx = nullptr;
  // Which thread takes the larger share when the columns do not split evenly among the
  // threads (a CoLM FFN block of 11 panels): rotated by `turn`, so that a region of such
  // products (a chain block's index as its turn) does not give every extra panel to one thread.
  int turn = 0;
};
// Independent gemm_nt products, the same bits as run one by one. When every one has at most
// kMaxDecodeRows rows (a decoding step's q, k and v projections, a Chain-of-Linear's blocks)
// they share one parallel region, each thread taking its share of every product's columns (of
// a weight in panels, whole panels): a region costs 3-4 us on the VMs measured, and a decoding
// step entered one per weight block. Jobs with the same N, weight form and turn split their
// columns alike and run in order on each thread, so later ones may add (beta 1) into an
// earlier one's C: a running sum over a weight's column blocks (infer/head_logits.h), and a
// job's `then` may read the same columns of an earlier one's C.
void gemm_nt_jobs(const GemmNtJob* jobs, int n);

// While one lives on a thread, that thread's gemm_nt_jobs (and chain_linear_forward) whose
// products the libraries would compute (fp32 with more than kMaxStreamedRows rows, bf16 on
// oneDNN's bf16 kernels with more than kMaxDecodeRows) run their fp32 and bf16 products in tiles
// fixed by the products' shapes alone (gemm_tiles.cpp), each tile computed by one thread, the
// threads taking tiles as they free up. Their bits then do not depend on the thread count
// (OpenBLAS's and oneDNN's own threading split the work, and on OpenBLAS the sums, by it), and a
// thread that a busy process holds off its core delays a region by one tile, not by its whole
// share. Inference sessions hold one while they run a pass (infer/session.cpp); training does not
// (its products keep the libraries' threading: tiles were measured for inference only, and a
// training run resumes bit-identically on its own thread count anyway).
class ThreadInvariantProducts {
 public:
  ThreadInvariantProducts();
  ~ThreadInvariantProducts();
  ThreadInvariantProducts(const ThreadInvariantProducts&) = delete;
  ThreadInvariantProducts& operator=(const ThreadInvariantProducts&) = delete;

 private:
  bool previous_;
};
bool thread_invariant_products();

// C(M,N) = A(M,K) · B(K,N) + beta*C
void gemm_nn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);
// C(M,N) = A(K,M)^T · B(K,N) + beta*C     (weight gradients: dW = dY^T X)
void gemm_tn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
             int ldc, float beta);

}  // namespace chainlm
