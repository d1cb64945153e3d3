#pragma once
// Rotary position embedding (SPEC A3), llama2.c convention: within every head the
// adjacent pair (x[2i], x[2i+1]) is rotated by the angle pos * inv_freq[i], inv_freq[i] =
// theta^(-2i/hd), rescaled per pair when the model has RoPE scaling (core/rope_scaling.h).
//
// x is (rows, row_stride) floats; head h of row r is the contiguous block
// x[r*row_stride + h*hd .. + hd), h < n_heads; row r has position positions[r].
// Forward rotates x in place; backward applies the inverse rotation in place to the
// gradient (a rotation's transpose is its inverse), giving dL/d(pre-rotation x).
// Floats outside the n_heads*hd prefix of a row are never touched.
#include <memory>
#include <vector>

#include "core/rope_scaling.h"

namespace chainlm {

// The inverse frequency of every pair i < head_dim/2, in double: theta^(-2i/hd), then for
// llama3 scaling transformers' _compute_llama3_parameters: with wavelen = 2*pi/inv_freq, a
// wavelength above original/low_freq_factor divides inv_freq by factor, one below
// original/high_freq_factor keeps it, and in between inv_freq becomes
// (1 - smooth) * inv_freq / factor + smooth * inv_freq with
// smooth = (original / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor).
std::vector<double> rope_inv_frequencies(int head_dim, double theta, const RopeScaling& scaling);

// cos/sin of every (position, pair) angle, computed in double and rounded once to float,
// so the rotation matches a double-precision reference to float rounding at any position.
struct RopeTable {
  RopeTable(int head_dim, float theta, const RopeScaling& scaling, int max_positions);

  int head_dim;
  float theta;
  RopeScaling scaling;
  int max_positions;       // valid positions are [0, max_positions)
  std::vector<float> cos;  // (max_positions, head_dim/2)
  std::vector<float> sin;  // (max_positions, head_dim/2)
};

// A process-wide cached table covering positions [0, max_positions) (it may cover more).
// Thread-safe; the returned table stays valid while the pointer is held.
std::shared_ptr<const RopeTable> rope_table(int head_dim, float theta, const RopeScaling& scaling,
                                            int max_positions);

void rope_forward(const RopeTable& table, float* x, int rows, int n_heads, int row_stride,
                  const int* positions);
void rope_backward(const RopeTable& table, float* dx, int rows, int n_heads, int row_stride,
                   const int* positions);

// Convenience forms that use rope_table(head_dim, theta, scaling, max(positions) + 1).
void rope_forward(float* x, int rows, int n_heads, int head_dim, int row_stride,
                  const int* positions, float theta, const RopeScaling& scaling);
void rope_backward(float* dx, int rows, int n_heads, int head_dim, int row_stride,
                   const int* positions, float theta, const RopeScaling& scaling);

}  // namespace chainlm
