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

}  // namespace chainlm
