#pragma once
// Softmax cross-entropy over a vocabulary, fused with its gradient (llm.c's fused
// classifier): the softmax is computed once and turned into d(loss)/d(logits) directly.
//   logits, dlogits are (M, V) with row stride ld; targets is (M), target < 0 = ignored row
namespace chainlm {

// Returns the sum over non-ignored rows of -log softmax(logits)[target]. When dlogits is not
// null it receives grad_scale * (softmax - onehot) (ignored rows get 0); dlogits may alias
// logits. row_loss, if not null, receives each row's loss (0 for ignored rows).
double cross_entropy_forward_backward(int M, int V, const float* logits, int ld, const int* targets,
                                      float grad_scale, float* dlogits, float* row_loss);

}  // namespace chainlm
