#include "machine/vcpu_thread.h"

#include <fmt/format.h>

namespace lamina::machine {

void VcpuThread::start() {
  {
    // Under the mutex: wait_parked() on another thread asks whether a thread will exist.
    std::lock_guard lock(mutex_);
    started_ = true;
  }
  thread_ = std::jthread([this](std::stop_token stop) {
    if (setup_) setup_();
    loop(std::move(stop));
  });
}

void VcpuThread::wake() {
  vcpu_.request_interrupt();
  vcpu_.request_nmi();
  {
    std::lock_guard lock(mutex_);
    wake_pending_ = true;
  }
  woken_.notify_one();
}

void VcpuThread::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  vcpu_.kick();
  {
    std::lock_guard lock(mutex_);
    wake_pending_ = true;
  }
  woken_.notify_one();
  thread_.join();
}

void VcpuThread::set_paused(bool paused) {
  {
    std::lock_guard lock(mutex_);
    paused_ = paused;
    wake_pending_ = true;
  }
  if (paused) vcpu_.kick();
  woken_.notify_one();
}

bool VcpuThread::wait_while_paused(const std::stop_token& stop) {
  std::unique_lock lock(mutex_);
  if (paused_ && !stop.stop_requested()) {
    parked_ = true;
    parked_changed_.notify_all();
    woken_.wait(lock, [&] { return !paused_ || stop.stop_requested(); });
    parked_ = false;
  }
  return !stop.stop_requested();
}

void VcpuThread::wait_parked() {
  std::unique_lock lock(mutex_);
  // Not started: when it starts, a paused thread holds before its first instruction.
  if (!started_) return;
  parked_changed_.wait(lock, [&] { return parked_ || finished_ || !paused_; });
}

void VcpuThread::forward_startup_messages() {
  // INIT first: a SIPI is only accepted in the wait-for-SIPI state INIT leads to (MP spec B.4).
  if (apic_.take_init()) vcpu_.request_init();
  if (auto vector = apic_.take_startup()) vcpu_.startup(*vector);
}

bool VcpuThread::sleep(const std::stop_token& stop) {
  std::unique_lock lock(mutex_);
  woken_.wait(lock, [&] { return wake_pending_ || stop.stop_requested(); });
  wake_pending_ = false;
  return !stop.stop_requested();
}

void VcpuThread::throttle_sleep(const std::stop_token& stop,
                               std::chrono::steady_clock::duration ran, unsigned percent) {
  // Sleep percent/(100-percent) of the slice's time, in steps that notice a stop or a pause;
  // at most 50 ms at once so a throttled guest still sees its timers.
  auto left = std::min<std::chrono::steady_clock::duration>(ran * percent / (100 - percent),
                                                            std::chrono::milliseconds(50));
  while (left > std::chrono::steady_clock::duration::zero() && !stop.stop_requested()) {
    {
      std::lock_guard lock(mutex_);
      if (paused_) return;
    }
    const auto step = std::min<std::chrono::steady_clock::duration>(left, std::chrono::milliseconds(5));
    std::this_thread::sleep_for(step);
    left -= step;
  }
}

void VcpuThread::loop(std::stop_token stop) {
  run_slices(stop);
  std::lock_guard lock(mutex_);
  finished_ = true;
  parked_changed_.notify_all();
}

void VcpuThread::run_slices(const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    if (!wait_while_paused(stop)) return;
    {
      // Cleared before looking at the LAPIC: a wake after this point either is seen below or
      // leaves the flag set, so sleep() cannot miss it.
      std::lock_guard lock(mutex_);
      wake_pending_ = false;
    }
    forward_startup_messages();
    const unsigned throttle = throttle_percent_.load(std::memory_order_relaxed);
    const auto slice_start = std::chrono::steady_clock::now();
    const accel::VcpuExit exit = vcpu_.run(kSliceInstructions);
    instructions_.fetch_add(exit.instructions, std::memory_order_relaxed);
    const accel::CodeCacheStats cache = vcpu_.code_cache_stats();
    translations_.store(cache.translations, std::memory_order_relaxed);
    flushes_.store(cache.flushes, std::memory_order_relaxed);
    cache_used_.store(cache.used_bytes, std::memory_order_relaxed);
    cache_capacity_.store(cache.capacity_bytes, std::memory_order_relaxed);
    if (throttle != 0) throttle_sleep(stop, std::chrono::steady_clock::now() - slice_start, throttle);
    switch (exit.kind) {
      case accel::VcpuExit::Kind::kYield:
      case accel::VcpuExit::Kind::kKicked: break;
      case accel::VcpuExit::Kind::kHalted:
      case accel::VcpuExit::Kind::kWaitForStartup:
        if (!sleep(stop)) return;
        break;
      case accel::VcpuExit::Kind::kShutdown:
        stops_.post({MachineExit::kTripleFault,
                     fmt::format("vCPU {} triple fault: {}", index_, exit.reason), 0});
        return;
    }
  }
}

}  // namespace lamina::machine
