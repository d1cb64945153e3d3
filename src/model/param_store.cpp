#include "model/param_store.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace chainlm {

void refuse_non_finite(const float* values, std::size_t n, const std::string& where,
                       const std::string& name) {
  for (std::size_t e = 0; e < n; ++e)
    CHAINLM_CHECK(std::isfinite(values[e]), where, ": tensor '", name,
                  "' holds a non-finite value (", values[e], ") at element ", e,
                  ": the weights are corrupt or diverged");
}

int ParamStore::add(const std::string& name, std::vector<int64_t> shape, int chain,
                    bool weight_decay) {
  CHAINLM_CHECK(!index_.count(name), "duplicate parameter name ", name);
  ParamInfo p;
  p.name = name;
  p.shape = std::move(shape);
  p.offset = total_;
  p.chain = chain;
  p.weight_decay = weight_decay;
  // Keep every tensor 64-byte aligned so kernels see aligned rows.
  total_ += (p.numel() + 15) / 16 * 16;
  infos_.push_back(std::move(p));
  const int i = static_cast<int>(infos_.size()) - 1;
  index_.emplace(infos_.back().name, i);
  return i;
}

void ParamStore::allocate() { values_.assign(total_, 0.0f); }

void ParamStore::allocate_grads() {
  CHAINLM_CHECK(
      !released_, "this model holds its weights for inference only (bf16 with --precision bf16, ",
      "quantized, or fp32 repacked into panels): it cannot train; load the checkpoint again");
  if (grads_.size() != total_) grads_.assign(total_, 0.0f);
}

int ParamStore::find(const std::string& name) const {
  const auto it = index_.find(name);
  if (it != index_.end()) return it->second;
  return -1;
}

std::size_t ParamStore::numel() const {
  std::size_t n = 0;
  for (const ParamInfo& p : infos_) n += p.numel();
  return n;
}

std::size_t ParamStore::trainable_numel() const {
  std::size_t n = 0;
  for (const ParamInfo& p : infos_) n += p.trainable_numel();
  return n;
}

void ParamStore::set_frozen_cols(int i, int64_t frozen_cols, int64_t unused_cols) {
  ParamInfo& p = infos_[i];
  CHAINLM_CHECK(frozen_cols >= 0 && unused_cols >= 0 && frozen_cols + unused_cols <= p.cols(),
                p.name, ": cannot leave ", frozen_cols, " frozen and ", unused_cols,
                " unused of its ", p.cols(), " columns");
  p.frozen_cols = frozen_cols;
  p.unused_cols = unused_cols;
}

void ParamStore::release_values_except(const std::vector<bool>& keep) {
  CHAINLM_CHECK(keep.size() == infos_.size() && grads_.empty(), "release_values_except: bad use");
  AlignedVector<float> kept;
  std::size_t total = 0;
  for (size_t i = 0; i < infos_.size(); ++i) {
    ParamInfo& p = infos_[i];
    if (!keep[i]) {
      p.released = true;
      continue;
    }
    const std::size_t padded = (p.numel() + 15) / 16 * 16;
    kept.resize(total + padded, 0.0f);
    std::copy_n(values_.data() + p.offset, p.numel(), kept.data() + total);
    p.offset = total;
    total += padded;
  }
  values_.swap(kept);
  values_.shrink_to_fit();
  total_ = total;
  released_ = true;
}

void ParamStore::zero_grads() {
  float* g = grads_.data();
  const long n = (long)grads_.size();
#pragma omp parallel for simd schedule(static)
  for (long i = 0; i < n; ++i) g[i] = 0.0f;
}

std::vector<TensorView> ParamStore::value_views() {
  CHAINLM_CHECK(
      !released_, "this model holds its weights for inference only (bf16 with --precision bf16, ",
      "quantized, or fp32 repacked into panels): its row-major fp32 values are gone; load the ",
      "checkpoint again to save or export it");
  std::vector<TensorView> v;
  for (size_t i = 0; i < infos_.size(); ++i)
    v.push_back({infos_[i].name, infos_[i].shape, value(static_cast<int>(i))});
  return v;
}

std::vector<TensorView> ParamStore::grad_views() {
  std::vector<TensorView> v;
  for (size_t i = 0; i < infos_.size(); ++i)
    v.push_back({infos_[i].name, infos_[i].shape, grad(static_cast<int>(i))});
  return v;
}

}  // namespace chainlm
