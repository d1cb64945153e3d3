#pragma once
// All parameters of a model in one flat float buffer (and gradients in a second buffer of
// the same layout), with named tensors as offsets into it. One buffer keeps the optimizer a
// single fused pass, makes gradient allreduce one call, and maps 1:1 onto safetensors.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace chainlm {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::size_t offset = 0;
  int chain = -1;             // owning chain for chain blocks; -1 for tensors spanning chains
  bool weight_decay = false;  // matrices decay, norm gains do not
  std::size_t numel() const { return static_cast<std::size_t>(shape_numel(shape)); }
};

class ParamStore {
 public:
  // Registers a tensor; returns its index. Call before allocate().
  int add(const std::string& name, std::vector<int64_t> shape, int chain, bool weight_decay);
  void allocate();  // values and grads, zero-filled

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int i) const { return infos_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  std::size_t size() const { return total_; }

  float* values() { return values_.data(); }
  const float* values() const { return values_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  float* value(int i) { return values_.data() + infos_[i].offset; }
  const float* value(int i) const { return values_.data() + infos_[i].offset; }
  float* grad(int i) { return grads_.data() + infos_[i].offset; }

  void zero_grads();
  std::vector<TensorView> value_views();
  std::vector<TensorView> grad_views();

 private:
  std::vector<ParamInfo> infos_;
  std::size_t total_ = 0;
  std::vector<float> values_, grads_;
};

}  // namespace chainlm
