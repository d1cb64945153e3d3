#pragma once
// Data-parallel training over MPI (OpenMPI). Every rank holds a replica of the model and the
// optimizer, computes the gradient of its own rows of each step's global batch, and the
// gradients are summed with MPI_Allreduce, so every rank applies the same AdamW step to the
// same weights (docs/distributed.md).
//
// MPI is initialized only when mpirun (or another PMIx launcher) started the process, as its
// environment tells: a plain `chainlm train` is one rank that never touches MPI, so it starts
// as fast as before and behaves identically.
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/error.h"

namespace chainlm {

// An error every rank raises at the same point, from values they all share after a collective
// (a non-finite summed loss, diverged replicas): the job can end on every rank with one
// message, without MPI_Abort.
class CollectiveError : public Error {
 public:
  explicit CollectiveError(const std::string& what) : Error(what) {}
};

// True when this process was started by an MPI launcher.
bool launched_by_mpi();
// Processes of this job on this machine (OpenMPI's OMPI_COMM_WORLD_LOCAL_SIZE; 1 otherwise):
// they share its memory.
int processes_on_this_machine();

class Communicator {
 public:
  // The job's ranks: MPI_COMM_WORLD when launched by mpirun (MPI is initialized on the first
  // call and finalized at exit), otherwise this process alone, without MPI.
  static Communicator& world();
  // This process alone, without MPI.
  static Communicator& single();

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  // Ranks on this machine (sharing its memory) and the number of machines.
  int local_size() const { return local_size_; }
  int nodes() const { return nodes_; }
  // Whether a second thread may run collectives while this one computes (MPI_THREAD_SERIALIZED).
  bool thread_serialized() const { return serialized_; }

  // In-place sums over all ranks; no-ops with one rank. Every rank receives the same bits,
  // and for a fixed number of ranks and message sizes every run does: OpenMPI's default
  // (tuned) collectives choose their algorithm, hence the order of the additions, from the
  // communicator size and the message size only.
  void allreduce_sum(float* data, std::size_t n) const;
  void allreduce_sum(double* data, std::size_t n) const;
  void allreduce_max(double* data, std::size_t n) const;
  void allreduce_min(double* data, std::size_t n) const;
  void broadcast(void* data, std::size_t bytes, int root = 0) const;
  void broadcast(std::string& s, int root = 0) const;
  void barrier() const;
  // Collective: every rank passes its own error ("" for none); returns the error of the lowest
  // failing rank on every rank, or "" when all succeeded.
  std::string first_error(const std::string& local_error) const;
  // Ends the whole job (MPI_Abort): the other ranks are killed, never left waiting.
  [[noreturn]] void abort(int code) const;

  ~Communicator();

 private:
  Communicator() = default;
  void init_mpi();

  int rank_ = 0, size_ = 1, local_size_ = 1, nodes_ = 1;
  bool mpi_ = false, serialized_ = false;
};

// Threads per rank when the user gave none: this machine's cores shared among its ranks, and
// no more than the cores the launcher bound this rank to.
int default_threads_per_rank(const Communicator& comm);

// This machine's name, for messages of one rank among several.
std::string this_host_name();

// `local_error` as the job prints it under mpirun: "rank r of N (host): ...", naming the rank
// and machine that met it (another rank's data or disk may be fine). Unchanged in one process
// or when empty.
std::string with_rank_named(const Communicator& comm, const std::string& local_error);

// Collective, for errors before training starts: when any rank has one, the lowest failing
// rank's ends the job with one message, thrown on rank 0 (which prints it) while the others exit
// with code 1 unheard.
void end_job_on_first_error(const Communicator& comm, const std::string& local_error);

// Under mpirun's MPMD form ranks may be given other command lines, of which rank 0's options
// define the run: rank 0 warns on stderr, naming the first rank whose `given` (its options, as
// text) differs from rank 0's. A collective: every rank calls it.
void warn_if_rank_options_differ(const Communicator& comm, const std::string& given);

// Sums the flat gradient buffer over all ranks in fixed buckets. The buckets split the buffer
// at the points where the backward pass completes a suffix of it (the first parameter of every
// layer: after layer l's backward, every gradient from there to the end is final) and are at
// most bucket_floats long; they are reduced from the end of the buffer down, the order the
// backward finishes them. With overlap, a communication thread reduces each bucket as soon as
// the backward has finished it, while the backward goes on with the layers below; without,
// finish() reduces them all after the backward. The buckets are the same either way, so
// overlap changes timing only, never a bit of the result.
class GradientReducer {
 public:
  GradientReducer(const Communicator& comm, float* grads, std::size_t n,
                  std::vector<std::size_t> ready_points, std::size_t bucket_floats, bool overlap);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Starts a step: no bucket reduced yet.
  void begin();
  // The backward has finished grads[from, n): with overlap, hands the buckets inside it to the
  // communication thread.
  void ready(std::size_t from);
  // Reduces every bucket not reduced yet and waits until all are done.
  void finish();

  bool overlap() const { return overlap_; }
  const std::vector<std::pair<std::size_t, std::size_t>>& buckets() const { return buckets_; }
  // Of the last step: seconds inside MPI_Allreduce (in whichever thread), and seconds finish()
  // spent reducing or waiting (the communication the backward did not hide).
  double comm_seconds() const { return comm_seconds_; }
  double wait_seconds() const { return wait_seconds_; }

 private:
  void reduce_bucket(std::size_t b);
  void thread_main();

  const Communicator& comm_;
  float* grads_;
  std::size_t n_;
  std::vector<std::pair<std::size_t, std::size_t>> buckets_;  // [begin, end), descending
  bool overlap_;
  std::size_t queued_ = 0;  // buckets handed out this step (a prefix of buckets_)
  double comm_seconds_ = 0, wait_seconds_ = 0;
  // Communication thread state (overlap only).
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::size_t done_ = 0;  // buckets the thread has reduced this step
  bool stop_ = false;
};

}  // namespace chainlm
