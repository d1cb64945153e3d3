#include "train/optimizer.h"

#include <cmath>

#include "core/error.h"

namespace chainlm {

Optimizer::Optimizer(const ParamStore& ps, OptimizerConfig cfg)
    : cfg_(cfg), m_(ps.size(), 0.0f), v_(ps.size(), 0.0f) {}

double Optimizer::grad_norm(const ParamStore& ps) const {
  const float* g = ps.grads();
  const long n = (long)ps.size();
  constexpr int kChunks = 64;
  double partial[kChunks];
#pragma omp parallel for schedule(static)
  for (int c = 0; c < kChunks; ++c) {
    const long b = n * c / kChunks, e = n * (c + 1) / kChunks;
    double s = 0.0;
    // In vector lanes (a fixed order for a given chunk: the norm is the same on every run).
#pragma omp simd reduction(+ : s)
    for (long i = b; i < e; ++i) s += (double)g[i] * g[i];
    partial[c] = s;
  }
  double total = 0.0;
  for (int c = 0; c < kChunks; ++c) total += partial[c];
  return std::sqrt(total);
}

double Optimizer::step(ParamStore& ps, long step, float lr) {
  const double norm = grad_norm(ps);
  apply(ps, step, lr, norm);
  return norm;
}

void Optimizer::apply(ParamStore& ps, long step, float lr, double norm) {
  CHAINLM_CHECK(std::isfinite(norm), "step ", step, ": the gradient norm is not finite (", norm,
                "); stopped before any weight was changed. Try a lower --lr.");
  const float scale =
      cfg_.grad_clip > 0 && norm > cfg_.grad_clip ? (float)(cfg_.grad_clip / norm) : 1.0f;
  AdamWParams hp;
  hp.lr = lr;
  hp.beta1 = cfg_.beta1;
  hp.beta2 = cfg_.beta2;
  hp.eps = cfg_.eps;
  hp.step = step;
  for (int i = 0; i < (int)ps.infos().size(); ++i) {
    const ParamInfo& p = ps.info(i);
    // Frozen elements (SPEC A7), and those of chains no weighted sub-model computes, are never
    // touched: not even weight decay may move them, and their moments stay as they are.
    if (p.frozen()) continue;
    hp.weight_decay = p.weight_decay ? cfg_.weight_decay : 0.0f;
    if (p.trained_cols() == p.cols())
      adamw_update(p.numel(), ps.value(i), ps.grad(i), m_.data() + p.offset, v_.data() + p.offset,
                   scale, hp);
    else
      adamw_update_columns(p.numel() / p.cols(), p.cols(), p.frozen_cols, p.cols() - p.unused_cols,
                           ps.value(i), ps.grad(i), m_.data() + p.offset, v_.data() + p.offset,
                           scale, hp);
  }
}

}  // namespace chainlm
