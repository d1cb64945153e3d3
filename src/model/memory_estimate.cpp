#include "model/memory_estimate.h"

#include "core/error.h"
#include "core/memory.h"
#include "model/model.h"

namespace chainlm {

namespace {

// Sums and products that stop at 2^64-1 bytes: a config of 2^60 parameters needs 2^64 bytes of
// weights, gradients and moments, whose sum wrapped to nothing, and the estimate let it through a
// --memory-limit.
uint64_t saturating_add(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_add_overflow(a, b, &r) ? UINT64_MAX : r;
}

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  uint64_t r;
  return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

}  // namespace

uint64_t MemoryEstimate::total() const {
  uint64_t t = 0;
  for (const auto& p : parts) t = saturating_add(t, p.second);
  return t;
}

std::string MemoryEstimate::describe() const {
  std::string s =
      (total() == UINT64_MAX ? "more than " : "") + format_bytes((double)total()) + " (";
  for (size_t i = 0; i < parts.size(); ++i)
    s += cat(i ? ", " : "", parts[i].first, " ", format_bytes((double)parts[i].second));
  return s + ")";
}

MemoryEstimate training_memory(const ModelConfig& c, int micro_batch, int seq_len,
                               int weighted_submodels, bool bf16) {
  const uint64_t P = saturating_mul(Model::parameter_floats(c), sizeof(float));
  const uint64_t rows = (uint64_t)micro_batch * (uint64_t)seq_len;
  MemoryEstimate e;
  e.parts = {{"weights", P},
             {"gradients", P},
             {"AdamW moments", saturating_mul(2, P)},
             {cat("activations for ", micro_batch, " x ", seq_len, " tokens"),
              saturating_mul(Model::activation_floats(c, micro_batch, seq_len), sizeof(float))}};
  if (weighted_submodels > 1)
    e.parts.push_back(
        {cat("head gradients of ", weighted_submodels - 1, " more sub-model(s)"),
         saturating_mul(saturating_mul((uint64_t)(weighted_submodels - 1) * rows, c.vocab_size),
                        sizeof(float))});
  if (bf16) {
    e.parts.push_back({"bf16 weight copies", P / 2});
    // The layers' GEMM inputs, and the head's gradient and input rounded for its backward.
    const uint64_t elements =
        saturating_add(Model::bf16_activation_elements(c, micro_batch, seq_len),
                       saturating_mul(rows, (uint64_t)c.vocab_size + (uint64_t)c.dim));
    e.parts.push_back({"bf16 activation copies", saturating_mul(elements, 2)});
  }
  e.parts.push_back({"runtime", kRuntimeOverheadBytes});
  return e;
}

void check_memory_fits(const std::string& what, const MemoryEstimate& estimate, int processes,
                       uint64_t limit, const std::string& advice, uint64_t held,
                       bool has_limit_option) {
  AvailableMemory avail = limit > 0 ? AvailableMemory{limit, "--memory-limit"} : available_memory();
  if (limit == 0) avail.bytes += held;
  // The machine's memory is shared by this job's processes on it; --memory-limit is each
  // process's own budget (the help says so; a trial's 100M limit refused a 64 MiB rank of two).
  if (limit > 0) processes = 1;
  const double need = (double)estimate.total() * processes;
  if (need <= (double)avail.bytes && estimate.total() != UINT64_MAX)
    return;  // (the most is more than there is)
  fail(what, " needs an estimated ", estimate.describe(),
       processes > 1 ? cat(" per process, ", format_bytes(need), " for the ", processes,
                           " processes on this machine,")
                     : std::string(),
       " but only ", format_bytes((double)avail.bytes), " is available (", avail.source, "); ",
       advice,
       !has_limit_option ? ""
       : limit > 0       ? ", or raise --memory-limit if the machine has more"
                         : ", or pass --memory-limit to set the budget yourself");
}

}  // namespace chainlm
