#pragma once
// Measurements shared by the benchmarks: the machine ceilings that model figures are
// compared to, taken in the same run.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/precision.h"
#include "kernels/gemm_backend.h"
#include "model/config.h"
#include "serve/server.h"

namespace chainlm::cli {

// Best-of-reps fp32 GEMM GFLOP/s on n x n x n with the current thread count, for each backend
// (gemm_backend.h); best() is the machine's fp32 GEMM peak that MFU is measured against.
// With bf16, also oneDNN's bf16 matmul (bf16 operands, fp32 sums) where the CPU has bf16
// instructions; where it has none, or they are slower (bf16_dot_rate.h), bf16 runs on the fp32
// kernels, whose peak is then bf16's too.
struct GemmPeak {
  double openblas_gflops = 0, onednn_gflops = 0, bf16_gflops = 0;
  double best(Precision p = Precision::Fp32) const {
    const double fp32 = std::max(openblas_gflops, onednn_gflops);
    return p == Precision::Bf16 ? std::max(fp32, bf16_gflops) : fp32;
  }
};
GemmPeak measure_gemm_peak(int n, int reps, Precision p = Precision::Fp32);
// Adds what a bench line says of the GEMMs: the backend in use and oneDNN's ISA, the precision
// and how bf16 runs, each backend's peak (sgemm_gflops is OpenBLAS's, as in earlier results)
// and the best for the precision.
void add_gemm_fields(nlohmann::json& j, const GemmPeak& peak, Precision p = Precision::Fp32);
// --baseline times a PHD model beside the same model without PHD: refuses a model that is not
// one (`what` names it for the message: "this model", a config's path).
void require_phd_for_baseline(const ModelConfig& c, const std::string& command,
                              const std::string& what);
// Best-of-reps read bandwidth (GB/s) over a buffer of `bytes`, with the current threads.
double measure_read_bandwidth_gbs(size_t bytes, double min_seconds = 0.2);

// The median; of an even count, the mean of the middle two (the upper one alone made the
// median of two rounds their maximum).
inline double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// baseline: also time the same config without its "phd" section, interleaved step by step,
// and report the ratio (PHD models). Under mpirun, B is the global batch: every rank steps
// B/N sequences and the gradients are summed as in training (buckets of bucket_mb, overlapped
// with the backward or not); the line (rank 0's) adds the communication time. vs_fp32 (bf16
// precision, one process): also time the same model in fp32, interleaved step by step, and
// report the speedup (the median of the per-step ratios).
void bench_train(const std::string& config_path, int B, int T, int threads, int steps,
                 const std::string& weights_arg, bool baseline = false, double bucket_mb = 16,
                 bool overlap = false, Precision precision = Precision::Fp32, bool vs_fp32 = false);

// A prompt followed by decoded tokens within `positions`: lengths left at their defaults shrink
// to fit a model of a shorter context (the docs' examples run on the quickstart model's 128
// positions), in the defaults' proportion when both were left; lengths given stay as given, for
// the caller to check. Returns whether anything shrank.
bool fit_default_lengths(int& prompt, bool prompt_given, int& tokens, bool tokens_given,
                         int positions);

struct InferenceBenchArgs {
  std::string model, config;  // a checkpoint/.bin, or a config JSON with random weights
  int chains = 0, threads = 0, prompt_tokens = 128, tokens = 128;
  // Whether --prompt-tokens / --tokens were given: the defaults shrink to fit a model of a
  // shorter context (the quickstart model has 128 positions), given lengths are checked as given.
  bool prompt_tokens_given = false, tokens_given = false;
  bool baseline = false;  // PHD: also time the model without its "phd" section, interleaved
  std::string precision = "fp32";
  bool vs_fp32 = false;  // with bf16 or --quant: also time the same weights in fp32, interleaved
  std::string quant;     // "q8_0" / "q4_0": quantize the weights in memory first (quantize.md)
  std::string kv_cache = "auto";  // the sessions' KV cache type (infer/kv_cache.h), each model's own for auto
};
void bench_decode(const InferenceBenchArgs& a);
void bench_prefill(const InferenceBenchArgs& a);

struct ServeBenchArgs {
  std::string model, tokenizer;  // tokenizer: for model files that carry none (llama2.c)
  std::vector<int> concurrency = {1, 2, 4, 8};  // clients at each level
  std::string chains = "all";           // all, mix (request i: 1 + i % n chains) or a count
  int tokens = 128, prompt_tokens = 16, requests = 0;  // requests per level; 0 = max(4, 2 x level)
  bool tokens_given = false, prompt_tokens_given = false;  // the defaults shrink, as decode's
  int threads = 0, max_sessions = 0;                   // 0: all cores; the largest level
  bool fixed_threads = false;                          // as `serve --fixed-threads`
  std::string kv_cache = "auto";                       // the server's sessions' KV cache type
  std::string precision = "fp32";  // the served weights: fp32 or bf16 (as `serve --precision`)
  std::string quant;               // or "q8_0" / "q4_0": fp32 weights quantized in memory first
  int rounds = 1;  // the levels run this many times in turn; > 1: a summary line per level
  int stream_interval_ms = ServeOptions().stream_interval_ms;  // as `serve --stream-interval-ms`
};
void bench_serve(const ServeBenchArgs& a);

}  // namespace chainlm::cli
