#include "train/distributed.h"

#include <mpi.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"
#include "core/threads.h"
#include "core/timer.h"

namespace chainlm {

bool launched_by_mpi() {
  // OpenMPI's mpirun sets OMPI_COMM_WORLD_SIZE; PMIx launchers (srun --mpi=pmix, prterun) set
  // PMIX_RANK.
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMIX_RANK") != nullptr;
}

int processes_on_this_machine() {
  const char* s = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  const int n = s ? std::atoi(s) : 1;
  return n > 0 ? n : 1;
}

Communicator& Communicator::world() {
  static Communicator* const c = [] {
    static Communicator w;
    if (launched_by_mpi()) w.init_mpi();
    return &w;
  }();
  return *c;
}

Communicator& Communicator::single() {
  static Communicator c;
  return c;
}

void Communicator::init_mpi() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  int provided = MPI_THREAD_SINGLE;
  // SERIALIZED: the gradient reducer's communication thread runs collectives while the main
  // thread computes, and the main thread makes no MPI call until that thread is idle again.
  if (!initialized) MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided);
  else MPI_Query_thread(&provided);
  mpi_ = true;
  serialized_ = provided >= MPI_THREAD_SERIALIZED;
  // Any MPI error (a peer's connection gone, ...) aborts the job instead of returning a code
  // nobody would act on: no rank is ever left waiting.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &size_);
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &local);
  int local_rank = 0;
  MPI_Comm_size(local, &local_size_);
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);
  int leader = local_rank == 0 ? 1 : 0;
  MPI_Allreduce(&leader, &nodes_, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
}

