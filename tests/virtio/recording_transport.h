#pragma once
// RecordingTransport: the VirtioTransport a device test hands to a device: queues the test
// made, and counters of the interrupts and errors the device asked for. Thread-safe where the
// contract says so (signals and errors come from the device's I/O thread).

#include <array>
#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "virtio/virtio_device.h"

namespace lamina::virtio::testing {

// The transport side a device sees, recording what the device asks of it.
class RecordingTransport final : public VirtioTransport {
 public:
  explicit RecordingTransport(DmaMemory& memory) : memory_(memory) {}
  const DmaMemory& memory() const override { return memory_; }
  Virtqueue* queue(uint16_t index) override {
    return index < queues_.size() && queues_[index] ? &*queues_[index] : nullptr;
  }
  void signal_queue(uint16_t index) override { signals_[index & 1]++; }
  void signal_config_change() override { config_changes_++; }
  void device_error(std::string_view what) override {
    std::lock_guard lock(mutex_);
    errors_.emplace_back(what);
  }

  std::array<std::optional<Virtqueue>, 2> queues_;
  std::array<std::atomic<int>, 2> signals_{};
  std::atomic<int> config_changes_{0};
  std::mutex mutex_;
  std::vector<std::string> errors_;

 private:
  DmaMemory& memory_;
};

inline bool wait_until(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace lamina::virtio::testing
