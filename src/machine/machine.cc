#include "machine/machine.h"

#include <chrono>

namespace lamina::machine {
namespace {

// The longest the timer thread sleeps with no timer armed; only bounds how late it notices a
// stop request it somehow missed.
constexpr uint64_t kIdleTimerSleepNs = 100'000'000;

}  // namespace

Machine::Machine(MemoryLayout layout, GuestMemory memory)
    : layout_(layout), memory_(std::move(memory)) {}

Machine::~Machine() { stop_threads(); }

uint64_t Machine::instructions() const {
  uint64_t total = 0;
  for (const auto& thread : vcpu_threads_) total += thread->instructions();
  return total;
}

void Machine::pause() {
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
}

void Machine::resume() {
  for (auto& thread : vcpu_threads_) thread->set_paused(false);
}

void Machine::service_timers(std::stop_token stop) {
  while (!stop.stop_requested()) {
    timers_.run_expired();
    const std::optional<uint64_t> next = timers_.next_deadline();
    const uint64_t now = clock_.now_ns();
    uint64_t sleep_ns = kIdleTimerSleepNs;
    if (next) sleep_ns = *next > now ? std::min(*next - now, kIdleTimerSleepNs) : 0;
    std::unique_lock lock(timer_mutex_);
    if (sleep_ns > 0) {
      timer_wakeup_.wait_for(lock, std::chrono::nanoseconds(sleep_ns),
                             [&] { return timer_rearmed_ || stop.stop_requested(); });
    }
    timer_rearmed_ = false;
  }
}

void Machine::stop_threads() {
  // vCPUs first: they are the ones calling into devices and arming timers.
  for (auto& thread : vcpu_threads_) thread->stop();
  if (timer_thread_.joinable()) {
    timer_thread_.request_stop();
    {
      std::lock_guard lock(timer_mutex_);
      timer_rearmed_ = true;
    }
    timer_wakeup_.notify_all();
    timer_thread_.join();
  }
}

MachineStop Machine::run() {
  timers_.set_wakeup([this] {
    {
      std::lock_guard lock(timer_mutex_);
      timer_rearmed_ = true;
    }
    timer_wakeup_.notify_all();
  });
  timer_thread_ = std::jthread([this](std::stop_token stop) { service_timers(std::move(stop)); });
  for (auto& thread : vcpu_threads_) thread->start();
  std::optional<MachineStop> stop;
  while (!stop) stop = stops_.wait_for(std::chrono::seconds(1));
  stop_threads();
  return *stop;
}

}  // namespace lamina::machine
