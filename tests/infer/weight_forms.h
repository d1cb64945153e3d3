#pragma once
// The forms inference holds a model's weights in, for tests that run every one: fp32 row-major,
// bf16, q8_0, q4_0, and fp32 panels (row-major fp32 on builds without the panel kernel).
#include <cstdint>
#include <memory>

#include "model/model.h"

namespace chainlm::test {

enum class Weights { kFp32, kBf16, kQ8_0, kQ4_0, kFp32Panels };

// A model of config c with random weights (seed), held in form w.
inline std::unique_ptr<Model> make_model(const ModelConfig& c, Weights w, uint64_t seed) {
  auto m = std::make_unique<Model>(c);
  m->init_random(seed);
  if (w == Weights::kBf16) m->use_bf16_weights(/*keep_fp32=*/false);
  if (w == Weights::kQ8_0) m->quantize_weights(QuantType::kQ8_0);
  if (w == Weights::kQ4_0) m->quantize_weights(QuantType::kQ4_0);
  if (w == Weights::kFp32Panels) m->use_fp32_panels();
  return m;
}

}  // namespace chainlm::test
