#include "serve/admission.h"

#include <chrono>

namespace chainlm {

void Admission::skip_abandoned() {
  while (abandoned_.erase(admitted_)) ++admitted_;
}

std::shared_ptr<Admission::Slot> Admission::acquire(const std::function<bool()>& client_gone,
                                                    bool* client_left) {
  if (client_left) *client_left = false;
  std::unique_lock<std::mutex> lock(mutex_);
  if (shutdown_) return nullptr;
  const long queued = next_ticket_ - admitted_ - (long)abandoned_.size();
  if ((running_ >= max_sessions_ || queued > 0) && queued >= max_queue_) return nullptr;
  // Tickets keep the queue first-come first-served: a newcomer never overtakes a waiter.
  const long ticket = next_ticket_++;
  auto turn = [&] { return shutdown_ || (admitted_ == ticket && running_ < max_sessions_); };
  if (!client_gone) {
    freed_.wait(lock, turn);
  } else {
    while (!freed_.wait_for(lock, std::chrono::milliseconds(kGoneCheckMs), turn)) {
      lock.unlock();  // the check makes system calls: not under the queue's lock
      const bool gone = client_gone();
      lock.lock();
      if (!gone || turn()) continue;
      abandoned_.insert(ticket);
      skip_abandoned();
      lock.unlock();
      freed_.notify_all();  // the ticket behind may be at the head now
      if (client_left) *client_left = true;
      return nullptr;
    }
  }
  if (shutdown_) return nullptr;
  ++admitted_;
  skip_abandoned();
  ++running_;
  lock.unlock();
  freed_.notify_all();  // the next ticket may fit too
  return std::make_shared<Slot>(*this);
}

void Admission::release() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    --running_;
  }
  freed_.notify_all();
}

void Admission::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    shutdown_ = true;
  }
  freed_.notify_all();
}

int Admission::running() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return running_;
}

int Admission::waiting() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return (int)(next_ticket_ - admitted_ - (long)abandoned_.size());
}

bool Admission::stopping() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return shutdown_;
}

}  // namespace chainlm
