#include "hw/display/std_vga_pci.h"

namespace lamina::hw {

StdVgaPci::StdVgaPci(uint64_t video_memory)
    : PciDevice("std-vga", kVendorId, kDeviceId, 0x030000, 0x02), vga_(video_memory) {
  // QEMU's subsystem IDs for its display devices (Red Hat, QEMU).
  set_subsystem(0x1af4, 0x1100);
  add_bar(0, PciBarKind::kMemory32, vga_.video_memory(), vga_.framebuffer(), true);
  add_bar(2, PciBarKind::kMemory32, StdVga::kMmioSize, vga_.mmio());
}

void StdVgaPci::save(StateWriter& writer) const {
  PciDevice::save(writer);
  vga_.save(writer);
}

Result<void> StdVgaPci::load(StateReader& reader) {
  if (auto loaded = PciDevice::load(reader); !loaded) return loaded;
  return vga_.load(reader);
}

}  // namespace lamina::hw
