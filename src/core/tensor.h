#pragma once
// A named, shaped view of float data; the interchange type between the model's
// parameter store and the file formats in io/. It never owns memory.
#include <cstdint>
#include <string>
#include <vector>

namespace chainlm {

inline int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_to_string(const std::vector<int64_t>& shape);

struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
  int64_t numel() const { return shape_numel(shape); }
};

// An owning float tensor, for data read from files.
struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
  int64_t numel() const { return shape_numel(shape); }
};

}  // namespace chainlm
