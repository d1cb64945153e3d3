#include "kernels/chain_linear.h"

#include <vector>

#include "kernels/gemm.h"

namespace chainlm {

void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const float* const* w, float* y, int ldy, float beta) {
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    gemm_nt(M, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta);
  }
}

void chain_linear_forward(const ChainLinear& cl, int k, int M, const float* x, int ldx,
                          const WeightRef* w, float* y, int ldy, float beta) {
  for (int i = 0; i < k; ++i) {
    const int in_w = cl.in.end(i);
    gemm_nt(M, cl.out.width(i), in_w, x, ldx, w[i], in_w, y + cl.out.begin(i), ldy, beta);
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
  // Last chain first: its input prefix covers every active input column, so with
  // dx_overwrite a beta = 0 GEMM there initializes all of dx without a separate memset.
  if (first >= k) return;
  const int dx0 = cl.in.prefix(first);  // dx columns below this belong to frozen chains
  for (int i = k - 1; i >= first; --i) {
    const int in_w = cl.in.end(i), out_w = cl.out.width(i);
    const float* dyi = dy + cl.out.begin(i);
    const float beta = (dx_overwrite && i == k - 1) ? 0.0f : 1.0f;
    CHAINLM_CHECK(!w[i].quant, "a quantized weight has no backward (quantized models do not train)");
    if (w[i].bf16) {
      if (dx) gemm_nn_bf16(M, in_w - dx0, out_w, dyi, ldy, w[i].bf16 + dx0, in_w, dx + dx0, lddx, beta);
      if (dw && dw[i]) gemm_tn_bf16(out_w, in_w, M, dyi, ldy, x, ldx, dw[i], in_w, 1.0f);
    } else {
      if (dx) gemm_nn(M, in_w - dx0, out_w, dyi, ldy, w[i].f32 + dx0, in_w, dx + dx0, lddx, beta);
      if (dw && dw[i]) gemm_tn(out_w, in_w, M, dyi, ldy, x, ldx, dw[i], in_w, 1.0f);
    }
  }
}

}  // namespace chainlm
