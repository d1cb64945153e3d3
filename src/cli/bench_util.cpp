#include "cli/bench_util.h"

#include "core/aligned_vector.h"
#include "core/error.h"
#include "core/openblas.h"
#include "core/rng.h"
#include "core/threads.h"
#include "core/timer.h"
#include "kernels/bf16.h"
#include "kernels/bf16_dot_rate.h"
#include "kernels/gemm.h"
#include "kernels/onednn_matmul.h"

namespace chainlm::cli {

GemmPeak measure_gemm_peak(int n, int reps, Precision p) {
  // OpenBLAS's sgemm (an OpenMP build) sets OpenMP's thread count to its own, at most 64: the
  // count asked for is put back when the measurement ends (bench train ran 64 for --threads 70).
  struct KeepThreads {
    int n = num_threads();
    ~KeepThreads() { set_num_threads_of_this_thread(n); }
  } keep;
  // Aligned as the model's weights and activations are: the peak MFU divides by must not be
  // measured on slower (line-straddling) operands than the step's.
  AlignedVector<float> a((size_t)n * n), b((size_t)n * n), c((size_t)n * n);
  Rng rng(1);
  for (auto& x : a) x = rng.uniform() - 0.5f;
  for (auto& x : b) x = rng.uniform() - 0.5f;
  GemmPeak peak;
  // Timed wherever oneDNN has bf16 kernels, also where the run takes the fp32 kernels for
  // being faster (bf16_dot_rate.h): the line then shows both rates.
  if (p == Precision::Bf16 && has_bf16_instructions()) {
    AlignedVector<bf16_t> ah(a.size()), bh(b.size());
    to_bf16(a.data(), ah.data(), a.size());
    to_bf16(b.data(), bh.data(), b.size());
    for (int r = 0; r < reps + 1; ++r) {
      Timer t;
      onednn_bf16_gemm(false, true, n, n, n, ah.data(), n, bh.data(), n, c.data(), n, 0.0f);
      if (r > 0) peak.bf16_gflops = std::max(peak.bf16_gflops, 2.0 * n * n * (double)n / t.seconds() / 1e9);
    }
  }
  // Interleaved, so a drift in the machine's load hits both backends alike.
  for (int r = 0; r < reps + 1; ++r)
    for (GemmBackend backend : {GemmBackend::OpenBlas, GemmBackend::OneDnn}) {
      Timer t;
      if (backend == GemmBackend::OpenBlas)
        openblas().sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n,
                         b.data(), n, 0.0f, c.data(), n);
      else
        onednn_sgemm(false, true, n, n, n, a.data(), n, b.data(), n, c.data(), n, 0.0f);
      const double gflops = 2.0 * n * n * (double)n / t.seconds() / 1e9;
      if (r == 0) continue;  // warms up
      double& best = backend == GemmBackend::OpenBlas ? peak.openblas_gflops : peak.onednn_gflops;
      best = std::max(best, gflops);
    }
  return peak;
}

void add_gemm_fields(nlohmann::json& j, const GemmPeak& peak, Precision p) {
  j["precision"] = precision_name(p);
  j["gemm_backend"] = gemm_backend_name(gemm_backend());
  j["isa"] = onednn_isa();
  j["sgemm_gflops"] = peak.openblas_gflops;
  j["onednn_gflops"] = peak.onednn_gflops;
  if (p == Precision::Bf16) {
    // native: oneDNN's bf16 kernels; emulated: bf16-rounded operands on the fp32 kernels.
    j["bf16_gemm"] = bf16_gemm_native() ? "native" : "emulated";
    j["bf16_gflops"] = peak.bf16_gflops;
    j["bf16_dot_flops_ratio"] = bf16_dot_flops_ratio();
  }
  j["peak_gflops"] = peak.best(p);
}

void require_phd_for_baseline(const ModelConfig& c, const std::string& command,
                              const std::string& what) {
  CHAINLM_CHECK(c.phd.enabled(), command, ": --baseline compares a PHD model with the same model ",
                "without PHD, but ", what, " is not a PHD model (no \"phd\" section, or its ",
                "repeat is 1: every token once)");
}

double measure_read_bandwidth_gbs(size_t bytes, double min_seconds) {
  // 256-float blocks summed into 16 independent vector accumulators per thread, so the
  // loop is bound by loads, not by the latency of one add chain.
  constexpr size_t kBlock = 256;
  const size_t blocks = std::max<size_t>(bytes / sizeof(float) / kBlock, 64);
  // On cache lines, as the weights are (core/aligned_vector.h): from a plain vector, 16 bytes
  // off, every 64-byte load straddled two lines and the probe read ~25 GB/s where decoding
  // streamed 35, so fraction_of_bound came out above 1.
  AlignedVector<float> buf(blocks * kBlock, 1.0f);
  const float* data = buf.data();
  double best = 0;
  volatile float sink = 0;
  for (int rep = 0; rep < 3; ++rep) {
    Timer t;
    long passes = 0;
    do {
      float total = 0;
#pragma omp parallel reduction(+ : total)
      {
        float acc[16][16] = {};
#pragma omp for schedule(static)
        for (size_t i = 0; i < blocks; ++i) {
          const float* p = data + i * kBlock;
          for (int j = 0; j < 16; ++j)
#pragma omp simd
            for (int l = 0; l < 16; ++l) acc[j][l] += p[j * 16 + l];
        }
        for (int j = 0; j < 16; ++j)
          for (int l = 0; l < 16; ++l) total += acc[j][l];
      }
      sink = sink + total;
      ++passes;
    } while (t.seconds() < min_seconds / 3);
    best = std::max(best, (double)passes * buf.size() * sizeof(float) / t.seconds() / 1e9);
  }
  return best;
}

bool fit_default_lengths(int& prompt, bool prompt_given, int& tokens, bool tokens_given,
                         int positions) {
  if (prompt + tokens <= positions || positions < 2) return false;
  const int before_prompt = prompt, before_tokens = tokens;
  if (!prompt_given && !tokens_given) {
    tokens = std::clamp((int)((long long)positions * tokens / (prompt + tokens)), 1, positions - 1);
    prompt = positions - tokens;
  } else if (!tokens_given && prompt < positions) {  // else the length given is wrong
    tokens = positions - prompt;
  } else if (!prompt_given && tokens < positions) {
    prompt = positions - tokens;
  }
  return prompt != before_prompt || tokens != before_tokens;
}

}  // namespace chainlm::cli
