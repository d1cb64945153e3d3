#include "infer/session.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "infer/head_logits.h"
#include "kernels/attention.h"
#include "kernels/chain_linear.h"
#include "kernels/embedding.h"
#include "kernels/gemm.h"
#include "kernels/rmsnorm.h"
#include "kernels/rope.h"
#include "kernels/swiglu.h"

namespace chainlm {

namespace {

// phd_hidden_positions with bounded prefill (session.h).
int bounded_hidden_positions(const ModelConfig& c, int end, bool most) {
  const PhdConfig& phd = c.phd;
  if (phd.window == 0) return 1;  // copies see originals and each other only
  // One layer lets a hidden token read at most R = max(W, K-2) hidden tokens back (its
  // window, or its position's earlier copies), so the last position's logits and the ring
  // of the last W hidden tokens depend on at most L*R earlier hidden tokens.
  const long R = std::max(phd.window, phd.repeat - 2);
  long positions = (c.n_layers * R + phd.repeat - 2) / (phd.repeat - 1) + 1;
  if (phd.chunk > 0) positions = std::min<long>(positions, most ? phd.chunk : (end - 1) % phd.chunk + 1);
  return (int)std::min<long>(positions, end);
}

}  // namespace

InferenceSession::Sizes InferenceSession::sizes_for(const ModelConfig& c, int max_chunk) {
  Sizes z;
  z.max_chunk = std::max(1, std::min(max_chunk, c.max_seq_len));
  z.max_rows = z.max_chunk;
  z.ring_rows = 0;
  z.pass_positions = 0;
  if (c.phd.enabled()) {
    // A PHD pass holds at least one position's copies, and a prompt of max_chunk tokens fits
    // in one pass with the hidden copies of its last positions.
    const int bounded = bounded_hidden_positions(c, c.max_seq_len, true);
    z.max_rows = std::max(z.max_chunk, c.phd.repeat) + (c.phd.repeat - 1) * bounded;
    // A pass runs at most this many positions with all their copies: what a bounded prefill
    // needs, else 32 (a prompt's logits at every position, as serve's echo wants, or the
    // paper's prefill of every copy run in passes of 32 positions and K*32 rows, which keep
    // the GEMMs efficient). The ring holds their hidden tokens, so it stays a small part of
    // the cache: sized for every position a pass of max_rows rows could hold (max_rows / K)
    // it took 48% of a 1024-token f32 cache on ref30m-phd-cswa-4-16-32 (15 MiB a session
    // more than the ordinary model's; 12.5% now).
    z.pass_positions = std::min(z.max_rows / c.phd.repeat, std::max(32, bounded));
    // Room for the window plus one pass's hidden tokens, twice the window so that keeping
    // the ring in order costs a compaction only every ~window/(K-1) decode steps; never more
    // than every hidden token a sequence has, (K-1) max_seq_len, which a window close to that
    // would have doubled past what an int holds (a user trial: `info` showed a negative ring).
    const long hidden_all = (long)(c.phd.repeat - 1) * c.max_seq_len;
    z.ring_rows = (int)(std::min(2L * c.phd.window, hidden_all) +
                        (long)(c.phd.repeat - 1) * z.pass_positions);
  }
  return z;
}

namespace {
int capacity_for(const ModelConfig& c, int positions) {
  return positions > 0 && positions < c.max_seq_len ? positions : c.max_seq_len;
}
}  // namespace

std::size_t InferenceSession::memory_bytes(const ModelConfig& c, int max_chunk,
                                           KvCacheType kv_cache, int positions) {
  const ChainLayout layout(c);
  const Sizes z = sizes_for(c, max_chunk);
  const std::size_t rows = z.max_rows, kv = layout.kv.total(), L = c.n_layers;
  std::size_t floats = rows * (4 * (std::size_t)c.dim + 3 * (std::size_t)c.ffn_dim + layout.n + c.n_heads) +
                       c.vocab_size;                                    // scratch
  if (c.phd.enabled() || kv_cache == KvCacheType::F16) floats += 2 * rows * kv;  // new K/V rows
  floats += phd_ring_bytes(c, max_chunk) / sizeof(float);                        // ring
  const std::size_t cache =
      2 * L * (std::size_t)capacity_for(c, positions) * kv * kv_cache_element_bytes(kv_cache);
  return floats * sizeof(float) + cache + rows * sizeof(int) * (c.phd.enabled() ? 2 : 1);
}

int InferenceSession::phd_ring_rows(const ModelConfig& c, int max_chunk) {
  return c.phd.enabled() ? sizes_for(c, max_chunk).ring_rows : 0;
}

std::size_t InferenceSession::phd_ring_bytes(const ModelConfig& c, int max_chunk) {
  return 2 * (std::size_t)c.n_layers * (std::size_t)phd_ring_rows(c, max_chunk) *
         (std::size_t)ChainLayout(c).kv.total() * sizeof(float);
}

InferenceSession::InferenceSession(const Model& model, int max_chunk, KvCacheType kv_cache,
                                   int positions)
    : model_(model),
      max_chunk_(sizes_for(model.config(), max_chunk).max_chunk),
      capacity_(capacity_for(model.config(), positions)),
      cache_(model.config().n_layers, capacity_, model.layout(),
             resolve_kv_cache_type(kv_cache, model)) {
  const ModelConfig& c = model.config();
  const Sizes z = sizes_for(c, max_chunk);
  max_rows_ = z.max_rows;
  pass_positions_ = z.pass_positions;
  const size_t rows = max_rows_;
  x_.resize(rows * c.dim);
  xn_.resize(rows * c.dim);
  q_.resize(rows * c.dim);
  att_.resize(rows * c.dim);
  h1_.resize(rows * c.ffn_dim);
  h3_.resize(rows * c.ffn_dim);
  g_.resize(rows * c.ffn_dim);
  rstd_.resize(rows * model.layout().n);
  lse_.resize(rows * c.n_heads);
  logits_.resize(c.vocab_size);
  positions_.resize(rows);
  const int kv = model.layout().kv.total();
  if (c.phd.enabled() || cache_.type == KvCacheType::F16) {
    k_new_.resize(rows * kv);
    v_new_.resize(rows * kv);
  }
  if (c.phd.enabled()) {
    row_tokens_.resize(rows);
    cache_.allocate_ring(c.phd.window, z.ring_rows);
  }
}

void InferenceSession::reset() {
  tokens_.clear();
  std::fill(cache_.filled.begin(), cache_.filled.end(), 0);
  cache_.clear_ring(0);
}

bool InferenceSession::needs_recompute(int k) const {
  const ChainLayout& L = model_.layout();
  for (int i = 0; i < L.kv_blocks(k); ++i)
    if (cache_.filled[i] < length()) return true;
  return false;
}

const float* InferenceSession::append(const int* tokens, int n, int k, float* all_logits) {
  return append_until(tokens, n, k, all_logits, length() + n);
}

const float* InferenceSession::append_until(const int* tokens, int n, int k, float* all_logits,
                                            int final_end) {
  const ModelConfig& c = model_.config();
  CHAINLM_CHECK(k >= 1 && k <= c.n_chains(), "active chains ", k, " is outside 1..", c.n_chains());
  CHAINLM_CHECK(n >= 1, "nothing to append");
  CHAINLM_CHECK(length() + n <= c.max_seq_len, "the sequence would be ", length() + n,
                " tokens, longer than the model's max_seq_len ", c.max_seq_len);
  CHAINLM_CHECK(length() + n <= capacity_, "the sequence would be ", length() + n,
                " tokens, longer than this session holds (", capacity_, ")");
  for (int i = 0; i < n; ++i)
    CHAINLM_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size, "token id ", tokens[i],
                  " is outside the vocabulary (size ", c.vocab_size, ")");
  if (needs_recompute(k)) {
    // Plain CoLM growing its chain count: the new chains' K/V for the prefix need the new
    // chains' hidden states, which depend on every layer below, so the prefix runs again
    // with k chains. (CoLM-Air never gets here: its cache is shared by all sub-models.)
    std::vector<int> history = tokens_;
    reset();
    run(history.data(), (int)history.size(), k, nullptr, (int)history.size());
  }
  run(tokens, n, k, all_logits, final_end);
  return logits_.data();
}

