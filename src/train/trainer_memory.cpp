// The memory check of a training run (docs/reliability.md, Memory): what one process holds
// (src/model/memory_estimate.h) against the machine's available memory or --memory-limit,
// refused before the large buffers are allocated.
#include <algorithm>

#include "core/memory.h"
#include "core/precision.h"
#include "core/threads.h"
#include "kernels/gemm_backend.h"
#include "train/trainer.h"

namespace chainlm {

namespace {
// What lowers the estimate, of what may change: --micro-batch always (gradient accumulation),
// --batch-size and --seq-len on a new run only (a resume refuses them), and --precision fp32
// for a bf16 run (its bf16 copies come beside the fp32 weights and activations).
std::string memory_advice(const TrainOptions& o) {
  return std::string("use a smaller --micro-batch (gradient accumulation)") +
         (parse_precision(o.precision) == Precision::Bf16
              ? ", --precision fp32 (bf16 adds its copies)"
              : "") +
         ", a lower --batch-size or --seq-len (on a new run: a resume keeps them) or a smaller "
         "model";
}
}  // namespace

MemoryEstimate Trainer::memory_estimate(const ModelConfig& c, const TrainOptions& o, int ranks) {
  const int rows = std::max(1, o.batch_size / std::max(1, ranks));
  const int micro = o.micro_batch > 0 ? std::min(o.micro_batch, rows) : rows;
  const int T = o.seq_len > 0 ? o.seq_len : c.max_seq_len;
  int weighted = 1;  // the full model alone by default
  if (!o.chain_loss_weights.empty()) {
    weighted = 0;
    for (float w : o.chain_loss_weights) weighted += w > 0;
  }
  MemoryEstimate e = training_memory(c, micro, T, std::max(1, weighted),
                                     parse_precision(o.precision) == Precision::Bf16);
  // Under mpirun each rank also holds OpenMPI's own buffers and its reductions' temporaries.
  // Without them the estimate fell as the ranks grew (each rank's micro-batch halves) while
  // the peak did not: 2 ranks of a 3.2M-parameter model peaked at 106.4 MiB against an
  // estimated 90.1 (one process: 107.3 against 99.9), 12.1M parameters at 258.3 against 236.4.
  // 12 MiB and an eighth of the gradients' bytes keep the estimate above the peaks measured
  // (bench/RESULTS.md, "Memory under mpirun").
  // oneDNN's matmuls keep per-thread scratch that grows with the rows of a product: at 2,048
  // rows of a dim-256, ffn-688 model the peak was 7 MiB above OpenBLAS's on one thread and 20
  // on two, and the estimate 13 MiB below it (PHD's K-times rows met it first). Twice a
  // product's widest output per row and thread covers both (bench/RESULTS.md, "Memory under
  // mpirun, and the runtime's share").
  if (gemm_backend() == GemmBackend::OneDnn) {
    const uint64_t rows = (uint64_t)micro * T * (c.phd.enabled() ? c.phd.repeat : 1);
    e.parts.insert(e.parts.end() - 1, {"GEMM workspace", 2 * sizeof(float) * rows *
                                                             (uint64_t)std::max(c.dim, c.ffn_dim) *
                                                             (uint64_t)std::max(1, num_threads())});
  }
  if (ranks > 1)
    e.parts.insert(e.parts.end() - 1,
                   {"MPI buffers", (12ull << 20) + Model::parameter_floats(c) * sizeof(float) / 8});
  return e;
}

void Trainer::check_memory(const ModelConfig& c, const TrainOptions& o, int ranks, uint64_t held) {
  check_estimate_fits(memory_estimate(c, o, ranks), o, held);
}

void Trainer::check_estimate_fits(const MemoryEstimate& e, const TrainOptions& o, uint64_t held) {
  check_memory_fits("train", e, o.processes_per_machine, o.memory_limit, memory_advice(o), held);
}

}  // namespace chainlm
