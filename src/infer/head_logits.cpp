#include "infer/head_logits.h"

#include <cmath>

#include "core/error.h"

namespace chainlm {

void head_logits(const Model& model, int n, const int* chains, const float* xn, int ldx,
                 float* logits, int ldl, std::vector<GemmNtJob>& jobs) {
  if (n == 0) return;
  const ChainSplit& dim = model.layout().dim;
  const int V = model.config().vocab_size, D = model.config().dim, k_max = chains[0];
  for (int r = 1; r < n; ++r)
    CHAINLM_CHECK(chains[r] <= chains[r - 1],
                  "head_logits: rows must come largest sub-model first");
  const WeightRef head = model.head();
  bool running = true;
  for (int i = 0; i < k_max && head.quant; ++i) running &= dim.begin(i) % kQuantBlock == 0;
  jobs.clear();
  if (!running) {
    for (int r = 0; r < n;) {
      int count = 1;
      while (r + count < n && chains[r + count] == chains[r]) ++count;
      jobs.push_back({count, V, dim.prefix(chains[r]), xn + (long)r * ldx, ldx, head, D,
                      logits + (long)r * ldl, ldl, 0.0f});
      r += count;
    }
  } else {
    // Chain i's columns for the rows using more than i chains (a prefix of the rows), added to
    // the logits of the chains before it: jobs of one C run in order on each thread's columns.
    for (int i = 0; i < k_max; ++i) {
      int rows = 0;
      while (rows < n && chains[rows] > i) ++rows;
      const int c0 = dim.begin(i);
      jobs.push_back({rows, V, dim.width(i), xn + c0, ldx, head.offset(c0), D, logits, ldl,
                      i == 0 ? 0.0f : 1.0f});
    }
  }
  gemm_nt_jobs(jobs.data(), (int)jobs.size());
}

void check_final_norm(const float* rstd, int M, int n, int k) {
  for (int r = 0; r < M; ++r)
    for (int c = 0; c < k; ++c) {
      const float s = rstd[(long)r * n + c];
      CHAINLM_CHECK(s > 0.0f && std::isfinite(s),
                    "the model's hidden state overflows float (its final norm's sum of squares is ",
                    std::isnan(s) ? "NaN" : "infinite", "): a weight holds NaN or a value near ",
                    "float's range (a corrupt file, or a run that diverged)");
    }
}

}  // namespace chainlm
