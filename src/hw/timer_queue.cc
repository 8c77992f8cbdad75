#include "hw/timer_queue.h"

#include <algorithm>

namespace lamina::hw {

Timer::Timer(TimerQueue& queue, Callback callback)
    : queue_(queue), callback_(std::move(callback)) {}

Timer::~Timer() { queue_.forget(*this); }

void Timer::arm_at(uint64_t deadline_ns) { queue_.arm(*this, deadline_ns); }

void Timer::cancel() { queue_.cancel(*this); }

bool Timer::armed() const {
  std::lock_guard lock(queue_.mutex_);
  return position_.has_value();
}

void TimerQueue::arm(Timer& timer, uint64_t deadline_ns) {
  std::function<void()> wakeup;
  {
    std::lock_guard lock(mutex_);
    if (timer.position_) timers_.erase(*timer.position_);
    ++timer.generation_;
    timer.position_ = timers_.emplace(deadline_ns, &timer);
    if (timers_.begin() == *timer.position_) wakeup = wakeup_;
  }
  if (wakeup) wakeup();
}

void TimerQueue::cancel(Timer& timer) {
  std::lock_guard lock(mutex_);
  if (timer.position_) timers_.erase(*timer.position_);
  timer.position_.reset();
  ++timer.generation_;
}

void TimerQueue::forget(Timer& timer) {
  std::lock_guard lock(mutex_);
  if (timer.position_) timers_.erase(*timer.position_);
  timer.position_.reset();
  std::erase(in_flight_, &timer);
}

size_t TimerQueue::run_expired() {
  struct Due {
    Timer* timer;
    uint64_t generation;
  };
  std::vector<Due> due;
  uint64_t now = clock_.now_ns();
  {
    std::lock_guard lock(mutex_);
    while (!timers_.empty() && timers_.begin()->first <= now) {
      Timer* timer = timers_.begin()->second;
      timers_.erase(timers_.begin());
      timer->position_.reset();
      due.push_back({timer, timer->generation_});
      in_flight_.push_back(timer);
    }
  }
  size_t fired = 0;
  for (const Due& entry : due) {
    {
      std::lock_guard lock(mutex_);
      auto found = std::find(in_flight_.begin(), in_flight_.end(), entry.timer);
      // Destroyed by an earlier callback: nothing to call.
      if (found == in_flight_.end()) continue;
      in_flight_.erase(found);
      // Re-armed or cancelled since it was collected: the newer request wins.
      if (entry.timer->generation_ != entry.generation) continue;
    }
    entry.timer->callback_(now);
    ++fired;
  }
  return fired;
}

std::optional<uint64_t> TimerQueue::next_deadline() const {
  std::lock_guard lock(mutex_);
  if (timers_.empty()) return std::nullopt;
  return timers_.begin()->first;
}

void TimerQueue::set_wakeup(std::function<void()> wakeup) {
  std::lock_guard lock(mutex_);
  wakeup_ = std::move(wakeup);
}

}  // namespace lamina::hw
