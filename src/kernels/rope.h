#pragma once
// Rotary position embedding (SPEC A3), llama2.c convention: within every head the
// adjacent pair (x[2i], x[2i+1]) is rotated by the angle pos * theta^(-2i/hd).
//
// x is (rows, row_stride) floats; head h of row r is the contiguous block
// x[r*row_stride + h*hd .. + hd), h < n_heads; row r has position positions[r].
// Forward rotates x in place; backward applies the inverse rotation in place to the
// gradient (a rotation's transpose is its inverse), giving dL/d(pre-rotation x).
// Floats outside the n_heads*hd prefix of a row are never touched.
#include <memory>
#include <vector>

namespace chainlm {

// cos/sin of every (position, pair) angle, computed in double and rounded once to float,
// so the rotation matches a double-precision reference to float rounding at any position.
struct RopeTable {
  RopeTable(int head_dim, float theta, int max_positions);

  int head_dim;
  float theta;
  int max_positions;       // valid positions are [0, max_positions)
  std::vector<float> cos;  // (max_positions, head_dim/2)
  std::vector<float> sin;  // (max_positions, head_dim/2)
};

// A process-wide cached table covering positions [0, max_positions) (it may cover more).
// Thread-safe; the returned table stays valid while the pointer is held.
std::shared_ptr<const RopeTable> rope_table(int head_dim, float theta, int max_positions);

void rope_forward(const RopeTable& table, float* x, int rows, int n_heads, int row_stride,
                  const int* positions);
void rope_backward(const RopeTable& table, float* dx, int rows, int n_heads, int row_stride,
                   const int* positions);

// Convenience forms that use rope_table(head_dim, theta, max(positions) + 1).
void rope_forward(float* x, int rows, int n_heads, int head_dim, int row_stride,
                  const int* positions, float theta);
void rope_backward(float* dx, int rows, int n_heads, int head_dim, int row_stride,
                   const int* positions, float theta);

}  // namespace chainlm