int InferenceSession::phd_hidden_positions(int end, bool most) const {
  if (!bounded_prefill_ && !most) return end;
  return bounded_hidden_positions(model_.config(), end, most);
}

// Runs tokens at positions [length(), length()+n) in passes of at most max_chunk_ rows.
// PHD: `final_end` is where the caller's input ends (>= length()+n): positions before its
// last phd_hidden_positions(final_end) run as originals only (unless all logits are wanted).
void InferenceSession::run(const int* tokens, int n, int k, float* all_logits, int final_end) {
  const ModelConfig& c = model_.config();
  // A pass gives the same bits on any thread count (tests/infer/prefill_threads_test.cpp): the
  // few-row and quantized kernels' threads split output columns, attention splits rows and heads,
  // never a sum, and the libraries' products run in tiles fixed by their shapes (kernels/gemm.h).
  // So the server and generate may choose the count by timing, and a prompt's tokens are the same
  // on any machine's core count.
  const ThreadInvariantProducts invariant;
  if (!c.phd.enabled()) {
    for (int p = 0; p < n; p += max_chunk_) {
      const int m = std::min(max_chunk_, n - p);
      forward_chunk(tokens + p, m, k, all_logits ? all_logits + (size_t)p * c.vocab_size : nullptr);
    }
    return;
  }
  const int K = c.phd.repeat, len = length(), end = len + n;
  const int hidden_from =
      all_logits ? len : std::clamp(final_end - phd_hidden_positions(final_end), len, end);
  // Passes of at most max_rows_ rows: originals first, then as many positions with all
  // their copies as fit (one pass for a prompt of up to max_chunk tokens).
  for (int p = len; p < end;) {
    const int h = std::max(hidden_from, p);  // where this pass's copies would start
    int q = std::min(h, p + max_rows_);
    if (q == h) q += std::min({end - h, (max_rows_ - (h - p)) / K, pass_positions_});
    forward_chunk_phd(tokens + (p - len), q - p, k, std::min(h, q),
                      all_logits ? all_logits + (size_t)(h - len) * c.vocab_size : nullptr);
    p = q;
  }
}

