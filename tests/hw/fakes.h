#pragma once
// Test doubles shared by the device tests: an IrqLine that records every level change, and
// helpers that drive a Device through its registers the way a vCPU would.

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "base/byte_order.h"
#include "hw/device.h"
#include "hw/irq_line.h"

namespace lamina::hw::testing {

class RecordingIrqLine final : public IrqLine {
 public:
  void set_level(bool asserted) override {
    std::lock_guard lock(mutex_);
    if (asserted && !level_) ++rising_edges_;
    level_ = asserted;
    history_.push_back(asserted);
  }
  bool level() const {
    std::lock_guard lock(mutex_);
    return level_;
  }
  int rising_edges() const {
    std::lock_guard lock(mutex_);
    return rising_edges_;
  }
  void reset_count() {
    std::lock_guard lock(mutex_);
    rising_edges_ = 0;
    history_.clear();
  }
  std::vector<bool> history() const {
    std::lock_guard lock(mutex_);
    return history_;
  }

 private:
  mutable std::mutex mutex_;
  bool level_ = false;
  int rising_edges_ = 0;
  std::vector<bool> history_;
};

inline uint64_t read_register(Device& device, uint64_t offset, size_t size) {
  std::byte bytes[8] = {};
  device.read(offset, std::span(bytes, size));
  return load_le_sized(std::span<const std::byte>(bytes, size));
}

inline void write_register(Device& device, uint64_t offset, size_t size, uint64_t value) {
  std::byte bytes[8] = {};
  store_le_sized(std::span(bytes, size), value);
  device.write(offset, std::span<const std::byte>(bytes, size));
}

inline uint8_t in8(Device& device, uint64_t offset) {
  return static_cast<uint8_t>(read_register(device, offset, 1));
}
inline void out8(Device& device, uint64_t offset, uint8_t value) {
  write_register(device, offset, 1, value);
}
inline uint32_t read32(Device& device, uint64_t offset) {
  return static_cast<uint32_t>(read_register(device, offset, 4));
}
inline void write32(Device& device, uint64_t offset, uint32_t value) {
  write_register(device, offset, 4, value);
}

}  // namespace lamina::hw::testing
