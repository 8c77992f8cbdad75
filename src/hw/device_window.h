#pragma once
// DeviceWindow: one of several port or MMIO ranges that a single device answers on (the PIC pair
// at 0x20, 0xa0 and 0x4d0; the i8042 at 0x60 and 0x64). Each window is a Device the machine maps
// on a bus; it forwards accesses to its owner with the window's index, so one device object keeps
// one lock and one saved state across all its ranges.
//
// Ownership: borrows the owner, which owns its windows. Thread-safety: as the owner's.

#include <string>

#include "hw/device.h"

namespace lamina::hw {

class WindowedDevice {
 public:
  virtual ~WindowedDevice() = default;
  virtual void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) = 0;
  virtual void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) = 0;
};

class DeviceWindow final : public Device {
 public:
  DeviceWindow(WindowedDevice& owner, unsigned window, std::string name)
      : owner_(owner), window_(window), name_(std::move(name)) {}

  std::string_view name() const override { return name_; }
  void read(uint64_t offset, std::span<std::byte> data) override {
    owner_.window_read(window_, offset, data);
  }
  void write(uint64_t offset, std::span<const std::byte> data) override {
    owner_.window_write(window_, offset, data);
  }

 private:
  WindowedDevice& owner_;
  unsigned window_;
  std::string name_;
};

}  // namespace lamina::hw
