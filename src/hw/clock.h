#pragma once
// Clock: the time base that device timers count from. The machine hands devices a HostClock;
// tests hand them a ManualClock they advance by hand, so timer behaviour is deterministic.
//
// Thread-safety: now_ns() may be called from any thread. ManualClock::advance() is meant for the
// single test thread that also services the TimerQueue.

#include <atomic>
#include <chrono>
#include <cstdint>

namespace lamina::hw {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic nanoseconds since an arbitrary epoch; never goes backwards.
  virtual uint64_t now_ns() const = 0;
};

// The host's monotonic clock, counted from construction so values stay small.
class HostClock final : public Clock {
 public:
  HostClock() : start_(std::chrono::steady_clock::now()) {}
  uint64_t now_ns() const override {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::steady_clock::now() - start_)
                                     .count());
  }
  // Makes now_ns() read `ns` at this moment and count on from there: a restored machine's
  // time goes on where the saved one stopped. Only while nothing else reads the clock (before
  // the machine runs), since it may move the clock backwards.
  void continue_from(uint64_t ns) {
    start_ = std::chrono::steady_clock::now() - std::chrono::nanoseconds(ns);
  }

 private:
  std::chrono::steady_clock::time_point start_;
};

// A clock that moves only when told to (tests, and a deterministic instruction-count clock).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ns = 0) : now_(start_ns) {}
  uint64_t now_ns() const override { return now_.load(std::memory_order_acquire); }
  void advance(uint64_t ns) { now_.fetch_add(ns, std::memory_order_acq_rel); }
  void set(uint64_t ns) { now_.store(ns, std::memory_order_release); }

 private:
  std::atomic<uint64_t> now_;
};

constexpr uint64_t kNanosecondsPerSecond = 1'000'000'000;

// Ticks of a frequency_hz counter in `ns` nanoseconds, rounded down, without 64-bit overflow
// for any span a VM can live (the product is split at whole seconds).
constexpr uint64_t ns_to_ticks(uint64_t ns, uint64_t frequency_hz) {
  return (ns / kNanosecondsPerSecond) * frequency_hz +
         (ns % kNanosecondsPerSecond) * frequency_hz / kNanosecondsPerSecond;
}

// Nanoseconds until a frequency_hz counter has advanced `ticks`, rounded up so a timer armed for
// that moment never fires before the counter got there.
// Saturates at UINT64_MAX ("never") instead of wrapping for spans beyond ~584 years.
constexpr uint64_t ticks_to_ns(uint64_t ticks, uint64_t frequency_hz) {
  const uint64_t seconds = ticks / frequency_hz;
  if (seconds > UINT64_MAX / kNanosecondsPerSecond - 1) return UINT64_MAX;
  return seconds * kNanosecondsPerSecond +
         ((ticks % frequency_hz) * kNanosecondsPerSecond + frequency_hz - 1) / frequency_hz;
}

// a + b, or UINT64_MAX when that overflows: deadlines far away stay far away.
constexpr uint64_t saturating_add(uint64_t a, uint64_t b) {
  return b > UINT64_MAX - a ? UINT64_MAX : a + b;
}

}  // namespace lamina::hw
