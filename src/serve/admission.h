#pragma once
// Admission control for generations: at most max_sessions run at once and at most max_queue
// wait for one of them; a request beyond that is refused at once (the server answers 503).
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>

namespace chainlm {

class Admission {
 public:
  Admission(int max_sessions, int max_queue) : max_sessions_(max_sessions), max_queue_(max_queue) {}

  // Held while a generation runs; releases its place when destroyed.
  class Slot {
   public:
    explicit Slot(Admission& a) : a_(a) {}
    ~Slot() { a_.release(); }
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;

   private:
    Admission& a_;
  };

  // Waits (in the queue) for a free session; null when the queue is full, after shutdown(), or
  // when client_gone (asked every kGoneCheck while waiting) says the request's client left: then
  // *client_left is set and the request gives up its place in the queue to those behind it.
  std::shared_ptr<Slot> acquire(const std::function<bool()>& client_gone = nullptr,
                                bool* client_left = nullptr);
  static constexpr int kGoneCheckMs = 100;
  // Refuses every waiting and later request (the server is stopping).
  void shutdown();

  int running() const;
  int waiting() const;
  int max_sessions() const { return max_sessions_; }
  int max_queue() const { return max_queue_; }
  bool stopping() const;

 private:
  void release();
  // Moves the queue's head past the tickets whose clients left (mutex_ held).
  void skip_abandoned();

  const int max_sessions_, max_queue_;
  mutable std::mutex mutex_;
  std::condition_variable freed_;
  int running_ = 0;
  long next_ticket_ = 0, admitted_ = 0;  // tickets issued and admitted: the queue is between
  std::set<long> abandoned_;             // tickets in the queue whose clients left
  bool shutdown_ = false;
};

}  // namespace chainlm
