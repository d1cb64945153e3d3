#pragma once
// gemm_nt_jobs' products grouped by the input they read, for the work done once per input before
// the parallel region (gemm.cpp: rounding it to bf16; gemm_quant.cpp: quantizing it): each
// distinct input once, over the most rows and columns any of its products reads.
#include <algorithm>
#include <cstddef>
#include <vector>

#include "kernels/gemm.h"

namespace chainlm {

struct JobInput {
  const float* A;
  int lda, key, rows = 0, cols = 0;
  size_t at = 0;  // where the caller puts its copy
};

// inputs: the distinct (A, lda, key(job)) among the jobs `reads` takes; input_of[j]: job j's
// index in inputs, or -1.
template <typename Reads, typename Key>
void group_job_inputs(const GemmNtJob* jobs, int n, Reads reads, Key key,
                      std::vector<JobInput>& inputs, std::vector<int>& input_of) {
  inputs.clear();
  input_of.assign(n, -1);
  for (int j = 0; j < n; ++j) {
    const GemmNtJob& g = jobs[j];
    if (!reads(g)) continue;
    const int k = key(g);
    int s = 0;
    while (s < (int)inputs.size() &&
           !(inputs[s].A == g.A && inputs[s].lda == g.lda && inputs[s].key == k))
      ++s;
    if (s == (int)inputs.size()) inputs.push_back({g.A, g.lda, k});
    inputs[s].rows = std::max(inputs[s].rows, g.M);
    inputs[s].cols = std::max(inputs[s].cols, g.K);
    input_of[j] = s;
  }
}

// A product's A rounded to bf16 (rows null: not a bf16 product), ld apart.
struct RoundedRows {
  const bf16_t* rows = nullptr;
  int ld = 0;
};
// For each job with bf16 weights (of[j]), its A rounded to bf16 once per distinct input
// (gemm.cpp), all in one buffer of `size` values. The buffer and the result are the calling
// thread's, valid until its next call.
struct RoundedOperands {
  std::vector<RoundedRows> of;
  const bf16_t* buffer = nullptr;
  size_t size = 0;
};
const RoundedOperands& round_bf16_operands(const GemmNtJob* jobs, int n);

// gemm.h's ThreadInvariantProducts path (gemm_tiles.cpp): false when it does not apply to these
// jobs, which then run as gemm_nt_jobs runs them otherwise.
bool gemm_nt_tiles(const GemmNtJob* jobs, int n);

}  // namespace chainlm
