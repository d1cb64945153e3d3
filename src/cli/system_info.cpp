#include "cli/system_info.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/number_format.h"
#include "core/openblas.h"
#include "core/threads.h"
#include "core/wait_policy.h"
#include "kernels/attention.h"
#include "kernels/bf16_dot_rate.h"
#include "kernels/gemm.h"
#include "kernels/gemm_backend.h"
#include "kernels/gemm_panels.h"

namespace chainlm::cli {

namespace {

// The CPU flags that decide which kernels can run, in the order of the ISAs they enable.
const std::vector<std::string> kFeatures = {"avx",          "avx2",        "fma",
                                            "f16c",         "avx512f",     "avx512bw",
                                            "avx512vl",     "avx512_vnni", "avx512_bf16",
                                            "amx_tile",     "amx_bf16",    "amx_int8"};

// The first "model name" and "flags" lines of /proc/cpuinfo.
void read_cpuinfo(std::string* model, std::set<std::string>* flags) {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool have_flags = false;
  while (std::getline(in, line)) {
    const size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon);
    while (!key.empty() && (key.back() == ' ' || key.back() == '\t')) key.pop_back();
    const std::string value = colon + 2 <= line.size() ? line.substr(colon + 2) : "";
    if (key == "model name" && model->empty()) *model = value;
    if (key == "flags" && !have_flags) {
      std::istringstream words(value);
      for (std::string w; words >> w;) flags->insert(w);
      have_flags = true;
    }
  }
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

}  // namespace

namespace {
// The fp32 GEMM backend's name, or what is wrong with CHAINLM_GEMM: info --system is where a
// user looks when something is, so it says it rather than stopping.
std::string gemm_backend_or_error() {
  try {
    return gemm_backend_name(gemm_backend());
  } catch (const Error& e) {
    return cat("none: ", e.what());
  }
}
}  // namespace

nlohmann::json system_info() {
  std::string model;
  std::set<std::string> flags;
  read_cpuinfo(&model, &flags);
  nlohmann::json present = nlohmann::json::array(), absent = nlohmann::json::array();
  for (const std::string& f : kFeatures) (flags.count(f) ? present : absent).push_back(f);
  // OpenBLAS loads for this (core/openblas.h); where it cannot, that is what is said of it.
  std::string core;
  try {
    const char* name = openblas().get_corename();
    core = name ? name : "unknown";
  } catch (const Error& e) {
    core = cat("not loaded: ", e.what());
  }
  return {{"cpu", model.empty() ? "unknown" : model},
          {"features", present},
          {"missing_features", absent},
          {"threads", num_threads()},
          {"omp_wait_policy", omp_wait_policy()},
          {"openblas_core", core},
          {"openblas_coretype_env", env_or("OPENBLAS_CORETYPE", "unset")},
          {"onednn_isa", onednn_isa()},
          {"onednn_max_cpu_isa_env", env_or("ONEDNN_MAX_CPU_ISA", "unset")},
          {"gemm",
           {{"fp32", gemm_backend_or_error()},
            // bf16: oneDNN's bf16 kernels, or bf16-rounded operands on the fp32 backend.
            {"bf16", bf16_gemm_native() ? std::string("onednn-bf16")
                                        : std::string("emulated on ") + gemm_backend_or_error()}}},
          // vdpbf16ps's arithmetic rate over the fp32 FMA's, measured (0: no AVX512-BF16).
          {"bf16_dot_flops_ratio", bf16_dot_flops_ratio()},
          // Attention's tile products in a bf16 run (training, evaluation): "bf16" where this
          // build has AVX512-BF16 and its dot product outruns the FMA (docs/precision.md),
          // else "fp32".
          {"attention_bf16_products", attention_runs_bf16_products() ? "bf16" : "fp32"},
          // How an fp32 model loaded for inference holds its matrices: in panels where this
          // build has the 512-bit panel kernel (docs/precision.md), else row-major.
          {"fp32_inference_weights", gemm_panels_native() ? "panels" : "row-major"}};
}

void print_system_info(const nlohmann::json& s) {
  auto join = [](const nlohmann::json& list) {
    std::string out;
    for (const auto& x : list) {
      if (!out.empty()) out += ' ';
      out += x.get<std::string>();
    }
    return out.empty() ? std::string("none") : out;
  };
  std::printf("cpu          %s\n", s["cpu"].get<std::string>().c_str());
  std::printf("features     %s (absent: %s)\n", join(s["features"]).c_str(),
              join(s["missing_features"]).c_str());
  std::printf("threads      %d (OpenMP; idle threads wait: %s)\n", s["threads"].get<int>(),
              s["omp_wait_policy"].get<std::string>().c_str());
  const std::string blas = s["openblas_core"].get<std::string>();
  std::printf("openblas     %s%s (OPENBLAS_CORETYPE %s)\n", blas.c_str(),
              blas.rfind("not loaded", 0) == 0 ? "" : " kernels",
              s["openblas_coretype_env"].get<std::string>().c_str());
  std::printf("onednn       %s kernels (ONEDNN_MAX_CPU_ISA %s)\n",
              s["onednn_isa"].get<std::string>().c_str(),
              s["onednn_max_cpu_isa_env"].get<std::string>().c_str());
  std::printf("fp32 GEMM    %s (CHAINLM_GEMM chooses; docs/precision.md)\n",
              s["gemm"]["fp32"].get<std::string>().c_str());
  const double ratio = s["bf16_dot_flops_ratio"].get<double>();
  std::printf("bf16 GEMM    %s (--precision bf16; few-row decode steps: chainlm's kernel)%s\n",
              s["gemm"]["bf16"].get<std::string>().c_str(),
              ratio > 0.0
                  ? cat("; bf16 dot product at ", fixed(ratio, 2), "x the fp32 FMA's rate").c_str()
                  : "");
  std::printf("attention    %s tile products in bf16 training and evaluation (decoding: fp32)\n",
              s["attention_bf16_products"].get<std::string>().c_str());
  std::printf("fp32 infer   weights %s (generate, serve, eval: %s)\n",
              s["fp32_inference_weights"].get<std::string>().c_str(),
              s["fp32_inference_weights"] == "panels"
                  ? "every product on the panel kernel"
                  : "few-row kernel up to 32 rows, then the fp32 GEMM");
}

std::string bf16_gemm_note() {
  if (bf16_gemm_native()) return "bf16 GEMM instructions";
  const double ratio = bf16_dot_flops_ratio();
  if (ratio > 0.0 && has_bf16_instructions())
    return cat("this CPU's bf16 dot product runs at ", fixed(ratio, 2),
               "x its fp32 FMA's rate and oneDNN runs no AMX here: bf16 operands on the fp32 kernels, no "
               "faster than --precision fp32 here (docs/precision.md)");
  return "no bf16 GEMM instructions here: bf16 operands on fp32 kernels, slower than fp32; chainlm "
         "info --system says what attention runs";
}

}  // namespace chainlm::cli
