// oneDNN matmul primitives, created once per shape and cached. A primitive is described by its
// shape, strides and beta (a sum post-op accumulates into C), and by the thread count it was
// created for (oneDNN sizes its blocking by it). The cache is per thread: with the library
// scratchpad oneDNN is built with, a primitive must run on the thread that created it, and the
// server computes sessions on several threads at once. Creating one costs about 0.1 ms; the
// cache keeps the 256 most recently used per thread (prefill creates one per prompt length).
#include "kernels/onednn_matmul.h"

#include <omp.h>

#include <algorithm>
#include <exception>
#include <list>
#include <map>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <utility>

namespace chainlm {

namespace {

// (transa, transb, M, N, K, lda, ldb, ldc, beta, threads, bf16 operands)
using Key = std::tuple<bool, bool, int, int, int, int, int, int, float, int, bool>;

struct Entry {
  dnnl::matmul primitive;
  dnnl::memory::desc a, b, c;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

class PrimitiveCache {
 public:
  const Entry& get(const Key& key, bool transa, bool transb, int M, int N, int K, int lda, int ldb,
                   int ldc, float beta, bool bf16) {
    auto it = entries_.find(key);
    if (it != entries_.end()) {
      recent_.splice(recent_.begin(), recent_, it->second.second);
      return it->second.first;
    }
    using dt = dnnl::memory::data_type;
    using dims = dnnl::memory::dims;
    const dt in = bf16 ? dt::bf16 : dt::f32;
    // fp32 products are described as a batch of one whose batch stride is not dense. oneDNN
    // 2.6 runs dense operands on its brgemm kernels and strided ones (a chain block's columns
    // of a wider activation) on its jit GEMM, and the two round differently: sub-model k of a
    // CoLM model then differed in the last bits from the same sub-model extracted as a model
    // of its own, and from a GGUF/HF export of it. The non-dense batch stride keeps every fp32
    // product on the jit GEMM, whose result does not depend on the strides (bench/RESULTS.md,
    // "GEMM backend": what it costs). bf16 products keep oneDNN's choice (brgemm, AMX): they are
    // compared within bf16 tolerance anyway.
    auto desc = [&](long rows, long cols, dt type, bool trans, long ld) {
      const dims strides = trans ? dims{1, ld} : dims{ld, 1};
      if (bf16) return dnnl::memory::desc({rows, cols}, type, strides);
      const long batch_stride = (trans ? cols : rows) * ld + 1;
      return dnnl::memory::desc({1, rows, cols}, type, dims{batch_stride, strides[0], strides[1]});
    };
    const dnnl::memory::desc a = desc(M, K, in, transa, lda);
    const dnnl::memory::desc b = desc(K, N, in, transb, ldb);
    const dnnl::memory::desc c = desc(M, N, dt::f32, false, ldc);
    dnnl::primitive_attr attr;
    if (beta != 0.0f) {
      dnnl::post_ops ops;
      ops.append_sum(beta);
      attr.set_post_ops(ops);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, cpu_engine());
    if (entries_.size() >= kCapacity) {
      entries_.erase(recent_.back());
      recent_.pop_back();
    }
    recent_.push_front(key);
    auto [pos, inserted] =
        entries_.emplace(key, std::make_pair(Entry{dnnl::matmul(pd), a, b, c}, recent_.begin()));
    (void)inserted;
    return pos->second.first;
  }

 private:
  static constexpr size_t kCapacity = 256;
  std::list<Key> recent_;  // most recently used first
  std::map<Key, std::pair<Entry, std::list<Key>::iterator>> entries_;
};

}  // namespace

namespace {

void run_matmul(bool bf16, bool transa, bool transb, int M, int N, int K, const void* A, int lda,
                const void* B, int ldb, float* C, int ldc, float beta) {
  thread_local PrimitiveCache cache;
  thread_local dnnl::stream stream(cpu_engine());
  const Key key{transa, transb, M, N, K, lda, ldb, ldc, beta, omp_get_max_threads(), bf16};
  const Entry& e = cache.get(key, transa, transb, M, N, K, lda, ldb, ldc, beta, bf16);
  dnnl::memory a(e.a, cpu_engine(), const_cast<void*>(A));
  dnnl::memory b(e.b, cpu_engine(), const_cast<void*>(B));
  dnnl::memory c(e.c, cpu_engine(), C);
  e.primitive.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
  stream.wait();
}

}  // namespace

void onednn_sgemm(bool transa, bool transb, int M, int N, int K, const float* A, int lda,
                  const float* B, int ldb, float* C, int ldc, float beta) {
  run_matmul(false, transa, transb, M, N, K, A, lda, B, ldb, C, ldc, beta);
}

namespace {

// Whether a bf16 product on T threads runs faster as T single-threaded matmuls, one per block of
// C's rows, than as one matmul on all T threads. oneDNN 2.6's bf16 brgemm on its own threads
// reached 750-900 GFLOP/s on the training step's shapes (2 threads, AVX512-BF16), one thread per
// half of the rows 860-990 (1.02-1.21x; bench/RESULTS.md, "bf16 GEMMs split by rows"). Not so
// for the input gradient with few rows (256: 0.90-0.96x) nor the weight gradient over few
// tokens (K = 128: 0.44x, K = 512: 0.96x), which keep oneDNN's own threading.
bool split_by_rows(bool transa, bool transb, int M, int K, int threads) {
  const int rows = M / threads;
  if (transa) return K >= 1024 && rows >= 256;
  if (transb) return rows >= 32;
  return rows >= 512;
}

}  // namespace

void onednn_bf16_gemm(bool transa, bool transb, int M, int N, int K, const bf16_t* A, int lda,
                      const bf16_t* B, int ldb, float* C, int ldc, float beta) {
  const int threads = omp_get_max_threads();
  if (threads < 2 || omp_in_parallel() || !split_by_rows(transa, transb, M, K, threads)) {
    run_matmul(true, transa, transb, M, N, K, A, lda, B, ldb, C, ldc, beta);
    return;
  }
  // Rows in blocks of 32 (oneDNN's row blocking), each thread a contiguous range of blocks. An
  // exception may not leave an OpenMP region: one is carried out and rethrown.
  std::exception_ptr error;
#pragma omp parallel
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads(), blocks = (M + 31) / 32;
    const int m0 = std::min(M, 32 * (int)((long)blocks * t / nt));
    const int m1 = std::min(M, 32 * (int)((long)blocks * (t + 1) / nt));
    // This thread's primitive is created for one thread (oneDNN sizes its blocking by
    // omp_get_max_threads(); made for two and run on one, the weight gradient ran at half speed).
    // The setting lasts as long as this region's task.
    omp_set_num_threads(1);
    if (m1 > m0) {
      try {
        run_matmul(true, transa, transb, m1 - m0, N, K, A + (transa ? (long)m0 : (long)m0 * lda), lda, B, ldb,
                   C + (long)m0 * ldc, ldc, beta);
      } catch (...) {
#pragma omp critical(chainlm_onednn_split_error)
        if (!error) error = std::current_exception();
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace chainlm
