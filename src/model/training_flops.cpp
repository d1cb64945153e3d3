#include "model/training_flops.h"

#include <algorithm>

#include "core/error.h"

namespace chainlm {

double training_flops_per_token(const Model& model, int T, const std::vector<float>& chain_weights) {
  const ModelConfig& c = model.config();
  const ChainLayout& L = model.layout();
  CHAINLM_CHECK((int)chain_weights.size() == L.n, "training_flops_per_token: ", chain_weights.size(),
                " chain weights for ", L.n, " chains");
  int m = 0;
  for (int k = 1; k <= L.n; ++k)
    if (chain_weights[k - 1] > 0) m = k;
  CHAINLM_CHECK(m > 0, "training_flops_per_token: every chain weight is zero");
  const FreezeSpec& freeze = model.freeze();
  const int f = freeze.head_only ? m : freeze.chains;  // chains whose trunk gets no gradients
  const double V = c.vocab_size, K = c.phd.repeat;
  auto D = [&](int k) { return k > 0 ? (double)L.dim.prefix(k) : 0.0; };
  // Trunk multiply-adds per row: the matmuls of the first k chains without the head.
  auto trunk = [&](int k) { return k > 0 ? (double)model.matmul_params(k) - V * D(k) : 0.0; };
  // Keys a row attends to on average (SPEC B2: the originals before it, plus for PHD its
  // window and its own copies).
  const double keys = K * T / 2.0 + (K - 1) * (c.phd.window + K / 2.0);
  const double attention_per_dim = 2.0 * c.n_layers * keys;  // QK^T and AV, per width unit

  double forward = K * trunk(m) + attention_per_dim * D(m);
  // Weight and input gradients (2 + 2 FLOPs per multiply-add) of the trunk past the frozen
  // chains and of the attention over their width.
  double backward = 4.0 * (K * (trunk(m) - trunk(f)) + attention_per_dim * (D(m) - D(f)));
  for (int k = 1; k <= m; ++k) {
    if (chain_weights[k - 1] <= 0) continue;
    forward += V * D(k);
    // Head-only training: the head's weight gradient alone. Otherwise weight and input
    // gradients of the columns past the frozen chains' width.
    backward += freeze.head_only ? 2.0 * V * D(k) : 4.0 * V * (D(k) - D(std::min(f, k)));
  }
  return 2.0 * forward + backward;
}

}  // namespace chainlm
