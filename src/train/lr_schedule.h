#pragma once
#include <cmath>

namespace chainlm {

// Linear warmup to max_lr over warmup steps, then cosine decay to min_lr at total steps.
inline float cosine_lr(long step, long warmup, long total, float max_lr, float min_lr) {
  if (step < warmup) return max_lr * (float)(step + 1) / (float)warmup;
  if (step >= total) return min_lr;
  const double progress = (double)(step - warmup) / (double)(total - warmup > 0 ? total - warmup : 1);
  return min_lr + 0.5f * (max_lr - min_lr) * (float)(1.0 + std::cos(M_PI * progress));
}

}  // namespace chainlm