const float* InferenceSession::prefill(const std::vector<int>& prompt, int k, bool chain1_prefill) {
  CHAINLM_CHECK(!prompt.empty(), "empty prompt: it needs at least the BOS token");
  const int n = (int)prompt.size();
  const ModelConfig& c = model_.config();
  // PHD: the hidden copies a prompt needs are those of its last positions
  // (phd_hidden_positions), counted from the end of the whole prompt.
  const int final_end = length() + n;
  if (!(chain1_prefill && c.kv_share && k > 1 && n > 1)) return append(prompt.data(), n, k);
  append_until(prompt.data(), n - 1, 1, nullptr, final_end);
  return append(prompt.data() + n - 1, 1, k);
}

const float* InferenceSession::prefill_part(const std::vector<int>& prompt, int k, bool chain1_prefill,
                                           int budget, float* all_logits) {
  const int n = (int)prompt.size(), done = length();
  CHAINLM_CHECK(!prompt.empty(), "empty prompt: it needs at least the BOS token");
  CHAINLM_CHECK(budget >= 1, "a prefill part needs a budget of at least one token");
  CHAINLM_CHECK(done < n && std::equal(tokens_.begin(), tokens_.end(), prompt.begin()),
                "the session does not hold the start of this prompt");
  // As prefill(): with CoLM-Air's chain-1 prefill, all but the last token run with chain 1.
  const bool chain1 = chain1_prefill && model_.config().kv_share && k > 1 && n > 1;
  const int body = chain1 ? n - 1 : n, m = std::min(budget, (done < body ? body : n) - done);
  append_until(prompt.data() + done, m, done < body && chain1 ? 1 : k, all_logits, n);
  return length() == n ? logits_.data() : nullptr;
}

