#pragma once
// The server's HTTP worker threads (cpp-httplib's TaskQueue: each connection is a task that holds
// its thread until the connection closes).
//
// cpp-httplib's own ThreadPool starts every thread at once and wakes them in turn, so over a long
// run every one of the ~270 threads handles requests, and each keeps glibc's per-thread cache of
// freed blocks: a soak of logprobs requests grew a stories260K server from 62 to 94 MB and still
// growing (32 MB flat with that cache off). This pool starts threads as connections need them, up
// to a limit; the thread that went idle last takes the next connection, so a light load keeps
// reusing a few threads; and a thread idle for a while ends, its cache going back with it.
#include <httplib.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace chainlm {

class HttpThreadPool : public httplib::TaskQueue {
 public:
  // max_threads: the most connections served at once (the rest wait, as in httplib's pool);
  // idle: how long a thread without a connection lives on.
  HttpThreadPool(int max_threads, std::chrono::milliseconds idle);
  ~HttpThreadPool() override;

  void enqueue(std::function<void()> fn) override;
  // Waits for every task, those still waiting included, and for every thread to end. Once
  // `grace` has passed, on_stuck (if set) is called every 250 ms until they have: a task can
  // hold its thread for ever (cpp-httplib bounds each read of a request, not the whole of it,
  // so a client sending a header line every few seconds is never timed out), and on_stuck may
  // end such connections.
  void shutdown() override;
  void on_stuck_shutdown(std::chrono::milliseconds grace, std::function<void()> on_stuck);
  // While connections wait for a thread (every thread holds one), f is called every `every`
  // from a thread of the pool's own until none waits: the same trickling clients, enough of
  // them, left no thread for anyone else, and f may end those holding a thread without a
  // request in progress. (Set once, before the first task.)
  void on_saturated(std::chrono::milliseconds every, std::function<void()> f);

  int threads() const;       // alive now
  int idle_threads() const;  // of those, waiting for a connection
  int most_threads() const;  // the most alive at once so far

 private:
  struct Worker {
    std::condition_variable wake;
    std::function<void()> task;  // handed over by enqueue to an idle worker
    std::thread thread;
  };
  void run(Worker* w, std::function<void()> task);
  void join_finished(std::unique_lock<std::mutex>& lock);

  const int max_threads_;
  const std::chrono::milliseconds linger_;
  mutable std::mutex m_;
  std::condition_variable all_ended_;
  std::vector<std::unique_ptr<Worker>> workers_;   // alive
  std::vector<std::unique_ptr<Worker>> finished_;  // ended, to be joined
  std::vector<Worker*> idle_;                      // the last to go idle at the back
  std::deque<std::function<void()>> waiting_;      // tasks beyond max_threads
  bool shutting_down_ = false;
  std::chrono::milliseconds grace_{0};
  std::function<void()> on_stuck_;
  void watch_saturation(std::chrono::milliseconds every, std::function<void()> f);
  std::condition_variable saturated_;  // a task waits, or the watcher is to end
  bool watcher_ends_ = false;
  std::thread watcher_;
  int most_ = 0;
};

}  // namespace chainlm
