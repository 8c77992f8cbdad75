#pragma once
// PciHost: the PCI host bridge. It owns configuration access for bus 0 through the PC's
// mechanism #1 ports (CONFIG_ADDRESS at 0xcf8, CONFIG_DATA at 0xcfc-0xcff; PCI Local Bus 3.0
// section 3.2.2.3.2) and through ECAM (PCIe 5.0 section 7.2.2: bus << 20 | device << 15 |
// function << 12 | register, base and bus count chosen by the machine and declared in the MCFG
// table), and presents its own function 00:00.0 (class 06/00/00, host bridge).
//
// Functions are plugged in with attach() (at build time, or by hotplug) and out with detach(); the host hands them the port and MMIO
// buses so their BARs map themselves when the guest enables decoding. Only bus 0 is populated
// (no bridges), so accesses to other buses read all ones.
//
// Byte accesses to 0xcf9 inside the CONFIG_ADDRESS dword are forwarded to the chipset's reset
// control register when one is given, as on PIIX/ICH; only 32-bit accesses reach CONFIG_ADDRESS.
//
// Ownership: owns its windows and its own function; borrows buses, functions and the reset
// control Device. Thread-safety: one mutex serialises configuration cycles.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>

#include "base/log.h"
#include "hw/bus.h"
#include "hw/device_window.h"
#include "hw/pci_device.h"
#include "hw/stateful.h"

namespace lamina::hw {

class PciHost final : public WindowedDevice, public Stateful {
 public:
  static constexpr uint64_t kConfigAddressPort = 0xcf8;
  static constexpr uint64_t kConfigDataPort = 0xcfc;

  struct Options {
    uint16_t vendor = 0x1b36;  // Red Hat's "QEMU PCIe host bridge" ID, which needs no driver
    uint16_t device = 0x0008;
    unsigned ecam_buses = 1;          // ECAM window size: ecam_buses MiB (1..256)
    Device* reset_control = nullptr;  // 0xcf9 byte accesses
    // A chipset's own function 00:00.0 (borrowed; the i440FX with its PAM registers for
    // firmware boots); null: a generic host bridge with vendor/device above.
    PciDevice* bridge = nullptr;
  };

  PciHost(Bus& io, Bus& mmio, Options options);

  Device& config_address_port() { return address_window_; }  // map at 0xcf8, size 4
  Device& config_data_port() { return data_window_; }        // map at 0xcfc, size 4
  Device& ecam() { return ecam_window_; }                    // map at the ECAM base
  uint64_t ecam_size() const { return static_cast<uint64_t>(ecam_buses_) << 20; }

  // Plugs a function into bus 0. Fails when the slot is taken or the numbers are out of range.
  [[nodiscard]] Result<void> attach(uint8_t device, uint8_t function, PciDevice& pci_device);
  // Unplugs what attach() plugged (hotplug; the caller holds the vCPUs, so no access to the
  // function is in flight). kNotFound when the slot is empty.
  [[nodiscard]] Result<void> detach(uint8_t device, uint8_t function);
  PciDevice& host_bridge() { return *bridge_function_; }

  void window_read(unsigned window, uint64_t offset, std::span<std::byte> data) override;
  void window_write(unsigned window, uint64_t offset, std::span<const std::byte> data) override;

  // The host's own state (CONFIG_ADDRESS); each PciDevice saves itself.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  PciDevice* function_at(unsigned bus, unsigned device, unsigned function) const;
  uint32_t config_read(unsigned bus, unsigned device, unsigned function, uint16_t reg,
                       unsigned size) const;
  void config_write(unsigned bus, unsigned device, unsigned function, uint16_t reg, unsigned size,
                    uint32_t value);

  Bus& io_;
  Bus& mmio_;
  Options options_;
  unsigned ecam_buses_;
  DeviceWindow address_window_;
  DeviceWindow data_window_;
  DeviceWindow ecam_window_;
  std::unique_ptr<PciDevice> bridge_;  // the generic bridge, when Options::bridge is null
  PciDevice* bridge_function_;
  RateLimiter log_limiter_;

  mutable std::mutex mutex_;
  uint32_t config_address_ = 0;
  std::array<PciDevice*, 32 * 8> functions_{};
};

}  // namespace lamina::hw
