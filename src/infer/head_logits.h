#pragma once
// The output head of a decoding pass (infer/session.cpp, infer/batch_decode.cpp): the logits of
// rows whose sub-models may differ, as the running sum over chains of SPEC A3, one product per
// chain's columns of the head over the rows that use that chain. A batch of sub-models 1..4
// then reads each column block of the head once, not once per sub-model (a CoLM-Air [2,2,2,2]
// step over requests spread on chains 1..4 read 2.5x the head's bytes), and a row's sums are
// the same alone and in any batch, which keeps batched decoding bit-invariant.
#include <vector>

#include "kernels/gemm.h"
#include "model/model.h"

namespace chainlm {

// logits(n, V) (rows ldl apart) for rows of xn (ldx apart) whose sub-models use chains[0] >=
// chains[1] >= ... >= chains[n-1] chains. jobs is scratch. A quantized head whose chains do not
// all start on a quantization block takes one product per group of rows over its sub-model's
// whole prefix instead (a block is entered only at its start).
void head_logits(const Model& model, int n, const int* chains, const float* xn, int ldx,
                 float* logits, int ldl, std::vector<GemmNtJob>& jobs);

// Throws when the final norm of M rows over k of n chains (rstd as rmsnorm_forward wrote it,
// n per row) met a hidden state whose sum of squares overflowed float (rstd 0) or held NaN: a
// diverged model, whose logits then came out all 0 (greedy token 0, uniform samples) or NaN,
// which generate and serve gave as text without a word (a user trial; eval ppl said so).
void check_final_norm(const float* rstd, int M, int n, int k);

}  // namespace chainlm
