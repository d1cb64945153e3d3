#include "infer/batch_decode.h"

#include <algorithm>
#include <exception>

#include "core/error.h"
#include "core/threads.h"
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

// Rows [first, first + count) of a pass all run sub-model k.
struct Group {
  int k, first, count;
};

std::vector<Group> groups_of(const DecodeRow* rows, int n) {
  std::vector<Group> g;
  for (int r = 0; r < n; ++r) {
    if (g.empty() || g.back().k != rows[r].chains) g.push_back({rows[r].chains, r, 0});
    ++g.back().count;
  }
  return g;
}

// The Chain-of-Linear forward over rows of several sub-models: output block i for the rows
// whose sub-model has more than i blocks (blocks_of(row)), a prefix of the rows. Appended to
// jobs, so that the products of one input (q, k and v; w1 and w3) share a parallel region.
template <typename BlocksOf>
void chain_linear_rows(const ChainLinear& cl, int n, BlocksOf blocks_of, const float* x, int ldx,
                       const WeightRef* w, float* y, int ldy, float beta,
                       std::vector<GemmNtJob>& jobs) {
  for (int i = 0; i < cl.out.n(); ++i) {
    int rows = 0;
    while (rows < n && blocks_of(rows) > i) ++rows;
    if (rows == 0) break;
    const int in_w = cl.in.end(i);
    jobs.push_back(
        {rows, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta});
    jobs.back().turn = i;  // the gate and up blocks i split alike, for SwiGLU's `then`
  }
}

// gemm_nt_jobs' `then` for an up-projection (w3) block: SwiGLU of the job's rows over its columns
// [n0, n1), from the same columns of the gate (w1) product, which the same thread computed first.
struct SwigluOfBlock {
  const float* h1;
  const float* h3;
  float* g;
};
void swiglu_of_block(const GemmNtJob& job, int n0, int n1, const void* ctx) {
  const auto& s = *static_cast<const SwigluOfBlock*>(ctx);
  const long col = (job.C - s.h3) + n0;  // rows from 0, as the jobs' C
  swiglu_forward(job.M, n1 - n0, s.h1 + col, s.h3 + col, s.g + col, job.ldc);
}

}  // namespace

BatchDecoder::BatchDecoder(const Model& model) : model_(model) {
  const ModelConfig& c = model.config();
  const size_t R = kMaxDecodeRows, D = c.dim, F = c.ffn_dim, KV = model.layout().kv.total();
  for (auto* v : {&x_, &xn_, &q_, &att_}) v->resize(R * D);
  for (auto* v : {&h1_, &h3_, &g_}) v->resize(R * F);
  k_new_.resize(R * KV);
  v_new_.resize(R * KV);
  rstd_.resize(R * model.layout().n);
  lse_.resize(R * c.n_heads);
  logits_.resize(R * c.vocab_size);
  tokens_.resize(R);
  positions_.resize(R);
}

std::vector<const float*> BatchDecoder::step(const std::vector<DecodeRow>& rows) {
  const ModelConfig& c = model_.config();
  // Rows of one sequence in a pass: a PHD step runs the new token's K copies.
  const int per_seq = c.phd.enabled() ? c.phd.repeat : 1;
  std::vector<const float*> out(rows.size(), nullptr);
  std::vector<int> batched;  // indices of rows that share passes
  for (size_t r = 0; r < rows.size(); ++r) {
    InferenceSession& s = *rows[r].session;
    CHAINLM_CHECK(&s.model_ == &model_, "a decoding row's session belongs to another model");
    if (per_seq > kMaxDecodeRows || s.needs_recompute(rows[r].chains)) {
      out[r] = s.decode(rows[r].token, rows[r].chains);  // checks the row itself
      continue;
    }
    CHAINLM_CHECK(rows[r].chains >= 1 && rows[r].chains <= c.n_chains(), "active chains ", rows[r].chains,
                  " is outside 1..", c.n_chains());
    CHAINLM_CHECK(rows[r].token >= 0 && rows[r].token < c.vocab_size, "token id ", rows[r].token,
                  " is outside the vocabulary (size ", c.vocab_size, ")");
    CHAINLM_CHECK(s.length() < c.max_seq_len, "the sequence would be ", s.length() + 1,
                  " tokens, longer than the model's max_seq_len ", c.max_seq_len);
    batched.push_back((int)r);
  }
  // Largest sub-models first, so the rows of every chain block are a prefix of a pass.
  std::stable_sort(batched.begin(), batched.end(),
                   [&](int a, int b) { return rows[a].chains > rows[b].chains; });
  const size_t per_pass = kMaxDecodeRows / per_seq;
  for (size_t p = 0; p < batched.size(); p += per_pass) {
    const int n = (int)std::min(per_pass, batched.size() - p);
    std::vector<DecodeRow> pass(n);
    for (int i = 0; i < n; ++i) pass[i] = rows[batched[p + i]];
    forward(pass.data(), n);
    for (int i = 0; i < n; ++i) out[batched[p + i]] = pass[i].session->logits_.data();
  }
  return out;
}

