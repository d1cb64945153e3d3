#include "infer/kv_cache.h"

#include "kernels/fp16_rows.h"
#include "model/model.h"

namespace chainlm {

KvCacheType parse_kv_cache_type(const std::string& name) {
  if (name == "auto") return KvCacheType::Auto;
  if (name == "f32") return KvCacheType::F32;
  if (name == "f16") return KvCacheType::F16;
  fail("unknown KV cache type \"", name, "\": use auto, f32 or f16");
}

const char* kv_cache_type_name(KvCacheType type) {
  return type == KvCacheType::F16 ? "f16" : type == KvCacheType::F32 ? "f32" : "auto";
}

KvCacheType resolve_kv_cache_type(KvCacheType asked, const Model& model) {
  const bool phd = model.config().phd.enabled();
  if (asked == KvCacheType::Auto)
    return !phd && (model.precision() == Precision::Bf16 || model.quantized()) ? KvCacheType::F16
                                                                               : KvCacheType::F32;
  CHAINLM_CHECK(!(asked == KvCacheType::F16 && phd),
                "--kv-cache f16: PHD models keep their KV cache in f32 (the PHD attention kernel reads fp32 "
                "rows of originals and hidden tokens); use --kv-cache f32 or auto");
  return asked;
}

KVCache::KVCache(int n_layers, int capacity, const ChainLayout& layout, KvCacheType type)
    : n_layers(n_layers), capacity(capacity), width(layout.kv.total()), type(type), filled(layout.kv.n(), 0) {
  CHAINLM_CHECK(type == KvCacheType::F32 || type == KvCacheType::F16, "KV cache: resolve the type before allocating");
  const size_t n = (size_t)n_layers * capacity * width;
  if (type == KvCacheType::F16) {
    k16.resize(n);
    v16.resize(n);
  } else {
    k.resize(n);
    v.resize(n);
  }
}

void KVCache::store_rows(int l, int first, int n, const float* k_rows, const float* v_rows, int ld, int cols) {
  const size_t at = ((size_t)l * capacity + first) * width;
  for (int r = 0; r < n; ++r) {
    if (type == KvCacheType::F16) {
      fp16_from_floats(k_rows + (size_t)r * ld, k16.data() + at + (size_t)r * width, cols);
      fp16_from_floats(v_rows + (size_t)r * ld, v16.data() + at + (size_t)r * width, cols);
    } else {
      std::copy_n(k_rows + (size_t)r * ld, cols, k.data() + at + (size_t)r * width);
      std::copy_n(v_rows + (size_t)r * ld, cols, v.data() + at + (size_t)r * width);
    }
  }
}

void KVCache::attend(int l, AttentionShape s, const float* q, float* o, float* lse) const {
  s.kv_stride = width;
  const size_t at = (size_t)l * capacity * width;
  if (type == KvCacheType::F16)
    attention_forward_f16(s, q, k16.data() + at, v16.data() + at, o, lse);
  else
    attention_forward(s, q, k.data() + at, v.data() + at, o, lse);
}

}  // namespace chainlm