// One forward pass of n new rows at positions [len, len+n) over the cache.
// x, xn, q, att are (n, D); h1, h3, g are (n, F); the new K/V rows go straight into the
// cache, whose rows are (capacity, KV).
void InferenceSession::forward_chunk(const int* tokens, int n, int k, float* all_logits) {
  const ModelConfig& c = model_.config();
  const ChainLayout& L = model_.layout();
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const int Dk = L.dim.prefix(k), Fk = L.ffn.prefix(k);
  const int len = length();
  for (int i = 0; i < n; ++i) positions_[i] = len + i;
  const int kv_blocks = L.kv_blocks(k);
  const int kv_heads_active = L.active_kv_width(k) / hd;
  const int first = all_logits ? 0 : n - 1;  // the first row whose logits are wanted

  embedding_forward(n, Dk, tokens, model_.embedding(), D, x_.data(), D);
  const AttentionShape as = model_.attention_shape(k, 1, n, len + n, len);
  auto table = rope_table(hd, c.rope_theta, c.rope_scaling, len + n);

  // An fp32 cache takes the new K/V rows straight from the GEMMs; a 16-bit one once RoPE ran.
  const bool in_place = cache_.type == KvCacheType::F32;

  for (int l = 0; l < c.n_layers; ++l) {
    const Model::LayerIndex& li = model_.layer(l);
    const ParamStore& ps = model_.params();
    float* kn = in_place ? cache_.k_layer(l) + (size_t)len * KV : k_new_.data();
    float* vn = in_place ? cache_.v_layer(l) + (size_t)len * KV : v_new_.data();
    rmsnorm_forward(L.dim, k, n, x_.data(), D, ps.value(li.attention_norm), c.norm_eps,
                    xn_.data(), D, rstd_.data());
    chain_linear_forward(n, xn_.data(), D,
                         {{&L.wq, k, li.r_wq.data(), q_.data(), D},
                          {&L.wk, kv_blocks, li.r_wk.data(), kn, KV},
                          {&L.wv, kv_blocks, li.r_wv.data(), vn, KV}});
    rope_forward(*table, q_.data(), n, as.n_heads, D, positions_.data());
    rope_forward(*table, kn, n, kv_heads_active, KV, positions_.data());
    if (!in_place) cache_.store_rows(l, len, n, kn, vn, KV, L.active_kv_width(k));
    cache_.attend(l, as, q_.data(), att_.data(), lse_.data());
    // Past the last layer's K/V only the rows whose logits are wanted are read: that layer's
    // output projection and FFN run on them alone.
    const int r0 = l + 1 == c.n_layers ? first : 0, nr = n - r0;
    float* x = x_.data() + (size_t)r0 * D;
    // The residual stream is updated in place: the GEMM adds onto x (beta = 1).
    chain_linear_forward(L.wo, k, nr, att_.data() + (size_t)r0 * D, D, li.r_wo.data(), x, D, 1.0f);
    rmsnorm_forward(L.dim, k, nr, x, D, ps.value(li.ffn_norm), c.norm_eps, xn_.data(), D,
                    rstd_.data());
    chain_linear_forward(
        nr, xn_.data(), D,
        {{&L.w1, k, li.r_w1.data(), h1_.data(), F}, {&L.w3, k, li.r_w3.data(), h3_.data(), F}});
    swiglu_forward(nr, Fk, h1_.data(), h3_.data(), g_.data(), F);
    chain_linear_forward(L.w2, k, nr, g_.data(), F, li.r_w2.data(), x, D, 1.0f);
  }
  for (int i = 0; i < kv_blocks; ++i) cache_.filled[i] = len + n;
  tokens_.insert(tokens_.end(), tokens, tokens + n);

  // Only the rows whose logits are wanted go through the final norm and the head.
  const int rows = n - first;
  rmsnorm_forward(L.dim, k, rows, x_.data() + (size_t)first * D, D, model_.final_norm(), c.norm_eps,
                  xn_.data(), D, rstd_.data());
  check_final_norm(rstd_.data(), rows, L.n, k);
  const std::vector<int> chains(all_logits ? rows : 1, k);
  if (all_logits) {
    head_logits(model_, rows, chains.data(), xn_.data(), D, all_logits, V, jobs_);
    std::copy(all_logits + (size_t)(rows - 1) * V, all_logits + (size_t)rows * V, logits_.begin());
  } else {
    head_logits(model_, 1, chains.data(), xn_.data(), D, logits_.data(), V, jobs_);
  }
}