// session.forward_chunk's pass for one new token per sequence (forward_chunk_phd's with its K
// copies for PHD), each sequence over its own cache; the per-row kernels and batch-invariant
// GEMMs give each sequence what its session gives it alone.
void BatchDecoder::forward(const DecodeRow* seqs, int n) {
  const ModelConfig& c = model_.config();
  const ChainLayout& L = model_.layout();
  const PhdConfig& phd = c.phd;
  const int D = c.dim, F = c.ffn_dim, V = c.vocab_size, KV = L.kv.total(), hd = L.head_dim;
  const int R = phd.enabled() ? phd.repeat : 1, rows = n * R;  // sequence s has rows s*R .. s*R+R-1
  const std::vector<Group> groups = groups_of(seqs, n);
  int max_pos = 0;
  std::vector<int> ring_row(n);
  for (int s = 0; s < n; ++s) {
    const int len = seqs[s].session->length();
    for (int copy = 0; copy < R; ++copy) {
      tokens_[s * R + copy] = seqs[s].token;
      positions_[s * R + copy] = phd.enabled() ? phd.position(len, copy) : len;
      max_pos = std::max(max_pos, positions_[s * R + copy]);
    }
    if (phd.enabled()) ring_row[s] = seqs[s].session->phd_ring_prepare(len, R - 1);
  }
  auto kv_blocks_of = [&](int row) { return L.kv_blocks(seqs[row / R].chains); };
  auto table = rope_table(hd, c.rope_theta, c.rope_scaling, max_pos + 1);
  for (const Group& g : groups)
    embedding_forward(g.count * R, L.dim.prefix(g.k), tokens_.data() + g.first * R, model_.embedding(), D,
                      x_.data() + (size_t)g.first * R * D, D);

  // Per group of sequences with one sub-model: RMSNorm of `per` rows of each sequence (rows r0,
  // r0 + ldr/D, ... of its R in x) into xn, there `per` rows per sequence.
  auto norm = [&](const float* gain, int r0, int per, int ldr, bool final = false) {
    for (const Group& g : groups) {
      rmsnorm_forward(L.dim, g.k, g.count * per, x_.data() + ((size_t)g.first * R + r0) * D, ldr, gain,
                      c.norm_eps, xn_.data() + (size_t)g.first * per * D, D, rstd_.data());
      if (final) check_final_norm(rstd_.data(), g.count * per, L.n, g.k);
    }
  };
  const ParamStore& ps = model_.params();
  // The products queued in jobs_, in one parallel region.
  jobs_.clear();
  auto run_jobs = [&] {
    gemm_nt_jobs(jobs_.data(), (int)jobs_.size());
    jobs_.clear();
  };
  // Copy R-1's position of each sequence (the last layer's query rows).
  std::vector<int> last_positions(n);
  for (int s = 0; s < n; ++s) last_positions[s] = positions_[s * R + R - 1];
  for (int l = 0; l < c.n_layers; ++l) {
    const Model::LayerIndex& li = model_.layer(l);
    // Past the last layer's K/V a PHD step reads only each sequence's copy K-1 (its logits):
    // that layer's q, attention, output projection and FFN run on those rows alone (every R-th
    // row of x and xn; q, att and the FFN's scratch hold them one per sequence).
    const bool last = l + 1 == c.n_layers;
    const int r0 = last ? R - 1 : 0, per = last ? 1 : R, ldr = (last ? R : 1) * D;
    auto out_chains_of = [&](int row) { return seqs[row / per].chains; };
    norm(ps.value(li.attention_norm), 0, R, D);
    chain_linear_rows(L.wq, n * per, out_chains_of, xn_.data() + (size_t)r0 * D, ldr,
                      li.r_wq.data(), q_.data(), D, 0.0f, jobs_);
    chain_linear_rows(L.wk, rows, kv_blocks_of, xn_.data(), D, li.r_wk.data(), k_new_.data(), KV,
                      0.0f, jobs_);
    chain_linear_rows(L.wv, rows, kv_blocks_of, xn_.data(), D, li.r_wv.data(), v_new_.data(), KV,
                      0.0f, jobs_);
    run_jobs();
    for (const Group& g : groups) {
      const int first = g.first * R, count = g.count * R;
      const AttentionShape as = model_.attention_shape(g.k, 1, 1, 1, 0);
      rope_forward(*table, q_.data() + (size_t)g.first * per * D, g.count * per, as.n_heads, D,
                   last ? last_positions.data() + g.first : positions_.data() + first);
      rope_forward(*table, k_new_.data() + (size_t)first * KV, count, L.active_kv_width(g.k) / hd, KV,
                   positions_.data() + first);
    }
    // Each sequence's new K/V into its cache (PHD: copies past the first into its ring) and
    // its attention over them.
    auto attend = [&](int s) {
      InferenceSession& session = *seqs[s].session;
      KVCache& cache = session.cache_;
      const int len = session.length(), k = seqs[s].chains, width = L.active_kv_width(k);
      const size_t row = (size_t)s * R, qrow = (size_t)s * per;
      if (phd.enabled()) {
        session.phd_store_kv(l, len, ring_row[s], k_new_.data() + row * KV, v_new_.data() + row * KV, KV, R, width);
        phd_attention_forward(model_.attention_shape(k, 1, per, 0, 0), PhdQueryRows{len, len, r0},
                              session.phd_keys(l, len + 1, R - 1), q_.data() + qrow * D,
                              att_.data() + qrow * D, lse_.data() + qrow * c.n_heads);
        return;
      }
      cache.store_rows(l, len, 1, k_new_.data() + row * KV, v_new_.data() + row * KV, KV, width);
      cache.attend(l, model_.attention_shape(k, 1, 1, len + 1, len), q_.data() + row * D, att_.data() + row * D,
                   lse_.data() + row * c.n_heads);
    };
    // Several sequences: one parallel region over them (each one's heads then on its thread)
    // rather than a region per sequence, which cost 3-4 us each on the machines measured. An
    // exception may not leave an OpenMP region: one is carried out and rethrown here.
    long attend_work = 0;
    for (int s = 0; s < n; ++s)
      attend_work += (long)per * c.n_heads * (seqs[s].session->length() + 1) * hd;
    if (n > 1 && worth_parallel(attend_work)) {
      std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
      for (int s = 0; s < n; ++s) {
        try {
          attend(s);
        } catch (...) {
#pragma omp critical(chainlm_batch_attend_error)
          if (!error) error = std::current_exception();
        }
      }
      if (error) std::rethrow_exception(error);
    } else {
      for (int s = 0; s < n; ++s) attend(s);
    }
    chain_linear_rows(L.wo, n * per, out_chains_of, att_.data(), D, li.r_wo.data(),
                      x_.data() + (size_t)r0 * D, ldr, 1.0f, jobs_);
    run_jobs();
    norm(ps.value(li.ffn_norm), r0, per, ldr);
    chain_linear_rows(L.w1, n * per, out_chains_of, xn_.data(), D, li.r_w1.data(), h1_.data(), F,
                      0.0f, jobs_);
    const size_t up_first = jobs_.size();
    chain_linear_rows(L.w3, n * per, out_chains_of, xn_.data(), D, li.r_w3.data(), h3_.data(), F,
                      0.0f, jobs_);
    // SwiGLU of each up-projection block's columns on the thread that has just computed them
    // (and the same gate columns before them): no serial pass over rows the other thread wrote.
    // Row r gets FFN blocks 0 .. its chains - 1, its sub-model's prefix, as alone.
    const SwigluOfBlock swiglu_ctx{h1_.data(), h3_.data(), g_.data()};
    for (size_t j = up_first; j < jobs_.size(); ++j) {
      jobs_[j].then = &swiglu_of_block;
      jobs_[j].then_ctx = &swiglu_ctx;
    }
    run_jobs();
    chain_linear_rows(L.w2, n * per, out_chains_of, g_.data(), F, li.r_w2.data(),
                      x_.data() + (size_t)r0 * D, ldr, 1.0f, jobs_);
    run_jobs();
  }
  // The logits come from each sequence's last row (a PHD step's copy K-1).
  norm(model_.final_norm(), R - 1, 1, R * D, true);
  std::vector<int> chains(n);
  for (int s = 0; s < n; ++s) chains[s] = seqs[s].chains;
  head_logits(model_, n, chains.data(), xn_.data(), D, logits_.data(), V, jobs_);
  for (int s = 0; s < n; ++s) {
    InferenceSession& session = *seqs[s].session;
    const int end = session.length() + 1;
    for (int i = 0; i < L.kv_blocks(seqs[s].chains); ++i) session.cache_.filled[i] = end;
    session.tokens_.push_back(seqs[s].token);
    if (phd.enabled()) session.phd_ring_finish(end, R - 1);
    std::copy_n(logits_.data() + (size_t)s * V, V, session.logits_.begin());
  }
}

}  // namespace chainlm
