#pragma once
// PciHarness: a VirtioPciFunction on real buses, driven the way a guest driver does it: config
// space through PciDevice::config_read/config_write, the BARs programmed and decoded on an
// MMIO Bus, the vendor capabilities found by walking the capability list, the registers read
// and written through the Bus at the addresses those capabilities name. Interrupts land in a
// RecordingMsiSink and an INTx line that records levels.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

#include "base/byte_order.h"
#include "base/guest_memory.h"
#include "hw/bus.h"
#include "hw/irq_line.h"
#include "virtio/virtio_pci.h"
#include "virtio/virtio_pci_layout.h"

namespace lamina::virtio::testing {

class RecordingMsiSink final : public hw::MsiSink {
 public:
  void deliver_msi(uint64_t address, uint32_t data) override {
    std::lock_guard lock(mutex_);
    messages_.push_back({address, data});
  }
  std::vector<std::pair<uint64_t, uint32_t>> messages() const {
    std::lock_guard lock(mutex_);
    return messages_;
  }
  void clear() {
    std::lock_guard lock(mutex_);
    messages_.clear();
  }

 private:
  mutable std::mutex mutex_;
  std::vector<std::pair<uint64_t, uint32_t>> messages_;
};

class LevelLine final : public hw::IrqLine {
 public:
  void set_level(bool asserted) override {
    std::lock_guard lock(mutex_);
    if (asserted && !level_) ++rising_;
    level_ = asserted;
  }
  bool level() const {
    std::lock_guard lock(mutex_);
    return level_;
  }
  int rising() const {
    std::lock_guard lock(mutex_);
    return rising_;
  }

 private:
  mutable std::mutex mutex_;
  bool level_ = false;
  int rising_ = 0;
};

struct Capability {
  uint8_t at = 0;  // offset in config space
  uint8_t bar = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
};

class PciHarness {
 public:
  static constexpr uint64_t kRegisterBase = 0xc0000000;
  static constexpr uint64_t kMsixBase = 0xc0100000;

  PciHarness(std::unique_ptr<VirtioDevice> device, const DmaMemory& memory)
      : function_(std::make_unique<VirtioPciFunction>(std::move(device), memory, msi_)) {
    plug();
  }

  // Replaces the function (for save/load into a fresh one).
  void replace(std::unique_ptr<VirtioDevice> device, const DmaMemory& memory) {
    function_.reset();
    function_ = std::make_unique<VirtioPciFunction>(std::move(device), memory, msi_);
    plug();
  }

  VirtioPciFunction& function() { return *function_; }
  RecordingMsiSink& msi() { return msi_; }
  LevelLine& intx() { return intx_; }
  hw::Bus& mmio() { return mmio_; }
  const Capability& capability(pci::CapabilityType type) { return capabilities_.at(type); }
  bool has_capability(pci::CapabilityType type) const { return capabilities_.count(type) != 0; }
  uint32_t notify_multiplier() const { return notify_multiplier_; }

  uint32_t config(uint16_t offset, unsigned size = 4) {
    return function_->config_read(offset, size);
  }
  void set_config(uint16_t offset, uint32_t value, unsigned size = 4) {
    function_->config_write(offset, size, value);
  }

  // Register access at `offset` within the structure of capability `type`.
  uint64_t read(pci::CapabilityType type, uint64_t offset, size_t size) {
    std::byte bytes[8] = {};
    mmio_.read(address_of(type, offset), std::span(bytes, size));
    return load_le_sized(std::span<const std::byte>(bytes, size));
  }
  void write(pci::CapabilityType type, uint64_t offset, size_t size, uint64_t value) {
    std::byte bytes[8] = {};
    store_le_sized(std::span(bytes, size), value);
    mmio_.write(address_of(type, offset), std::span<const std::byte>(bytes, size));
  }
  uint64_t common(uint16_t field, size_t size) {
    return read(pci::CapabilityType::kCommon, field, size);
  }
  void set_common(uint16_t field, size_t size, uint64_t value) {
    write(pci::CapabilityType::kCommon, field, size, value);
  }
  uint8_t status() { return static_cast<uint8_t>(common(pci::common::kDeviceStatus, 1)); }
  void set_status(uint8_t value) { set_common(pci::common::kDeviceStatus, 1, value); }
  uint8_t read_isr() { return static_cast<uint8_t>(read(pci::CapabilityType::kIsr, 0, 1)); }

  uint64_t device_features() {
    set_common(pci::common::kDeviceFeatureSelect, 4, 0);
    uint64_t features = common(pci::common::kDeviceFeature, 4);
    set_common(pci::common::kDeviceFeatureSelect, 4, 1);
    return features | (common(pci::common::kDeviceFeature, 4) << 32);
  }
  void set_driver_features(uint64_t features) {
    set_common(pci::common::kDriverFeatureSelect, 4, 0);
    set_common(pci::common::kDriverFeature, 4, features & 0xffffffff);
    set_common(pci::common::kDriverFeatureSelect, 4, 1);
    set_common(pci::common::kDriverFeature, 4, features >> 32);
  }

