#include "serve/admission.h"

namespace chainlm {

std::shared_ptr<Admission::Slot> Admission::acquire() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (shutdown_) return nullptr;
  const long queued = next_ticket_ - admitted_;
  if ((running_ >= max_sessions_ || queued > 0) && queued >= max_queue_) return nullptr;
  // Tickets keep the queue first-come first-served: a newcomer never overtakes a waiter.
  const long ticket = next_ticket_++;
  freed_.wait(lock, [&] { return shutdown_ || (admitted_ == ticket && running_ < max_sessions_); });
  if (shutdown_) return nullptr;
  ++admitted_;
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
  return (int)(next_ticket_ - admitted_);
}

bool Admission::stopping() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return shutdown_;
}

}  // namespace chainlm
