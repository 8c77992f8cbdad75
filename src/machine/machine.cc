#include "machine/machine.h"

#include <chrono>

#include <fmt/format.h>

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
  std::lock_guard lock(timer_mutex_);
  paused_ = true;
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
}

void Machine::resume() {
  std::lock_guard lock(timer_mutex_);
  paused_ = false;
  if (quiesced_ || holding_) return;
  for (auto& thread : vcpu_threads_) thread->set_paused(false);
}

void Machine::quiesce() {
  {
    std::lock_guard lock(timer_mutex_);
    if (quiesced_) return;
    quiesced_ = true;
  }
  // vCPUs first: with none running, no new request reaches a device and no timer is armed by
  // the guest; then timers, whose callbacks raise interrupts; then the devices' own threads.
  for (auto& thread : vcpu_threads_) thread->set_paused(true);
  for (auto& thread : vcpu_threads_) thread->wait_parked();
  {
    std::unique_lock lock(timer_mutex_);
    timers_frozen_ = true;
    timer_idle_.wait(lock, [this] { return !timers_servicing_; });
  }
  for (auto& function : virtio_functions_) function->device().pause_io();
}

void Machine::release() {
  {
    std::lock_guard lock(timer_mutex_);
    if (!quiesced_) return;
  }
  for (auto& function : virtio_functions_) function->device().resume_io();
  std::lock_guard lock(timer_mutex_);
  quiesced_ = false;
  timers_frozen_ = false;
  timer_rearmed_ = true;
  timer_wakeup_.notify_all();
  if (!paused_ && !holding_) {
    for (auto& thread : vcpu_threads_) thread->set_paused(false);
  }
}

bool Machine::start_dirty_logging() {
  for (auto& vcpu : vcpus_) {
    // Asking each vCPU now also drops write translations made before the log started.
    if (!vcpu->restart_write_logging()) return false;
  }
  memory_.dirty_log().start();
  // Translations made between the request above and start() did not mark their pages: take
  // once more so that every vCPU restarts after the log was on.
  (void)take_dirty_pages();
  return true;
}

void Machine::stop_dirty_logging() { memory_.dirty_log().stop(); }

std::vector<uint64_t> Machine::take_dirty_pages() {
  {
    std::lock_guard lock(timer_mutex_);
    holding_ = true;
    for (auto& thread : vcpu_threads_) thread->set_paused(true);
  }
  for (auto& thread : vcpu_threads_) thread->wait_parked();
  // No vCPU stores now. A page written through a translation made since the last take was
  // marked when the translation was made, so it is in this bitmap and is read after this;
  // the translations go before the vCPUs run again, so later stores mark the next bitmap.
  std::vector<uint64_t> dirty = memory_.dirty_log().take();
  for (auto& vcpu : vcpus_) (void)vcpu->restart_write_logging();
  std::lock_guard lock(timer_mutex_);
  holding_ = false;
  if (!paused_ && !quiesced_) {
    for (auto& thread : vcpu_threads_) thread->set_paused(false);
  }
  return dirty;
}

void Machine::set_vcpu_throttle(unsigned percent) {
  for (auto& thread : vcpu_threads_) thread->set_throttle(percent);
}

std::vector<Machine::NamedState> Machine::stateful_devices() {
  std::vector<NamedState> devices;
  for (size_t index = 0; index < apics_.size(); ++index) {
    devices.push_back({fmt::format("lapic{}", index), apics_[index].get()});
  }
  devices.push_back({"ioapic", ioapic_.get()});
  devices.push_back({"pic", pic_.get()});
  devices.push_back({"pit", pit_.get()});
  devices.push_back({"port61", port61_.get()});
  devices.push_back({"rtc", rtc_.get()});
  devices.push_back({"com1", com1_.get()});
  devices.push_back({"com2", com2_.get()});
  devices.push_back({"i8042", i8042_.get()});
  devices.push_back({"port92", port92_.get()});
  devices.push_back({"post-code", post_code_.get()});
  devices.push_back({"debug-exit", debug_exit_.get()});
  devices.push_back({"acpi-pm", acpi_pm_.get()});
  devices.push_back({"reset-control", reset_control_.get()});
  devices.push_back({"hpet", hpet_.get()});
  devices.push_back({"pci-host", pci_host_.get()});
  for (size_t index = 0; index < virtio_functions_.size(); ++index) {
    devices.push_back(
        {fmt::format("pci-00:{:02x}.0-{}", index + 1, virtio_functions_[index]->device().name()),
         virtio_functions_[index].get()});
  }
  return devices;
}

void Machine::set_a20_enabled(bool enabled) {
  a20_enabled_.store(enabled, std::memory_order_relaxed);
  for (const auto& vcpu : vcpus_) vcpu->set_a20_enabled(enabled);
}

void Machine::kick_vcpus() {
  for (auto& thread : vcpu_threads_) thread->wake();
}

void Machine::service_timers(std::stop_token stop) {
  while (!stop.stop_requested()) {
    {
      std::unique_lock lock(timer_mutex_);
      timer_wakeup_.wait(lock, [&] { return !timers_frozen_ || stop.stop_requested(); });
      if (stop.stop_requested()) return;
      timers_servicing_ = true;
    }
    timers_.run_expired();
    {
      std::lock_guard lock(timer_mutex_);
      timers_servicing_ = false;
    }
    timer_idle_.notify_all();
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
