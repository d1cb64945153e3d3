#include "serve/http_thread_pool.h"

#include <algorithm>
#include <system_error>

#include "core/error.h"

namespace chainlm {

HttpThreadPool::HttpThreadPool(int max_threads, std::chrono::milliseconds idle)
    : max_threads_(max_threads), linger_(idle) {
  CHAINLM_CHECK(max_threads >= 1, "the HTTP thread pool needs at least one thread (got ",
                max_threads, ")");
}

HttpThreadPool::~HttpThreadPool() {
  shutdown();
}

void HttpThreadPool::enqueue(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(m_);
  join_finished(lock);
  if (!idle_.empty()) {  // the last to go idle: its stack and caches are the warm ones
    Worker* w = idle_.back();
    idle_.pop_back();
    w->task = std::move(fn);
    w->wake.notify_one();
    return;
  }
  if ((int)workers_.size() < max_threads_ && !shutting_down_) {
    auto w = std::make_unique<Worker>();
    Worker* raw = w.get();
    try {
      // (It waits for the lock, held until the worker is on the list.)
      raw->thread = std::thread([this, raw, fn]() mutable { run(raw, std::move(fn)); });
      workers_.push_back(std::move(w));
      most_ = std::max(most_, (int)workers_.size());
      return;
    } catch (const std::system_error&) {  // no thread to be had now: the task waits for one
    }
  }
  waiting_.push_back(std::move(fn));
  saturated_.notify_all();
}

void HttpThreadPool::on_saturated(std::chrono::milliseconds every, std::function<void()> f) {
  watcher_ = std::thread([this, every, f = std::move(f)] { watch_saturation(every, f); });
}

void HttpThreadPool::watch_saturation(std::chrono::milliseconds every, std::function<void()> f) {
  std::unique_lock<std::mutex> lock(m_);
  for (;;) {
    saturated_.wait(lock, [&] { return !waiting_.empty() || watcher_ends_; });
    if (watcher_ends_) return;
    lock.unlock();
    f();
    lock.lock();
    saturated_.wait_for(lock, every, [&] { return watcher_ends_; });
  }
}

void HttpThreadPool::run(Worker* w, std::function<void()> task) {
  for (;;) {
    task();
    task = nullptr;  // the connection's state goes before the lock is taken
    std::unique_lock<std::mutex> lock(m_);
    if (!waiting_.empty()) {
      task = std::move(waiting_.front());
      waiting_.pop_front();
      continue;
    }
    if (!shutting_down_) {
      idle_.push_back(w);
      w->wake.wait_for(lock, linger_, [&] { return static_cast<bool>(w->task) || shutting_down_; });
      if (w->task) {  // enqueue took it off the idle list
        task = std::move(w->task);
        w->task = nullptr;
        continue;
      }
      idle_.erase(std::find(idle_.begin(), idle_.end(), w));
    }
    // Idle too long, or shutting down: this thread ends (joined by the next enqueue or shutdown).
    auto it = std::find_if(workers_.begin(), workers_.end(),
                           [&](const std::unique_ptr<Worker>& p) { return p.get() == w; });
    finished_.push_back(std::move(*it));
    workers_.erase(it);
    if (workers_.empty()) all_ended_.notify_all();
    return;
  }
}

void HttpThreadPool::join_finished(std::unique_lock<std::mutex>& lock) {
  if (finished_.empty()) return;
  std::vector<std::unique_ptr<Worker>> done;
  done.swap(finished_);
  lock.unlock();  // (they have left the lock for good: only their thread's exit remains)
  for (auto& w : done) w->thread.join();
  lock.lock();
}

void HttpThreadPool::on_stuck_shutdown(std::chrono::milliseconds grace,
                                       std::function<void()> on_stuck) {
  std::lock_guard<std::mutex> lock(m_);
  grace_ = grace;
  on_stuck_ = std::move(on_stuck);
}

void HttpThreadPool::shutdown() {
  std::unique_lock<std::mutex> lock(m_);
  if (watcher_.joinable()) {
    watcher_ends_ = true;
    saturated_.notify_all();
    lock.unlock();
    watcher_.join();
    lock.lock();
  }
  shutting_down_ = true;
  for (Worker* w : idle_) w->wake.notify_one();
  const auto stuck_after = std::chrono::steady_clock::now() + grace_;
  for (;;) {
    const bool done =
        on_stuck_ ? all_ended_.wait_until(lock, stuck_after, [&] { return workers_.empty(); })
                  : (all_ended_.wait(lock, [&] { return workers_.empty(); }), true);
    if (done) break;
    const auto on_stuck = on_stuck_;
    lock.unlock();  // (it may take a while, and the ending tasks need the lock)
    on_stuck();
    lock.lock();
    if (all_ended_.wait_for(lock, std::chrono::milliseconds(250), [&] { return workers_.empty(); }))
      break;
  }
  join_finished(lock);
}

int HttpThreadPool::threads() const {
  std::lock_guard<std::mutex> lock(m_);
  return (int)workers_.size();
}

int HttpThreadPool::idle_threads() const {
  std::lock_guard<std::mutex> lock(m_);
  return (int)idle_.size();
}

int HttpThreadPool::most_threads() const {
  std::lock_guard<std::mutex> lock(m_);
  return most_;
}

}  // namespace chainlm
