// oneDNN 2.6's fp32 matmul kernels side by side: what it picks for dense operands (brgemm),
// for strided ones (its jit GEMM), and the jit GEMM forced on dense operands by a batch of one
// with a non-dense batch stride (what src/kernels/onednn_matmul.cpp does for fp32, so results do
// not depend on strides). GFLOP/s, best of 5 x 0.2 s. bench/RESULTS.md, "GEMM backend".
// Build: g++ -O2 -std=c++17 bench/onednn_kernel_choice_bench.cpp -ldnnl -o /tmp/kc
// Run:   OMP_NUM_THREADS=1 /tmp/kc; OMP_NUM_THREADS=2 /tmp/kc
#include <oneapi/dnnl/dnnl.hpp>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>
using namespace dnnl;
using dt = memory::data_type;
engine eng(engine::kind::cpu, 0);
stream st(eng);
// transb: B stored as [N x K] (weights), ld given
double run(int M, int N, int K, int lda, int ldb, int ldc, bool bf16, const std::string& want, std::string* got, bool tb=true, bool ta=false) {
  dt in = bf16 ? dt::bf16 : dt::f32;
  memory::desc a({M, K}, in, ta ? memory::dims{1, lda} : memory::dims{lda, 1});
  memory::desc b({K, N}, in, tb ? memory::dims{1, ldb} : memory::dims{ldb, 1});
  memory::desc c({M, N}, dt::f32, memory::dims{ldc, 1});
  if (want == "3d") {
    a = memory::desc({1, M, K}, in, ta ? memory::dims{(long)M*lda+1, 1, lda} : memory::dims{(long)M*lda+1, lda, 1});
    b = memory::desc({1, K, N}, in, tb ? memory::dims{(long)N*ldb+1, 1, ldb} : memory::dims{(long)K*ldb+1, ldb, 1});
    c = memory::desc({1, M, N}, dt::f32, memory::dims{(long)M*ldc+1, ldc, 1});
  }
  matmul::primitive_desc pd(matmul::desc(a, b, c), eng);
  if (!want.empty() && want != "3d") {
    while (std::string(pd.impl_info_str()).rfind(want, 0) != 0) {
      if (!pd.next_impl()) { *got = "none"; return 0; }
    }
  }
  *got = pd.impl_info_str();
  size_t asz = (size_t)(ta ? K : M) * lda, bsz = (size_t)(tb ? N : K) * ldb;
  std::vector<float> A(asz * 2, 0.01f), B(bsz * 2, 0.02f), C((size_t)M * ldc);
  memory am(a, eng, A.data()), bm(b, eng, B.data()), cm(c, eng, C.data());
  matmul p(pd);
  auto ex = [&] { p.execute(st, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}}); st.wait(); };
  ex();
  double best = 1e9;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    int it = 0; double el;
    do { ex(); ++it; el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); } while (el < 0.2);
    best = std::min(best, el / it);
  }
  return 2.0 * M * N * K / best / 1e9;
}
int main() {
  struct S { int M, N, K; bool tb, ta; } shapes[] = {
    {2048, 512, 512, true, false}, {2048, 1408, 512, true, false}, {2048, 512, 1408, true, false},
    {2048, 4096, 512, true, false}, {2048, 512, 512, false, false}, {512, 512, 2048, false, true},
    {512, 1408, 2048, false, true}, {2048, 128, 128, true, false}, {2048, 256, 256, true, false}};
  for (auto s : shapes) for (bool bf : {false}) {
    std::string g1, g2, g3, g4;
    int lda = s.ta ? s.M : s.K, ldb = s.tb ? s.K : s.N;
    double any = run(s.M, s.N, s.K, lda, ldb, s.N, bf, "", &g1, s.tb, s.ta);
    double strided = run(s.M, s.N, s.K, lda + 64, ldb + 64, s.N + 64, bf, "", &g4, s.tb, s.ta);
    double gj = run(s.M, s.N, s.K, lda, ldb, s.N, bf, "3d", &g2, s.tb, s.ta);
    double br = run(s.M, s.N, s.K, lda, ldb, s.N, bf, "", &g3, s.tb, s.ta);
    printf("%5d %5d %5d tb%d ta%d %s  default %-22s %6.0f | strided %-22s %6.0f | %-22s %6.0f | %-22s %6.0f\n", s.M, s.N, s.K, s.tb, s.ta, bf ? "bf16" : "f32 ",
           g1.c_str(), any, g4.c_str(), strided, g2.c_str(), gj, g3.c_str(), br);
  }
}
