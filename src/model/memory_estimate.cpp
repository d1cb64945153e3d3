#include "model/memory_estimate.h"

#include "core/error.h"
#include "core/memory.h"
#include "model/model.h"

namespace chainlm {

uint64_t MemoryEstimate::total() const {
  uint64_t t = 0;
  for (const auto& p : parts) t += p.second;
  return t;
}

std::string MemoryEstimate::describe() const {
  std::string s = format_bytes((double)total()) + " (";
  for (size_t i = 0; i < parts.size(); ++i)
    s += cat(i ? ", " : "", parts[i].first, " ", format_bytes((double)parts[i].second));
  return s + ")";
}

MemoryEstimate training_memory(const ModelConfig& c, int micro_batch, int seq_len,
                               int weighted_submodels, bool bf16) {
  const uint64_t P = Model::parameter_floats(c) * sizeof(float);
  const uint64_t rows = (uint64_t)micro_batch * (uint64_t)seq_len;
  MemoryEstimate e;
  e.parts = {{"weights", P},
             {"gradients", P},
             {"AdamW moments", 2 * P},
             {cat("activations for ", micro_batch, " x ", seq_len, " tokens"),
              Model::activation_floats(c, micro_batch, seq_len) * sizeof(float)}};
  if (weighted_submodels > 1)
    e.parts.push_back({cat("head gradients of ", weighted_submodels - 1, " more sub-model(s)"),
                       (uint64_t)(weighted_submodels - 1) * rows * (uint64_t)c.vocab_size * sizeof(float)});
  if (bf16) {
    e.parts.push_back({"bf16 weight copies", P / 2});
    // The layers' GEMM inputs, and the head's gradient and input rounded for its backward.
    const uint64_t elements = Model::bf16_activation_elements(c, micro_batch, seq_len) +
                              rows * ((uint64_t)c.vocab_size + (uint64_t)c.dim);
    e.parts.push_back({"bf16 activation copies", elements * 2});
  }
  e.parts.push_back({"runtime", kRuntimeOverheadBytes});
  return e;
}

void check_memory_fits(const std::string& what, const MemoryEstimate& estimate, int processes,
                       uint64_t limit, const std::string& advice, uint64_t held) {
  AvailableMemory avail = limit > 0 ? AvailableMemory{limit, "--memory-limit"} : available_memory();
  if (limit == 0) avail.bytes += held;
  const double need = (double)estimate.total() * processes;
  if (need <= (double)avail.bytes) return;
  fail(what, " needs an estimated ", estimate.describe(),
       processes > 1 ? cat(" per process, ", format_bytes(need), " for the ", processes,
                           " processes on this machine,")
                     : std::string(),
       " but only ", format_bytes((double)avail.bytes), " is available (", avail.source, "); ",
       advice,
       limit > 0 ? ", or raise --memory-limit if the machine has more"
                 : ", or pass --memory-limit to set the budget yourself");
}

}  // namespace chainlm
