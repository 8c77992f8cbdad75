#pragma once
// FirmwareRom: the system BIOS flash as the CPU reads it just below 4 GiB (the reset vector at
// 0xFFFFFFF0 is its last 16 bytes). Read-only: writes are dropped and counted, as on a PC
// whose flash is not write-enabled. Mapped on the MMIO bus, so execution from it takes the
// vCPUs' MMIO path; firmware runs from there only until it jumps to its low alias.
//
// Ownership: owns a copy of the image. Thread-safety: the image is immutable; the counter is
// atomic.

#include <algorithm>
#include <atomic>
#include <cstring>
#include <span>
#include <vector>

#include "hw/device.h"

namespace lamina::hw {

class FirmwareRom final : public Device {
 public:
  explicit FirmwareRom(std::span<const std::byte> image) : image_(image.begin(), image.end()) {}

  std::string_view name() const override { return "firmware-rom"; }
  uint64_t size() const { return image_.size(); }
  uint64_t dropped_writes() const { return dropped_writes_.load(std::memory_order_relaxed); }

  void read(uint64_t offset, std::span<std::byte> data) override {
    for (size_t index = 0; index < data.size(); ++index) {
      data[index] = offset + index < image_.size() ? image_[offset + index] : std::byte{0xff};
    }
  }
  void write(uint64_t, std::span<const std::byte>) override {
    dropped_writes_.fetch_add(1, std::memory_order_relaxed);
  }

 private:
  const std::vector<std::byte> image_;
  std::atomic<uint64_t> dropped_writes_{0};
};

}  // namespace lamina::hw