int InferenceSession::phd_ring_prepare(int hidden_from, int n_new) {
  const PhdConfig& phd = model_.config().phd;
  if (n_new > 0) {
    const long h_new = (long)hidden_from * (phd.repeat - 1);  // the first new hidden token
    const bool chunk_start = phd.chunk > 0 && hidden_from % phd.chunk == 0;
    if (cache_.ring_first + cache_.ring_count != h_new || chunk_start) cache_.clear_ring(h_new);
    if (cache_.ring_free() < n_new) cache_.compact_ring();
    CHAINLM_CHECK(cache_.ring_free() >= n_new, "PHD pass of ", n_new,
                  " hidden tokens over a ring of ", cache_.ring_capacity, " rows");
  }
  return cache_.ring_start + cache_.ring_count;
}

void InferenceSession::phd_store_kv(int l, int hidden_from, int ring_row, const float* k_rows, const float* v_rows,
                                    int ld, int mixed, int width) {
  const int K = model_.config().phd.repeat, KV = cache_.width;
  float *kc = cache_.k_layer(l), *vc = cache_.v_layer(l), *kr = cache_.ring_k_layer(l), *vr = cache_.ring_v_layer(l);
  for (int r = 0; r < mixed; ++r) {
    float *kd, *vd;
    if (r % K == 0) {
      const size_t p = hidden_from + r / K;
      kd = kc + p * KV;
      vd = vc + p * KV;
    } else {
      const size_t h = (r / K) * (K - 1) + r % K - 1;  // relative to the first new hidden token
      kd = kr + (ring_row + h) * KV;
      vd = vr + (ring_row + h) * KV;
    }
    std::copy_n(k_rows + (size_t)r * ld, width, kd);
    std::copy_n(v_rows + (size_t)r * ld, width, vd);
  }
}

PhdKeys InferenceSession::phd_keys(int l, int end, int n_new) {
  const size_t KV = cache_.width;
  PhdKeys keys;
  keys.orig_k = cache_.k_layer(l);
  keys.orig_v = cache_.v_layer(l);
  keys.orig_len = end;
  keys.hid_k = cache_.ring_k_layer(l) + (size_t)cache_.ring_start * KV;
  keys.hid_v = cache_.ring_v_layer(l) + (size_t)cache_.ring_start * KV;
  keys.hidden_first = cache_.ring_first;
  keys.hidden_len = cache_.ring_count + n_new;
  return keys;
}

void InferenceSession::phd_ring_finish(int end, int n_new) {
  if (n_new == 0) return;
  const PhdConfig& phd = model_.config().phd;
  // Keep the last W hidden tokens; CSWA keeps only those of the last position's chunk.
  long keep = phd.window;
  if (phd.chunk > 0)
    keep = std::min<long>(keep, cache_.ring_first + cache_.ring_count + n_new -
                                    (long)(end - 1) / phd.chunk * phd.chunk * (phd.repeat - 1));
  cache_.keep_ring(n_new, (int)keep);
}

