#include "kernels/chain_linear.h"

#include <vector>

#include "core/thread_scratch.h"
#include "kernels/gemm.h"

namespace chainlm {

namespace {

// Per-thread buffers: the rounded x (slot 0) and dy (slot 1) of a bf16 product.
struct ChainLinearScratch;
bf16_t* scratch(int slot, std::size_t n) { return thread_scratch<bf16_t, ChainLinearScratch, 2>(slot, n); }

// Whether blocks [first, k) are bf16; a model's blocks are all in one form.
bool bf16_blocks(const WeightRef* w, int first, int k) {
  if (first >= k || !w[first].bf16) return false;
  for (int i = first; i < k; ++i)
    CHAINLM_CHECK(w[i].bf16, "a Chain-of-Linear mixes bf16 and other weight blocks");
  return true;
}

// The bf16 backward of blocks [first, k) given dy in bf16 from output column out.begin(first)
// on (dy0, rows ldy apart).
void backward_bf16(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                   const WeightRef* w, const bf16_t* dy0, int ldy, float* dx, int lddx,
                   float* const* dw, bool dx_overwrite, int first) {
  CHAINLM_CHECK(bf16_blocks(w, first, k), "a bf16 activation needs bf16 weight blocks");
  const int o0 = cl.out.begin(first), dx0 = cl.in.prefix(first);
  for (int i = k - 1; i >= first; --i) {
    const int in_w = cl.in.end(i), out_w = cl.out.width(i);
    const bf16_t* dyi = dy0 + (cl.out.begin(i) - o0);
    const float beta = (dx_overwrite && i == k - 1) ? 0.0f : 1.0f;
    if (dx)
      gemm_nn_bf16(M, in_w - dx0, out_w, dyi, ldy, w[i].bf16 + dx0, in_w, dx + dx0, lddx, beta);
    if (dw && dw[i]) gemm_tn_bf16(out_w, in_w, M, dyi, ldy, x, ldx, dw[i], in_w, 1.0f);
  }
}

}  // namespace

void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const float* const* w, float* y, int ldy, float beta) {
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    gemm_nt(M, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta);
  }
}

void chain_linear_jobs(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                       const WeightRef* w, float* y, int ldy, float beta,
                       std::vector<GemmNtJob>& jobs) {
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    jobs.push_back({M, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta});
  }
}

void chain_linear_forward(int M, const float* x, int ldx,
                          std::initializer_list<ChainLinearOutput> outs) {
  // Products the libraries would compute in tiles fixed by their shapes (gemm.h
  // ThreadInvariantProducts): every block of every output in one set of tiles.
  const bool tiled = M > kMaxDecodeRows && thread_invariant_products();
  if (M > kMaxDecodeRows && !tiled) {
    for (const ChainLinearOutput& o : outs)
      chain_linear_forward(*o.cl, o.k, M, x, ldx, o.w, o.y, o.ldy, o.beta);
    return;
  }
  std::vector<GemmNtJob> jobs;
  for (const ChainLinearOutput& o : outs)
    chain_linear_jobs(*o.cl, o.k, M, x, ldx, o.w, o.y, o.ldy, o.beta, jobs);
  gemm_nt_jobs(jobs.data(), (int)jobs.size());
}

void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const WeightRef* w, float* y, int ldy, float beta) {
  // A decoding step's rows: the k blocks in one parallel region; so are a pass's tiles.
  if ((M <= kMaxDecodeRows && k > 1) || (M > kMaxDecodeRows && thread_invariant_products()))
    return chain_linear_forward(M, x, ldx, {{&cl, k, w, y, ldy, beta}});
  // bf16 blocks and more rows than a decoding step: x is rounded once for all k blocks (the
  // few-row kernels round their handful of rows themselves).
  if (M > kMaxDecodeRows && bf16_blocks(w, 0, k)) {
    const int width = cl.in.end(k - 1);
    bf16_t* xh = scratch(0, (std::size_t)M * width);
    to_bf16_rows(M, width, x, ldx, xh, width);
    return chain_linear_forward(cl, k, M, xh, width, w, y, ldy, beta);
  }
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    gemm_nt(M, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta);
  }
}

void chain_linear_forward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                          const WeightRef* w, float* y, int ldy, float beta) {
  if (k > 0) CHAINLM_CHECK(bf16_blocks(w, 0, k), "a bf16 activation needs bf16 weight blocks");
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    gemm_nt_bf16(M, cl.out.width(i), in_w, x, ldx, w[i].bf16, in_w, y + cl.out.begin(i), ldy, beta);
  }
}

void chain_linear_backward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                           const float* const* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite, int first) {
  std::vector<WeightRef> refs(k);
  for (int i = 0; i < k; ++i) refs[i].f32 = w[i];
  chain_linear_backward(cl, k, M, x, ldx, refs.data(), dy, ldy, dx, lddx, dw, dx_overwrite, first);
}

void chain_linear_backward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                           const WeightRef* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite, int first) {
  if (first >= k) return;
  if (bf16_blocks(w, first, k)) {
    // x is rounded once for all blocks' weight gradients (if any block has one).
    bool need_x = false;
    for (int i = first; i < k; ++i) need_x = need_x || (dw && dw[i]);
    const int width = cl.in.end(k - 1);
    bf16_t* xh = need_x ? scratch(0, (std::size_t)M * width) : nullptr;
    if (need_x) to_bf16_rows(M, width, x, ldx, xh, width);
    return chain_linear_backward(cl, k, M, xh, width, w, dy, ldy, dx, lddx, dw, dx_overwrite, first);
  }
  // Last chain first: its input prefix covers every active input column, so with
  // dx_overwrite a beta = 0 GEMM there initializes all of dx without a separate memset.
  const int dx0 = cl.in.prefix(first);  // dx columns below this belong to frozen chains
  for (int i = k - 1; i >= first; --i) {
    const int in_w = cl.in.end(i), out_w = cl.out.width(i);
    const float* dyi = dy + cl.out.begin(i);
    const float beta = (dx_overwrite && i == k - 1) ? 0.0f : 1.0f;
    CHAINLM_CHECK(!w[i].quant, "a quantized weight has no backward (quantized models do not train)");
    if (dx) gemm_nn(M, in_w - dx0, out_w, dyi, ldy, w[i].f32 + dx0, in_w, dx + dx0, lddx, beta);
    if (dw && dw[i]) gemm_tn(out_w, in_w, M, dyi, ldy, x, ldx, dw[i], in_w, 1.0f);
  }
}

void chain_linear_backward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                           const WeightRef* w, const float* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite, int first) {
  if (first >= k) return;
  // dy is rounded once for both products of every block (the active blocks' columns only).
  const int o0 = cl.out.begin(first), width = cl.out.end(k - 1) - o0;
  bf16_t* dyh = scratch(1, (std::size_t)M * width);
  to_bf16_rows(M, width, dy + o0, ldy, dyh, width);
  backward_bf16(cl, k, M, x, ldx, w, dyh, width, dx, lddx, dw, dx_overwrite, first);
}

void chain_linear_backward(const ChainLinear& cl, int k, int M, const bf16_t* x, int ldx,
                           const WeightRef* w, const bf16_t* dy, int ldy, float* dx, int lddx,
                           float* const* dw, bool dx_overwrite, int first) {
  if (first >= k) return;
  backward_bf16(cl, k, M, x, ldx, w, dy + cl.out.begin(first), ldy, dx, lddx, dw, dx_overwrite,
                first);
}

}  // namespace chainlm
