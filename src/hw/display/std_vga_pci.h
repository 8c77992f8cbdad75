#pragma once
// StdVgaPci: the PCI function of the standard VGA adapter (QEMU's "VGA" device, PCI ID
// 1234:1111, class 03/00 VGA-compatible): BAR0 the linear framebuffer (prefetchable), BAR2 the
// MMIO block with the VGA and DISPI registers. The legacy ports and the 0xA0000 window decode
// regardless of the Command register, as on a PC's primary adapter; the machine maps them.
//
// Ownership: owns the StdVga. Thread-safety: as PciDevice and StdVga.

#include "hw/display/std_vga.h"
#include "hw/pci_device.h"

namespace lamina::hw {

class StdVgaPci final : public PciDevice {
 public:
  static constexpr uint16_t kVendorId = 0x1234;
  static constexpr uint16_t kDeviceId = 0x1111;

  explicit StdVgaPci(uint64_t video_memory = StdVga::kDefaultVideoMemory);

  StdVga& vga() { return vga_; }

  // Config space, then the adapter's registers and video memory.
  void save(StateWriter& writer) const override;
  [[nodiscard]] Result<void> load(StateReader& reader) override;

 private:
  StdVga vga_;
};

}  // namespace lamina::hw
