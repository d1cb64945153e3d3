// gemm.h's ThreadInvariantProducts: products in tiles fixed by their shapes, taken by the threads
// as they free up. A tile runs on one thread (omp_set_num_threads(1) for its task: oneDNN's
// primitive is made for one thread, OpenBLAS sees the region and runs on the caller, the
// engine's own kernels stay serial), so its bits are those of the same tile on any count.
#include <omp.h>

#include <algorithm>
#include <exception>
#include <vector>

#include "kernels/bf16.h"
#include "kernels/gemm.h"
#include "kernels/job_inputs.h"

namespace chainlm {

namespace {

thread_local bool t_invariant = false;

// A tile: 256 rows (a 512-token prompt in two) by 128 output columns (a CoLM [2,2,2,2] 30M
// model's chain block of q, o or w2: CoLM-Air's chain-1 prefill still has tiles for two threads).
// The 30M models' 512-token bf16 prefill (2 threads, AVX-512) took 105-111 ms with tiles of
// 512 x 128, 128 x 128 or 512 x 64, 109 with these, 119 with 256 x 64; on the AVX2 path (OpenBLAS)
// the tiled and the library-threaded prefill measured alike within the host's noise
// (bench/RESULTS.md, "Prefill passes in tiles").
constexpr int kTileRows = 256, kTileCols = 128;

// Jobs [j0, j1) write the same C: later ones add onto the earlier ones' results (a running sum
// over a weight's column blocks, infer/head_logits.cpp), so one tile runs them all, in order.
struct Tile {
  int j0, j1, m0, m1, n0, n1;
};

// The forms whose products the libraries compute (the quantized and panel kernels are the
// engine's own, whose threads split output columns only: invariant already).
bool library_form(const GemmNtJob& g) {
  return !g.B.quant && !g.B.panels;
}

bool same_output(const GemmNtJob& a, const GemmNtJob& b) {
  return a.C == b.C && a.ldc == b.ldc && a.N == b.N;
}

}  // namespace

ThreadInvariantProducts::ThreadInvariantProducts() : previous_(t_invariant) {
  t_invariant = true;
}
ThreadInvariantProducts::~ThreadInvariantProducts() {
  t_invariant = previous_;
}
bool thread_invariant_products() {
  return t_invariant;
}

bool gemm_nt_tiles(const GemmNtJob* jobs, int n) {
  if (!t_invariant || n == 0) return false;
  bool large = false;
  for (int j = 0; j < n; ++j) {
    if (!library_form(jobs[j]) || jobs[j].then) return false;
    // Past the few-row kernels: fp32 products from kMaxStreamedRows rows on, bf16 ones on
    // oneDNN's bf16 kernels from kMaxDecodeRows.
    const bool native_bf16 = jobs[j].B.bf16 && bf16_gemm_native();
    large = large || jobs[j].M > (native_bf16 ? kMaxDecodeRows : kMaxStreamedRows);
  }
  if (!large) return false;
  // The calling thread's list, reused from call to call; the region's threads read it through
  // this reference (by name they would see their own, empty, thread_local).
  thread_local std::vector<Tile> list;
  std::vector<Tile>& tiles = list;
  tiles.clear();
  for (int j0 = 0; j0 < n;) {
    int j1 = j0 + 1, M = jobs[j0].M;
    while (j1 < n && same_output(jobs[j0], jobs[j1])) M = std::max(M, jobs[j1++].M);
    const int N = jobs[j0].N;
    for (int m0 = 0; m0 < M; m0 += kTileRows)
      for (int n0 = 0; n0 < N; n0 += kTileCols)
        tiles.push_back({j0, j1, m0, std::min(M, m0 + kTileRows), n0, std::min(N, n0 + kTileCols)});
    j0 = j1;
  }
  const RoundedOperands& operands = round_bf16_operands(jobs, n);
  const std::vector<RoundedRows>& rounded = operands.of;
  // On the emulated bf16 path the rounded inputs are widened once here, all together, not by
  // every tile (11% of a bf16 prefill when each tile widened its own rows).
  thread_local std::vector<float> wide_buffer;
  thread_local std::vector<const float*> wide;
  wide.assign(n, nullptr);
  if (!bf16_gemm_native() && operands.size > 0) {
    wide_buffer.resize(operands.size);
    from_bf16(operands.buffer, wide_buffer.data(), operands.size);
    for (int j = 0; j < n; ++j)
      if (rounded[j].rows) wide[j] = wide_buffer.data() + (rounded[j].rows - operands.buffer);
  }
  const std::vector<const float*>& widened = wide;
  std::exception_ptr error;
#pragma omp parallel
  {
    omp_set_num_threads(1);  // for this region's task only
#pragma omp for schedule(dynamic, 1)
    for (int t = 0; t < (int)tiles.size(); ++t) {
      const Tile& tile = tiles[t];
      try {
        for (int j = tile.j0; j < tile.j1; ++j) {
          const GemmNtJob& g = jobs[j];
          const int m1 = std::min(tile.m1, g.M), rows = m1 - tile.m0, cols = tile.n1 - tile.n0;
          if (rows <= 0) continue;
          float* C = g.C + (long)tile.m0 * g.ldc + tile.n0;
          if (widened[j])
            gemm_nt_bf16_widened(rows, cols, g.K, widened[j] + (long)tile.m0 * rounded[j].ld,
                                 rounded[j].ld, g.B.bf16 + (long)tile.n0 * g.ldb, g.ldb, C, g.ldc,
                                 g.beta);
          else if (rounded[j].rows)
            gemm_nt_bf16(rows, cols, g.K, rounded[j].rows + (long)tile.m0 * rounded[j].ld,
                         rounded[j].ld, g.B.bf16 + (long)tile.n0 * g.ldb, g.ldb, C, g.ldc, g.beta);
          else
            gemm_nt(rows, cols, g.K, g.A + (long)tile.m0 * g.lda, g.lda,
                    g.B.f32 + (long)tile.n0 * g.ldb, g.ldb, C, g.ldc, g.beta);
        }
      } catch (...) {
#pragma omp critical(chainlm_gemm_tiles_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
  return true;
}

}  // namespace chainlm