  // 3.1.1 steps 1-6; returns whether FEATURES_OK stuck.
  bool negotiate(uint64_t features) {
    set_status(0);
    set_status(pci::status::kAcknowledge);
    set_status(pci::status::kAcknowledge | pci::status::kDriver);
    set_driver_features(features);
    set_status(pci::status::kAcknowledge | pci::status::kDriver | pci::status::kFeaturesOk);
    return (status() & pci::status::kFeaturesOk) != 0;
  }
  // Step 7 for one queue: size, addresses (as 32-bit halves, as Linux writes them), enable.
  void setup_queue(uint16_t index, const VirtqueueLayout& layout,
                   uint16_t vector = pci::kNoVector) {
    set_common(pci::common::kQueueSelect, 2, index);
    set_common(pci::common::kQueueSize, 2, layout.size);
    set_common(pci::common::kQueueMsixVector, 2, vector);
    const std::pair<uint16_t, uint64_t> addresses[] = {
        {pci::common::kQueueDescriptor, layout.descriptor_table},
        {pci::common::kQueueDriver, layout.driver_area},
        {pci::common::kQueueDevice, layout.device_area}};
    for (auto [field, address] : addresses) {
      set_common(field, 4, address & 0xffffffff);
      set_common(static_cast<uint16_t>(field + 4), 4, address >> 32);
    }
    set_common(pci::common::kQueueEnable, 2, 1);
  }
  void driver_ok() {
    set_status(pci::status::kAcknowledge | pci::status::kDriver | pci::status::kFeaturesOk |
               pci::status::kDriverOk);
  }
  // Rings queue `index`'s doorbell.
  void kick(uint16_t index) {
    set_common(pci::common::kQueueSelect, 2, index);
    const uint64_t notify_off = common(pci::common::kQueueNotifyOff, 2);
    write(pci::CapabilityType::kNotify, notify_off * notify_multiplier_, 2, index);
  }

  // MSI-X: programs vector `vector` (address/data) and enables MSI-X.
  void enable_msix(uint16_t vectors) {
    for (uint16_t v = 0; v < vectors; ++v) {
      write_msix(v * 16u + 0, 0xfee00000u | (uint32_t{v} << 12));  // destination APIC v
      write_msix(v * 16u + 4, 0);
      write_msix(v * 16u + 8, 0x40u + v);
      write_msix(v * 16u + 12, 0);  // unmasked
    }
    const uint16_t control = static_cast<uint16_t>(config(msix_capability_ + 2, 2));
    set_config(msix_capability_ + 2, control | 0x8000u, 2);
  }
  void write_msix(uint64_t offset, uint32_t value) {
    std::byte bytes[4];
    store_le<uint32_t>(bytes, value);
    mmio_.write(kMsixBase + offset, bytes);
  }
  uint8_t msix_capability() const { return msix_capability_; }

  // Programs the BARs and decoding again and re-reads the capabilities (after a test or a
  // fuzz input wrote config space at random).
  void reprogram() { plug(); }

 private:
  void plug() {
    capabilities_.clear();
    function_->attach_buses(io_, mmio_);
    function_->set_intx_line(&intx_);
    // Firmware's job: program the BARs, enable memory decoding and bus mastering.
    set_config(0x10 + 4 * pci::kRegisterBar, static_cast<uint32_t>(kRegisterBase));
    set_config(0x14 + 4 * pci::kRegisterBar, 0);
    set_config(0x10 + 4 * pci::kMsixBar, static_cast<uint32_t>(kMsixBase));
    set_config(0x04, 0x0006, 2);
    for (uint8_t at = static_cast<uint8_t>(config(0x34, 1)); at != 0;
         at = static_cast<uint8_t>(config(at + 1u, 1))) {
      const uint8_t id = static_cast<uint8_t>(config(at, 1));
      if (id == 0x11) msix_capability_ = at;
      if (id != pci::kCapabilityVendor) continue;
      const auto type = static_cast<pci::CapabilityType>(config(at + pci::kCapCfgType, 1));
      capabilities_[type] = {at, static_cast<uint8_t>(config(at + pci::kCapBar, 1)),
                             config(at + pci::kCapOffset), config(at + pci::kCapLength)};
      if (type == pci::CapabilityType::kNotify) {
        notify_multiplier_ = config(at + pci::kNotifyCapMultiplier);
      }
    }
  }
  uint64_t address_of(pci::CapabilityType type, uint64_t offset) {
    const Capability& cap = capabilities_.at(type);
    return (cap.bar == pci::kRegisterBar ? kRegisterBase : kMsixBase) + cap.offset + offset;
  }

  hw::Bus io_{"io", 0xffff};
  hw::Bus mmio_{"mmio"};
  RecordingMsiSink msi_;
  LevelLine intx_;
  std::unique_ptr<VirtioPciFunction> function_;
  std::map<pci::CapabilityType, Capability> capabilities_;
  uint32_t notify_multiplier_ = 0;
  uint8_t msix_capability_ = 0;
};

}  // namespace lamina::virtio::testing
