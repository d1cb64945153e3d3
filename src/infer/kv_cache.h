#pragma once
// The KV cache of one sequence: K and V rows of every layer for positions [0, capacity).
//   k, v are (L, capacity, width) with width = Hkv*hd (the model's whole KV width).
// CoLM keeps per-chain KV heads: chain block i (columns kv.begin(i)..kv.end(i)) is valid for
// positions < filled[i], so a sub-model with fewer chains leaves the later chains behind and
// growing the chain count later knows what is missing. CoLM-Air has one block, computed from
// chain 1 and shared by every sub-model.
// PHD models (SPEC B3) cache their originals' K/V here, exactly like an ordinary model; PHD-SWA
// and PHD-CSWA add a ring of the last `ring_window` hidden tokens' K/V per layer.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/aligned_vector.h"
#include "model/chain_layout.h"

namespace chainlm {

struct KVCache {
  int n_layers = 0, capacity = 0, width = 0;
  AlignedVector<float> k, v;  // rows of a cache line each time width is a multiple of 16
  std::vector<int> filled;  // per KV block: positions whose K/V are valid

  KVCache() = default;
  KVCache(int n_layers, int capacity, const ChainLayout& layout)
      : n_layers(n_layers), capacity(capacity), width(layout.kv.total()),
        k((size_t)n_layers * capacity * width), v((size_t)n_layers * capacity * width),
        filled(layout.kv.n(), 0) {}

  float* k_layer(int l) { return k.data() + (size_t)l * capacity * width; }
  float* v_layer(int l) { return v.data() + (size_t)l * capacity * width; }
  // Bytes holding valid K/V (what a decode step reads), and bytes allocated.
  size_t bytes_used(const ChainSplit& kv) const {
    size_t cols = 0, ring_cols = 0;
    for (int i = 0; i < kv.n(); ++i) {
      cols += (size_t)kv.width(i) * filled[i];
      if (filled[i] > 0) ring_cols += (size_t)kv.width(i) * ring_count;
    }
    return 2 * sizeof(float) * (size_t)n_layers * (cols + ring_cols);
  }
  size_t bytes_allocated() const {
    return 2 * sizeof(float) * (size_t)n_layers * ((size_t)capacity + ring_capacity) * width;
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