// PHD (SPEC B3): one pass over positions [len, len+n): the originals of [len, hidden_from), one
// row each, then all K copies of every position in [hidden_from, len+n), copy by copy. The
// originals' K/V go into the cache, the hidden copies' into the ring after the tokens it
// holds (which it drops first if they do not directly precede these, or at a CSWA chunk
// boundary); attention reads cached originals and ring, and the ring keeps the last W.
// Logits come from copy K-1 of the last position (all_logits: of every hidden_from.. one).
void InferenceSession::forward_chunk_phd(const int* tokens, int n, int k, int hidden_from,
                                         float* all_logits) {
  const ModelConfig& c = model_.config();
  const ChainLayout& L = model_.layout();
  const PhdConfig& phd = c.phd;
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const int Dk = L.dim.prefix(k), Fk = L.ffn.prefix(k), KVk = L.active_kv_width(k);
  const int K = phd.repeat, len = length(), end = len + n;
  const int orig_rows = hidden_from - len, rows = orig_rows + K * (end - hidden_from);
  const int n_new = (K - 1) * (end - hidden_from);
  for (int i = 0; i < rows; ++i) {
    const int p = i < orig_rows ? len + i : hidden_from + (i - orig_rows) / K;
    const int copy = i < orig_rows ? 0 : (i - orig_rows) % K;
    row_tokens_[i] = tokens[p - len];
    positions_[i] = phd.position(p, copy);
  }
  const int ring_row = phd_ring_prepare(hidden_from, n_new);  // where the new tokens go

  embedding_forward(rows, Dk, row_tokens_.data(), model_.embedding(), D, x_.data(), D);
  // Query rows: the originals, then the copies; the keys are given to phd_attention_forward.
  const AttentionShape as = model_.attention_shape(k, 1, rows, 0, 0);
  const int kv_blocks = L.kv_blocks(k), kv_heads_active = KVk / hd;
  auto table = rope_table(hd, c.rope_theta, c.rope_scaling, phd.position(end - 1, K - 1) + 1);
  // The rows whose logits are wanted: copy K-1 of positions [first, end), every K-th row from
  // out_row. Past the last layer's K/V products nothing else is read from the other rows, so
  // that layer's q, attention, output projection and FFN run on these alone (the few-row GEMMs
  // and the attention give each row the same bits in any batch).
  const int first = all_logits ? hidden_from : end - 1, count = end - std::max(first, hidden_from);
  const int out_row = orig_rows + (first - hidden_from) * K + K - 1;
  std::vector<int> out_positions(count);
  for (int j = 0; j < count; ++j) out_positions[j] = positions_[out_row + j * K];

  for (int l = 0; l < c.n_layers; ++l) {
    const Model::LayerIndex& li = model_.layer(l);
    const ParamStore& ps = model_.params();
    float* kc = cache_.k_layer(l);
    float* vc = cache_.v_layer(l);
    rmsnorm_forward(L.dim, k, rows, x_.data(), D, ps.value(li.attention_norm), c.norm_eps,
                    xn_.data(), D, rstd_.data());
    // The originals-only rows' K/V go straight into the cache (rows len.. are positions
    // len..); the copies' rows via k_new_/v_new_: copy 0 to the cache, the others to the ring.
    // q and both parts' K/V are independent products: a decoding step runs them in one region.
    const int mixed = rows - orig_rows;
    float* kdst[2] = {kc + (size_t)len * KV, k_new_.data()};
    float* vdst[2] = {vc + (size_t)len * KV, v_new_.data()};
    const int part_rows[2] = {orig_rows, mixed}, part_first[2] = {0, orig_rows};
    // Rows r0, r0 + ldr/D, ... (nr of them) go past the K/V products: in the last layer only
    // those whose logits are wanted. q, the attention's output and the FFN's scratch hold them
    // contiguously.
    const bool last = l + 1 == c.n_layers;
    const int r0 = last && count > 0 ? out_row : 0, nr = last ? count : rows,
              ldr = (last ? K : 1) * D;
    jobs_.clear();
    chain_linear_jobs(L.wq, k, nr, xn_.data() + (size_t)r0 * D, ldr, li.r_wq.data(), q_.data(), D,
                      0.0f, jobs_);
    for (int part = 0; part < 2; ++part) {
      if (part_rows[part] == 0) continue;
      const float* xp = xn_.data() + (size_t)part_first[part] * D;
      chain_linear_jobs(L.wk, kv_blocks, part_rows[part], xp, D, li.r_wk.data(), kdst[part], KV,
                        0.0f, jobs_);
      chain_linear_jobs(L.wv, kv_blocks, part_rows[part], xp, D, li.r_wv.data(), vdst[part], KV,
                        0.0f, jobs_);
    }
    gemm_nt_jobs(jobs_.data(), (int)jobs_.size());
    rope_forward(*table, q_.data(), nr, as.n_heads, D,
                 last ? out_positions.data() : positions_.data());
    for (int part = 0; part < 2; ++part)
      if (part_rows[part] > 0)
        rope_forward(*table, kdst[part], part_rows[part], kv_heads_active, KV,
                     positions_.data() + part_first[part]);
    phd_store_kv(l, hidden_from, ring_row, k_new_.data(), v_new_.data(), KV, mixed, KVk);
    if (nr == 0) break;  // an originals-only pass of a longer prefill: no logits
    // In the last layer: copy K-1 of positions first..end-1 alone.
    phd_attention_forward(last ? model_.attention_shape(k, 1, nr, 0, 0) : as,
                          last ? PhdQueryRows{first, first, K - 1} : PhdQueryRows{len, hidden_from},
                          phd_keys(l, end, n_new), q_.data(), att_.data(), lse_.data());
    chain_linear_forward(L.wo, k, nr, att_.data(), D, li.r_wo.data(), x_.data() + (size_t)r0 * D,
                         ldr, 1.0f);
    rmsnorm_forward(L.dim, k, nr, x_.data() + (size_t)r0 * D, ldr, ps.value(li.ffn_norm),
                    c.norm_eps, xn_.data(), D, rstd_.data());
    chain_linear_forward(
        nr, xn_.data(), D,
        {{&L.w1, k, li.r_w1.data(), h1_.data(), F}, {&L.w3, k, li.r_w3.data(), h3_.data(), F}});
    swiglu_forward(nr, Fk, h1_.data(), h3_.data(), g_.data(), F);
    chain_linear_forward(L.w2, k, nr, g_.data(), F, li.r_w2.data(), x_.data() + (size_t)r0 * D, ldr,
                         1.0f);
  }
  for (int i = 0; i < kv_blocks; ++i) cache_.filled[i] = end;
  tokens_.insert(tokens_.end(), tokens, tokens + n);
  phd_ring_finish(end, n_new);

  // Logits: copy K-1 of the last position, or of every position with copies.
  if (count == 0) return;  // an originals-only pass of a longer prefill
  const float* x_last = x_.data() + (size_t)out_row * D;
  rmsnorm_forward(L.dim, k, count, x_last, K * D, model_.final_norm(), c.norm_eps, xn_.data(), D,
                  rstd_.data());
  check_final_norm(rstd_.data(), count, L.n, k);
  const std::vector<int> chains(all_logits ? count : 1, k);
  if (all_logits) {
    head_logits(model_, count, chains.data(), xn_.data(), D, all_logits, V, jobs_);
    std::copy(all_logits + (size_t)(count - 1) * V, all_logits + (size_t)count * V, logits_.begin());
  } else {
    head_logits(model_, 1, chains.data(), xn_.data(), D, logits_.data(), V, jobs_);
  }
}

}  // namespace chainlm