Communicator::~Communicator() {
  if (!mpi_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

namespace {

// MPI counts are ints: longer buffers go in pieces.
constexpr std::size_t kMaxCount = 1u << 30;

}  // namespace

void Communicator::allreduce_sum(float* data, std::size_t n) const {
  if (size_ == 1) return;
  for (std::size_t i = 0; i < n; i += kMaxCount)
    MPI_Allreduce(MPI_IN_PLACE, data + i, (int)std::min(kMaxCount, n - i), MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
}

void Communicator::allreduce_sum(double* data, std::size_t n) const {
  if (size_ == 1) return;
  for (std::size_t i = 0; i < n; i += kMaxCount)
    MPI_Allreduce(MPI_IN_PLACE, data + i, (int)std::min(kMaxCount, n - i), MPI_DOUBLE, MPI_SUM,
                  MPI_COMM_WORLD);
}

void Communicator::allreduce_max(double* data, std::size_t n) const {
  if (size_ == 1) return;
  MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
}

void Communicator::allreduce_min(double* data, std::size_t n) const {
  if (size_ == 1) return;
  MPI_Allreduce(MPI_IN_PLACE, data, (int)n, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
}

void Communicator::broadcast(void* data, std::size_t bytes, int root) const {
  if (size_ == 1) return;
  char* p = static_cast<char*>(data);
  for (std::size_t i = 0; i < bytes; i += kMaxCount)
    MPI_Bcast(p + i, (int)std::min(kMaxCount, bytes - i), MPI_BYTE, root, MPI_COMM_WORLD);
}

void Communicator::broadcast(std::string& s, int root) const {
  if (size_ == 1) return;
  uint64_t len = s.size();
  broadcast(&len, sizeof len, root);
  s.resize(len);
  broadcast(s.data(), len, root);
}

void Communicator::barrier() const {
  if (size_ > 1) MPI_Barrier(MPI_COMM_WORLD);
}

std::string Communicator::first_error(const std::string& local_error) const {
  if (size_ == 1) return local_error;
  int mine = local_error.empty() ? size_ : rank_, first = size_;
  MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == size_) return std::string();
  std::string message = local_error;
  broadcast(message, first);
  return message;
}

void Communicator::abort(int code) const {
  if (mpi_) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

int default_threads_per_rank(const Communicator& comm) {
  const long machine = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  const int share = (int)std::max(1L, machine / comm.local_size());
  return std::max(1, std::min(cores_available(), share));
}

GradientReducer::GradientReducer(const Communicator& comm, float* grads, std::size_t n,
                                 std::vector<std::size_t> ready_points, std::size_t bucket_floats,
                                 bool overlap)
    : comm_(comm), grads_(grads), n_(n), overlap_(overlap && comm.size() > 1 && comm.thread_serialized()) {
  CHAINLM_CHECK(bucket_floats > 0, "gradient bucket size must be positive");
  bucket_floats = std::min(bucket_floats, kMaxCount);
  ready_points.push_back(0);
  ready_points.push_back(n);
  std::sort(ready_points.begin(), ready_points.end());
  ready_points.erase(std::unique(ready_points.begin(), ready_points.end()), ready_points.end());
  // From the end of the buffer down: each span between two ready points in pieces of at most
  // bucket_floats, the last piece of a span (the one nearest its start) the shortest.
  for (std::size_t i = ready_points.size() - 1; i > 0; --i) {
    const std::size_t lo = ready_points[i - 1];
    for (std::size_t end = ready_points[i]; end > lo;) {
      const std::size_t begin = end - std::min(bucket_floats, end - lo);
      buckets_.push_back({begin, end});
      end = begin;
    }
  }
  if (overlap_) thread_ = std::thread([this] { thread_main(); });
}

GradientReducer::~GradientReducer() {
  if (thread_.joinable()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
}

void GradientReducer::begin() {
  std::lock_guard<std::mutex> lock(mu_);
  queued_ = done_ = 0;
  comm_seconds_ = wait_seconds_ = 0;
}

void GradientReducer::reduce_bucket(std::size_t b) {
  const auto [begin, end] = buckets_[b];
  comm_.allreduce_sum(grads_ + begin, end - begin);
}

void GradientReducer::ready(std::size_t from) {
  if (!overlap_) return;
  std::size_t q = queued_;
  while (q < buckets_.size() && buckets_[q].first >= from) ++q;
  if (q == queued_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queued_ = q;
  }
  cv_.notify_all();
}

void GradientReducer::thread_main() {
  // Buckets are reduced in order; done_ is the next one. begin() resets both counters only
  // while this thread is idle (after finish()).
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || done_ < queued_; });
    if (stop_) return;
    const std::size_t b = done_;
    lock.unlock();
    Timer t;
    reduce_bucket(b);
    const double s = t.seconds();
    lock.lock();
    comm_seconds_ += s;
    ++done_;
    cv_.notify_all();
  }
}

void GradientReducer::finish() {
  Timer wait;
  if (comm_.size() > 1) {
    if (overlap_) {
      std::unique_lock<std::mutex> lock(mu_);
      queued_ = buckets_.size();
      cv_.notify_all();
      cv_.wait(lock, [&] { return done_ == buckets_.size(); });
    } else {
      for (std::size_t b = queued_; b < buckets_.size(); ++b) {
        Timer t;
        reduce_bucket(b);
        comm_seconds_ += t.seconds();
      }
      queued_ = done_ = buckets_.size();
    }
  }
  wait_seconds_ = wait.seconds();
}

std::string this_host_name() {
  char name[256] = {};
  return ::gethostname(name, sizeof name - 1) == 0 ? std::string(name)
                                                   : std::string("unknown host");
}

std::string with_rank_named(const Communicator& comm, const std::string& local_error) {
  if (local_error.empty() || comm.size() == 1) return local_error;
  return cat("rank ", comm.rank(), " of ", comm.size(), " (", this_host_name(), "): ", local_error);
}

void end_job_on_first_error(const Communicator& comm, const std::string& local_error) {
  const std::string e = comm.first_error(local_error);
  if (e.empty()) return;
  if (comm.is_root()) throw Error(e);
  std::exit(1);
}

void warn_if_rank_options_differ(const Communicator& comm, const std::string& given) {
  if (comm.size() == 1) return;
  std::string rank0 = given;
  comm.broadcast(rank0);
  const std::string differs = comm.first_error(
      given == rank0 ? std::string()
                     : cat("rank ", comm.rank(), " was given ", given.empty() ? "none" : given,
                           " where rank 0 was given ", rank0.empty() ? "none" : rank0));
  if (comm.is_root() && !differs.empty())
    std::fprintf(stderr,
                 "warning: the ranks were given different options (%s); every rank runs with "
                 "rank 0's (only --threads, --memory-limit and --quiet are each rank's own)\n",
                 differs.c_str());
}

}  // namespace chainlm
