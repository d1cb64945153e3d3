// Rotary position embedding, forward and backward. Shapes and layout: see rope.h.
// x is (rows, row_stride); head h of row r is x[r*row_stride + h*hd .. + hd); row r is
// rotated with the angles of position positions[r]; pairs are (2i, 2i+1).
#include "kernels/rope.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <numbers>

#include "core/error.h"
#include "core/threads.h"

namespace chainlm {

std::vector<double> rope_inv_frequencies(int head_dim, double theta, const RopeScaling& s) {
  CHAINLM_CHECK(head_dim > 0 && head_dim % 2 == 0, "RoPE: head_dim must be positive and even, got ",
                head_dim);
  CHAINLM_CHECK(theta > 0.0, "RoPE: theta must be positive, got ", theta);
  validate_rope_scaling(s, "RoPE");
  const int half = head_dim / 2;
  std::vector<double> inv_freq(half);
  for (int i = 0; i < half; ++i) inv_freq[i] = std::pow(theta, -2.0 * i / head_dim);
  if (!s.enabled()) return inv_freq;
  // transformers' _compute_llama3_parameters, pair by pair, with its comparisons: a wavelength
  // equal to a threshold falls in the interpolated band, where smooth is then 0 or 1 (the rule is
  // continuous).
  const double original = s.original_max_position_embeddings;
  const double low_freq_wavelen = original / s.low_freq_factor;
  const double high_freq_wavelen = original / s.high_freq_factor;
  for (double& f : inv_freq) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > low_freq_wavelen) {
      f /= s.factor;
    } else if (!(wavelen < high_freq_wavelen)) {
      const double smooth =
          (original / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      f = (1.0 - smooth) * f / s.factor + smooth * f;
    }
  }
  return inv_freq;
}

RopeTable::RopeTable(int head_dim_, float theta_, const RopeScaling& scaling_, int max_positions_)
    : head_dim(head_dim_), theta(theta_), scaling(scaling_), max_positions(max_positions_) {
  CHAINLM_CHECK(max_positions >= 0, "RoPE: max_positions must be >= 0, got ", max_positions);
  const int half = head_dim / 2;
  // The angle reaches thousands of radians at long positions; in float its rounding
  // alone would be ~1e-3, so angle and cos/sin are computed in double.
  const std::vector<double> freq = rope_inv_frequencies(head_dim, theta, scaling);
  cos.resize(static_cast<size_t>(max_positions) * half);
  sin.resize(static_cast<size_t>(max_positions) * half);
#pragma omp parallel for schedule(static) if (max_positions >= 4096)
  for (int p = 0; p < max_positions; ++p) {
    for (int i = 0; i < half; ++i) {
      const double angle = static_cast<double>(p) * freq[i];
      cos[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      sin[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

std::shared_ptr<const RopeTable> rope_table(int head_dim, float theta, const RopeScaling& scaling,
                                            int max_positions) {
  static std::mutex mutex;
  static std::vector<std::shared_ptr<const RopeTable>> tables;
  std::lock_guard<std::mutex> lock(mutex);
  for (auto& t : tables) {
    if (t->head_dim != head_dim || t->theta != theta || !(t->scaling == scaling)) continue;
    if (t->max_positions < max_positions) {
      // Grow geometrically so a slowly growing decode position rebuilds rarely.
      t = std::make_shared<const RopeTable>(head_dim, theta, scaling,
                                            std::max(max_positions, 2 * t->max_positions));
    }
    return t;
  }
  tables.push_back(
      std::make_shared<const RopeTable>(head_dim, theta, scaling, std::max(max_positions, 1024)));
  return tables.back();
}

namespace {

void check_args(const RopeTable& table, const float* x, int rows, int n_heads, int row_stride,
                const int* positions) {
  CHAINLM_CHECK(rows >= 0 && n_heads >= 0, "RoPE: negative rows (", rows, ") or heads (", n_heads,
                ")");
  if (rows == 0 || n_heads == 0) return;
  CHAINLM_CHECK(x != nullptr && positions != nullptr, "RoPE: null data or positions");
  CHAINLM_CHECK(row_stride >= n_heads * table.head_dim, "RoPE: row_stride ", row_stride,
                " is smaller than n_heads*head_dim = ", n_heads * table.head_dim);
  for (int r = 0; r < rows; ++r)
    CHAINLM_CHECK(positions[r] >= 0 && positions[r] < table.max_positions, "RoPE: position ",
                  positions[r], " of row ", r, " is outside the table [0, ", table.max_positions,
                  ")");
}

// Sign +1 rotates by +angle (forward), -1 by -angle (backward: R^T = R^-1).
template <int Sign>
void rotate(const RopeTable& table, float* x, int rows, int n_heads, int row_stride,
            const int* positions) {
  check_args(table, x, rows, n_heads, row_stride, positions);
  const int hd = table.head_dim, half = hd / 2;
  const long work = static_cast<long>(rows) * n_heads * hd;
  parallel_for(rows, work, [&](long r) {
    const float* c = table.cos.data() + static_cast<size_t>(positions[r]) * half;
    const float* s = table.sin.data() + static_cast<size_t>(positions[r]) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* p = x + static_cast<size_t>(r) * row_stride + static_cast<size_t>(h) * hd;
      for (int i = 0; i < half; ++i) {
        const float x0 = p[2 * i], x1 = p[2 * i + 1];
        const float si = Sign > 0 ? s[i] : -s[i];
        p[2 * i] = x0 * c[i] - x1 * si;
        p[2 * i + 1] = x0 * si + x1 * c[i];
      }
    }
  }, /*min_work=*/1L << 16);
}

int max_position(int rows, const int* positions) {
  int m = 0;
  for (int r = 0; r < rows; ++r) m = std::max(m, positions[r]);
  return m;
}

}  // namespace

void rope_forward(const RopeTable& table, float* x, int rows, int n_heads, int row_stride,
                  const int* positions) {
  rotate<+1>(table, x, rows, n_heads, row_stride, positions);
}

void rope_backward(const RopeTable& table, float* dx, int rows, int n_heads, int row_stride,
                   const int* positions) {
  rotate<-1>(table, dx, rows, n_heads, row_stride, positions);
}

void rope_forward(float* x, int rows, int n_heads, int head_dim, int row_stride,
                  const int* positions, float theta, const RopeScaling& scaling) {
  if (rows <= 0) return;
  CHAINLM_CHECK(positions != nullptr, "RoPE: null positions");
  auto table = rope_table(head_dim, theta, scaling, max_position(rows, positions) + 1);
  rope_forward(*table, x, rows, n_heads, row_stride, positions);
}

void rope_backward(float* dx, int rows, int n_heads, int head_dim, int row_stride,
                   const int* positions, float theta, const RopeScaling& scaling) {
  if (rows <= 0) return;
  CHAINLM_CHECK(positions != nullptr, "RoPE: null positions");
  auto table = rope_table(head_dim, theta, scaling, max_position(rows, positions) + 1);
  rope_backward(*table, dx, rows, n_heads, row_stride, positions);
}

}  // namespace chainlm
