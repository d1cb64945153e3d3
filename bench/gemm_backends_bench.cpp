// The engine's GEMM shapes (30M model, 8 x 256 rows) on both backends through gemm.h, best of
// 4 x 5 calls each, interleaved. Build and run (from the repo root, after `make build`):
//   g++ -O2 -std=c++20 -fopenmp -Isrc bench/gemm_backends_bench.cpp build/libchainlm_kernels.a \
//     build/libchainlm_core.a -ldnnl -lopenblas -o /tmp/gemm_backends_bench
//   OMP_NUM_THREADS=2 OMP_WAIT_POLICY=passive /tmp/gemm_backends_bench
// Kinds: n = gemm_nt (forward, weights N x K), m = gemm_nn (input gradients), t = gemm_tn
// (weight gradients); beta 1 accumulates (fused residual adds, gradient sums).
#include <chrono>
#include <cstdio>
#include <vector>
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"
using namespace chainlm;
double now(){return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();}
int main() {
  struct S{char k; int M,N,K; float beta;} shapes[]={{'n',2048,512,512,0},{'n',2048,512,512,1},{'n',2048,1408,512,0},{'n',2048,512,1408,1},{'n',2048,4096,512,0},{'m',2048,512,512,0},{'m',2048,512,1408,0},{'m',2048,1408,512,1},{'t',512,512,2048,1},{'t',1408,512,2048,1},{'t',512,1408,2048,1}};
  for (auto s: shapes){
    std::vector<float> A((size_t)s.M*s.K*2,0.1f),B((size_t)s.N*s.K,0.2f),C((size_t)s.M*s.N,0.f);
    double best[2]={1e9,1e9};
    for(int r=0;r<4;r++) for(int b=0;b<2;b++){ set_gemm_backend(b?GemmBackend::OneDnn:GemmBackend::OpenBlas);
      auto call=[&]{ if(s.k=='n') gemm_nt(s.M,s.N,s.K,A.data(),s.K,B.data(),s.K,C.data(),s.N,s.beta);
        else if(s.k=='m') gemm_nn(s.M,s.N,s.K,A.data(),s.K,B.data(),s.N,C.data(),s.N,s.beta);
        else gemm_tn(s.M,s.N,s.K,A.data(),s.M,B.data(),s.N,C.data(),s.N,s.beta);};
      call(); double t=now(); for(int i=0;i<5;i++) call(); best[b]=std::min(best[b],(now()-t)/5);}
    double fl=2.0*s.M*s.N*s.K;
    printf("%c M%d N%d K%d beta%g: openblas %.1f onednn %.1f GF/s\n",s.k,s.M,s.N,s.K,s.beta,fl/best[0]/1e9,fl/best[1]/1e9);
  }
}
