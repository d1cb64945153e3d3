#pragma once
// Model FLOPs of a training step, per token (docs/training.md, "FLOPs"): what `bench train`'s
// mfu divides by and what the trainer logs so runs can be compared at equal compute (the
// replication suite's loss-against-FLOPs plots). The 6N rule, made exact for what chainlm
// computes: 2 FLOPs per multiply-add of every matmul the forward pass runs (the trunk of the
// first m chains, m the last sub-model with a non-zero loss weight; the head of every weighted
// sub-model; attention's QK^T and AV), and 4 more per multiply-add of the parts that train
// (weight and input gradients), which frozen chains (chain tuning) skip; head-only training
// adds the head's weight gradient (2) alone. PHD runs the trunk on K rows per token, the head
// on one.
#include <vector>

#include "model/model.h"

namespace chainlm {

// FLOPs per (original) token of one forward_backward on windows of T tokens, with the
// model's freeze spec. chain_weights[k-1] weights sub-model k.
double training_flops_per_token(const Model& model, int T, const std::vector<float>& chain_weights);

}  // namespace chainlm
