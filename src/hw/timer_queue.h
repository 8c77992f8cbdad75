#pragma once
// TimerQueue: the one place device timers wait, so no device needs a thread of its own. Devices
// own Timer objects and arm them for a deadline on the queue's Clock; the machine's run loop (or
// a test) calls run_expired() and sleeps until next_deadline(), and installs a wakeup callback so
// a timer armed earlier than the deadline it sleeps towards interrupts that sleep.
//
//   machine run loop:               device (any thread, under its own lock):
//     queue.set_wakeup(notify);       timer_.arm_at(clock.now_ns() + period);
//     loop:                           ...
//       queue.run_expired();        callback(now_ns) on the run-loop thread, without any queue
//       wait until next_deadline()  lock held, so it may take the device lock and re-arm.
//       or a wakeup
//
// A callback can run once after a cancel() or arm_at() raced with it on another thread; devices
// therefore re-derive their state from the clock in the callback instead of trusting the event.
// A timer that re-arms itself for a deadline already past fires on the next run_expired() call,
// not in the same one, so a guest programming a tiny period cannot trap the run loop.
//
// Ownership: the queue borrows the clock; a Timer borrows its queue, which must outlive it.
// Timers are destroyed only while the queue is not being serviced (or from a callback).
// Thread-safety: arm_at/cancel/next_deadline from any thread; run_expired from one thread.

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "hw/clock.h"

namespace lamina::hw {

class TimerQueue;

class Timer {
 public:
  using Callback = std::function<void(uint64_t now_ns)>;
  Timer(TimerQueue& queue, Callback callback);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  // (Re)arms the timer; a deadline in the past fires on the next run_expired().
  void arm_at(uint64_t deadline_ns);
  void cancel();
  bool armed() const;

 private:
  friend class TimerQueue;
  TimerQueue& queue_;
  Callback callback_;
  // Guarded by the queue's mutex.
  std::optional<std::multimap<uint64_t, Timer*>::iterator> position_;
  uint64_t generation_ = 0;
};

class TimerQueue {
 public:
  explicit TimerQueue(const Clock& clock) : clock_(clock) {}
  TimerQueue(const TimerQueue&) = delete;
  TimerQueue& operator=(const TimerQueue&) = delete;

  const Clock& clock() const { return clock_; }

  // Fires every timer whose deadline is at or before the clock's time on entry; returns how many.
  size_t run_expired();
  // The earliest armed deadline, or nothing when no timer is armed.
  std::optional<uint64_t> next_deadline() const;
  // Called, outside the queue lock, when a timer is armed earlier than every other one.
  void set_wakeup(std::function<void()> wakeup);

 private:
  friend class Timer;
  void arm(Timer& timer, uint64_t deadline_ns);
  void cancel(Timer& timer);
  void forget(Timer& timer);

  const Clock& clock_;
  mutable std::mutex mutex_;
  std::multimap<uint64_t, Timer*> timers_;
  std::vector<Timer*> in_flight_;  // collected by run_expired() and not yet called
  std::function<void()> wakeup_;
};

}  // namespace lamina::hw
