#pragma once
// The KV cache of one sequence: K and V rows of every layer for positions [0, capacity).
//   k, v are (L, capacity, width) with width = Hkv*hd (the model's whole KV width).
// Elements are fp32, or IEEE halves (KvCacheType::F16: half the memory and half the bytes a
// decode step's attention reads; docs/inference.md, "KV cache"). Writes go through
// store_rows and attention through attend, which take either.
// CoLM keeps per-chain KV heads: chain block i (columns kv.begin(i)..kv.end(i)) is valid for
// positions < filled[i], so a sub-model with fewer chains leaves the later chains behind and
// growing the chain count later knows what is missing. CoLM-Air has one block, computed from
// chain 1 and shared by every sub-model.
// PHD models (SPEC B3) cache their originals' K/V here, exactly like an ordinary model; PHD-SWA
// and PHD-CSWA add a ring of the last `ring_window` hidden tokens' K/V per layer. Their cache
// is fp32 (the PHD attention kernel reads fp32 rows).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "core/aligned_vector.h"
#include "core/error.h"
#include "kernels/attention.h"
#include "model/chain_layout.h"

namespace chainlm {

// What the cache holds K and V in. Auto: F16 for models whose weights are bf16 or quantized
// (their own rounding is far coarser, and decoding them is where the cache's bytes weigh),
// F32 otherwise and for PHD models; resolve_kv_cache_type says which.
enum class KvCacheType { Auto, F32, F16 };
// "auto", "f32", "f16"; anything else throws, naming the valid values.
KvCacheType parse_kv_cache_type(const std::string& name);
const char* kv_cache_type_name(KvCacheType type);
class Model;
// Auto resolved for this model; F16 for a PHD model throws, saying why.
KvCacheType resolve_kv_cache_type(KvCacheType asked, const Model& model);
inline size_t kv_cache_element_bytes(KvCacheType type) { return type == KvCacheType::F16 ? 2 : 4; }

struct KVCache {
  int n_layers = 0, capacity = 0, width = 0;
  KvCacheType type = KvCacheType::F32;  // F32 or F16 (resolved)
  AlignedVector<float> k, v;        // F32: rows of a cache line each time width is a multiple of 16
  AlignedVector<uint16_t> k16, v16;  // F16
  std::vector<int> filled;  // per KV block: positions whose K/V are valid

  KVCache() = default;
  KVCache(int n_layers, int capacity, const ChainLayout& layout, KvCacheType type = KvCacheType::F32);

  // The fp32 rows of layer l (F32 caches only: PHD passes, and forward passes writing in place).
  float* k_layer(int l) { return k.data() + (size_t)l * capacity * width; }
  float* v_layer(int l) { return v.data() + (size_t)l * capacity * width; }
  // Rows [first, first + n) of layer l get columns [0, cols) of the n rows of k_rows, v_rows
  // (ld floats apart), converted to the cache's type.
  void store_rows(int l, int first, int n, const float* k_rows, const float* v_rows, int ld, int cols);
  // Attention of the query rows q over layer l's cached rows (s.kv_len of them; s.kv_stride
  // is set here), whatever the cache's type: attention_forward or attention_forward_f16.
  void attend(int l, AttentionShape s, const float* q, float* o, float* lse) const;

  // Bytes holding valid K/V (what a decode step reads), and bytes allocated.
  size_t bytes_used(const ChainSplit& kv) const {
    size_t cols = 0, ring_cols = 0;
    for (int i = 0; i < kv.n(); ++i) {
      cols += (size_t)kv.width(i) * filled[i];
      if (filled[i] > 0) ring_cols += (size_t)kv.width(i) * ring_count;
    }
    return 2 * (size_t)n_layers * (kv_cache_element_bytes(type) * cols + sizeof(float) * ring_cols);
  }
  size_t bytes_allocated() const {
    return 2 * (size_t)n_layers * width *
           (kv_cache_element_bytes(type) * (size_t)capacity + sizeof(float) * (size_t)ring_capacity);
  }

  // The hidden-token ring (PHD-SWA/CSWA; also holds a PHD pass's new hidden tokens while it
  // runs). Per layer, rows [ring_start, ring_start + ring_count) of ring_k/ring_v are the K/V
  // of hidden-stream tokens [ring_first, ring_first + ring_count), in order; between passes
  // ring_count <= ring_window. A pass appends its hidden tokens after them (ring_free()
  // rows are free there), then keeps the last ring_window.
  int ring_window = 0, ring_capacity = 0, ring_start = 0, ring_count = 0;
  long ring_first = 0;
  AlignedVector<float> ring_k, ring_v;

  void allocate_ring(int window, int rows) {
    ring_window = window;
    ring_capacity = rows;
    ring_k.assign((size_t)n_layers * rows * width, 0.0f);
    ring_v.assign((size_t)n_layers * rows * width, 0.0f);
    clear_ring(0);
  }
  void clear_ring(long first) {
    ring_start = ring_count = 0;
    ring_first = first;
  }
  float* ring_k_layer(int l) { return ring_k.data() + (size_t)l * ring_capacity * width; }
  float* ring_v_layer(int l) { return ring_v.data() + (size_t)l * ring_capacity * width; }
  int ring_free() const { return ring_capacity - ring_start - ring_count; }
  // Moves the held rows to the front of every layer's ring, freeing the rest.
  void compact_ring() {
    if (ring_start == 0) return;
    for (int l = 0; l < n_layers; ++l)
      for (float* base : {ring_k_layer(l), ring_v_layer(l)})
        std::memmove(base, base + (size_t)ring_start * width, sizeof(float) * ring_count * width);
    ring_start = 0;
  }
  // After a pass added `added` tokens: keep the newest min(keep, held) of them.
  void keep_ring(int added, int keep) {
    const int total = ring_count + added, kept = std::clamp(keep, 0, total);
    ring_start += total - kept;
    ring_first += total - kept;
    ring_count = kept;
  }
};

}  // namespace chainlm
