// The GEMMs of one batched decoding step of the CoLM-Air [2,2,2,2] 30M model
// (configs/ref30m-chains2222-air.json) with 8 rows, two per sub-model, as `chainlm serve`
// runs them (infer/batch_decode.cpp): per layer the q/k/v region (Chain-of-Linear blocks over
// the rows that use them, k and v from chain 1), the output projection, gate and up, down; 8
// layers of distinct fp32 row-major weights, then the head's running sum over chains: 63 MB
// streamed per step, past the L3 of the machines measured. Nothing but the products: the
// served step's attention, norms and HTTP threads are not here, so the difference between the
// two says what lies outside the GEMMs. Min / p25 / median of the steps.
// Build (after `make build`; one line):
//   g++ -O3 -std=c++20 -fopenmp -march=native -Isrc
//     -isystem /usr/include/x86_64-linux-gnu/openblas-openmp bench/batched_step_gemm_bench.cpp
//     -Lbuild -Wl,--start-group -lchainlm_kernels -lchainlm_core -Wl,--end-group -ldnnl
//     -lopenblas -o /tmp/bsg
// Run: /tmp/bsg [steps [threads]]   (default 300 2)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "core/aligned_vector.h"
#include "core/threads.h"
#include "kernels/gemm.h"

using namespace chainlm;

namespace {

constexpr int kDim = 512, kFfn = 1408, kChain = 128, kChainFfn = 352, kLayers = 8, kVocab = 4096;
constexpr int kKv = 128, kKvOut = 64;   // chain 1's k and v: 128 inputs, 64 outputs each
constexpr int kRows[4] = {8, 6, 4, 2};  // rows using chain block i: 2 per sub-model, largest first

struct Layer {
  AlignedVector<float> q[4], o[4], w1[4], w3[4], w2[4], k, v;
};

void fill(AlignedVector<float>& v, size_t n) {
  v.resize(n);
  for (size_t i = 0; i < n; ++i) v[i] = (float)((i * 2654435761u) % 1000) * 1e-4f;
}

WeightRef ref(const AlignedVector<float>& w) {
  WeightRef r;
  r.f32 = w.data();
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::atoi(argv[1]) : 300;
  set_num_threads(argc > 2 ? std::atoi(argv[2]) : 2);
  std::vector<Layer> layers(kLayers);
  for (Layer& l : layers) {
    for (int i = 0; i < 4; ++i) {
      fill(l.q[i], (size_t)kChain * kChain * (i + 1));
      fill(l.o[i], (size_t)kChain * kChain * (i + 1));
      fill(l.w1[i], (size_t)kChainFfn * kChain * (i + 1));
      fill(l.w3[i], (size_t)kChainFfn * kChain * (i + 1));
      fill(l.w2[i], (size_t)kChain * kChainFfn * (i + 1));
    }
    fill(l.k, (size_t)kKvOut * kKv);
    fill(l.v, (size_t)kKvOut * kKv);
  }
  AlignedVector<float> head;
  fill(head, (size_t)kVocab * kDim);
  AlignedVector<float> x(8 * kDim, 0.01f), q(8 * kDim), k(8 * kKvOut), v(8 * kKvOut), h1(8 * kFfn),
      h3(8 * kFfn), logits(8 * kVocab);
  std::vector<GemmNtJob> jobs;
  // Chain block i of a Chain-of-Linear: out columns [out * i, out * (i + 1)), inputs [0, in * (i +
  // 1)).
  auto blocks = [&](const AlignedVector<float>* w, int out, int in, const float* a, int lda,
                    float* c, int ldc, float beta) {
    for (int i = 0; i < 4; ++i) {
      jobs.push_back(
          {kRows[i], out, in * (i + 1), a, lda, ref(w[i]), in * (i + 1), c + out * i, ldc, beta});
      jobs.back().turn = i;
    }
  };
  auto run = [&] {
    gemm_nt_jobs(jobs.data(), (int)jobs.size());
    jobs.clear();
  };
  std::vector<double> ms;
  for (int s = 0; s < steps; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    for (const Layer& l : layers) {
      blocks(l.q, kChain, kChain, x.data(), kDim, q.data(), kDim, 0.0f);
      jobs.push_back({8, kKvOut, kKv, x.data(), kDim, ref(l.k), kKv, k.data(), kKvOut, 0.0f});
      jobs.push_back({8, kKvOut, kKv, x.data(), kDim, ref(l.v), kKv, v.data(), kKvOut, 0.0f});
      run();
      blocks(l.o, kChain, kChain, q.data(), kDim, x.data(), kDim, 1.0f);
      run();
      blocks(l.w1, kChainFfn, kChain, x.data(), kDim, h1.data(), kFfn, 0.0f);
      blocks(l.w3, kChainFfn, kChain, x.data(), kDim, h3.data(), kFfn, 0.0f);
      run();
      blocks(l.w2, kChain, kChainFfn, h1.data(), kFfn, x.data(), kDim, 1.0f);
      run();
    }
    for (int i = 0; i < 4; ++i) {
      WeightRef w;
      w.f32 = head.data() + kChain * i;
      jobs.push_back({kRows[i], kVocab, kChain, x.data() + kChain * i, kDim, w, kDim, logits.data(),
                      kVocab, i == 0 ? 0.0f : 1.0f});
    }
    run();
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("{\"steps\":%d,\"threads\":%d,\"ms_min\":%.3f,\"ms_p25\":%.3f,\"ms_median\":%.3f}\n",
              steps, num_threads(), ms[0], ms[ms.size() / 4], ms[ms.size() / 2]);
}
