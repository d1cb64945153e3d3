#pragma once
// AdamW over a ParamStore with global gradient-norm clipping. Owns the moment buffers
// (laid out like the parameters, so they checkpoint under the parameters' names).
#include "core/aligned_vector.h"
#include "kernels/adamw.h"
#include "model/param_store.h"

namespace chainlm {

struct OptimizerConfig {
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
  float weight_decay = 0.1f;  // matrices only
  float grad_clip = 1.0f;     // 0 = off
};

class Optimizer {
 public:
  Optimizer(const ParamStore& ps, OptimizerConfig cfg);
  // Global L2 norm of the gradients (fixed-order reduction: bit-reproducible).
  double grad_norm(const ParamStore& ps) const;
  // Clips, then applies AdamW step number `step` (1-based) at learning rate lr. Throws,
  // touching no weight, when the gradient is not finite. Returns the pre-clip norm.
  // Frozen elements (ParamInfo::frozen_cols) are left exactly as they are; the model leaves
  // their gradients at zero, so they do not count in the norm either.
  double step(ParamStore& ps, long step, float lr);
  // The same update given the norm grad_norm(ps) returned (so a caller that checks the norm
  // first does not compute it twice). Throws, touching no weight, when it is not finite.
  void apply(ParamStore& ps, long step, float lr, double norm);

  AlignedVector<float>& m() { return m_; }
  AlignedVector<float>& v() { return v_; }

 private:
  OptimizerConfig cfg_;
  // On 2 MiB pages where the kernel allows (core/aligned_vector.h), as the weights and gradients
  // are: AdamW streams all four once per step, and on 4 KiB pages the moments' TLB misses
  // cost it a third of its time (bench/RESULTS.md, "AdamW's moments on huge pages").
  AlignedVector<float> m_, v_;
};

}  // namespace chainlm
