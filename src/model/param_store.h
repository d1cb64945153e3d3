#pragma once
// All parameters of a model in one flat float buffer (and gradients in a second buffer of
// the same layout), with named tensors as offsets into it. One buffer keeps the optimizer a
// single fused pass, makes gradient allreduce one call, and maps 1:1 onto safetensors.
#include <algorithm>
#include <cassert>
#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/aligned_vector.h"
#include "core/tensor.h"

namespace chainlm {

struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  std::size_t offset = 0;
  int chain = -1;             // owning chain for chain blocks; -1 for tensors spanning chains
  bool weight_decay = false;  // matrices decay, norm gains do not
  // Chain tuning (SPEC A7): the first frozen_cols columns of every row (of a vector: its first
  // elements) are frozen; frozen_cols == cols() freezes the whole tensor.
  int64_t frozen_cols = 0;
  // The last unused_cols columns belong to chains past every sub-model that has a loss weight:
  // never computed, they get no gradient and are left as they are, as frozen ones.
  int64_t unused_cols = 0;
  bool released = false;  // fp32 value dropped (a bf16 inference model keeps its own copy)
  std::size_t numel() const { return static_cast<std::size_t>(shape_numel(shape)); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
  int64_t trained_cols() const { return std::max<int64_t>(0, cols() - frozen_cols - unused_cols); }
  bool frozen() const { return trained_cols() == 0; }
  std::size_t trainable_numel() const {
    return numel() / static_cast<std::size_t>(cols()) * static_cast<std::size_t>(trained_cols());
  }
};

// A non-finite weight would only show later as NaN logits ("GGGG" text, a perplexity of nan), and
// a NaN compares as no difference in the read-back checks of export and quantize: every loader
// refuses one. Throws "`where`: tensor 'name' holds a non-finite value (v) at element e: ...".
void refuse_non_finite(const float* values, std::size_t n, const std::string& where,
                       const std::string& name);

class ParamStore {
 public:
  // Registers a tensor; returns its index. Call before allocate().
  int add(const std::string& name, std::vector<int64_t> shape, int chain, bool weight_decay);
  void allocate();        // values, zero-filled
  void allocate_grads();  // gradients, zero-filled (training only: inference never holds them)
  bool has_grads() const { return !grads_.empty(); }

  const std::vector<ParamInfo>& infos() const { return infos_; }
  const ParamInfo& info(int i) const { return infos_[i]; }
  int find(const std::string& name) const;  // -1 if absent
  std::size_t size() const { return total_; }  // floats in the buffer (tensors padded)
  // Parameters (elements of all tensors), and those not frozen.
  std::size_t numel() const;
  std::size_t trainable_numel() const;
  // Tensor i trains columns [frozen_cols, cols - unused_cols) (ParamInfo).
  void set_frozen_cols(int i, int64_t frozen_cols, int64_t unused_cols = 0);

  float* values() { return values_.data(); }
  const float* values() const { return values_.data(); }
  float* grads() { return grads_.data(); }
  const float* grads() const { return grads_.data(); }
  float* value(int i) {
    assert(!infos_[i].released);
    return values_.data() + infos_[i].offset;
  }
  const float* value(int i) const {
    assert(!infos_[i].released);
    return values_.data() + infos_[i].offset;
  }
  float* grad(int i) {
    assert(has_grads());
    return grads_.data() + infos_[i].offset;
  }

  // Drops the fp32 values of every tensor i with keep[i] false (a bf16 inference model, which
  // holds them in bf16 instead) and packs the kept ones into a smaller buffer: their offsets
  // change, value(i) of a released tensor is an error. Training, saving and exporting need
  // every value and refuse such a store.
  void release_values_except(const std::vector<bool>& keep);
  bool values_released() const { return released_; }

  void zero_grads();
  std::vector<TensorView> value_views();
  std::vector<TensorView> grad_views();

 private:
  std::vector<ParamInfo> infos_;
  // name -> index: a linear find made building a model quadratic in its tensor count (a
  // config of 65536 one-wide layers, 590k tensors, took many minutes).
  std::unordered_map<std::string, int> index_;
  std::size_t total_ = 0;
  bool released_ = false;
  AlignedVector<float> values_, grads_;  // every tensor starts on a cache line
};

}  // namespace chainlm
