#pragma once
// The first index of the largest of x[0, n), NaNs passed over, as llama2.c's argmax
// (`x[i] > x[best]`, which also returns 0 when x[0] is NaN): the greedy token. Written that way
// the loop reloads x[best] and branches for every logit, ~6 us for 4,096 of them, ~0.05 ms of a
// served 8-row step of ~1.3 ms. Here the maximum comes first (a vector max keeps its running
// operand when the other is NaN), then its first occurrence: ~0.4 us. AVX-512, AVX and scalar
// paths, each tested in the kernel test builds of its ISA.

namespace chainlm {

int first_argmax(const float* x, int n);

}  // namespace chainlm
