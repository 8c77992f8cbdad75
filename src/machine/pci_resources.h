#pragma once
// PciResourceAllocator: what firmware does for PCI functions before an OS runs (PCI Firmware
// spec 3.2, "resource allocation"): sizes each BAR by writing all ones, assigns naturally
// aligned addresses from the host bridge's windows the DSDT's _CRS describes (32-bit MMIO, and
// I/O ports above the legacy range), and enables decoding. Linux keeps assignments that lie in
// a window and reassigns only what is missing, so this mainly serves guests that do not.
//
// A plain value used while the machine is built; not thread-safe.

#include <cstdint>

#include "base/error.h"
#include "hw/pci_device.h"

namespace lamina::machine {

class PciResourceAllocator {
 public:
  PciResourceAllocator(uint64_t memory_start, uint64_t memory_end, uint32_t io_start,
                       uint32_t io_end)
      : memory_next_(memory_start), memory_end_(memory_end), io_next_(io_start), io_end_(io_end) {}

  // Assigns every implemented BAR of `function` and turns on memory/I/O decoding and bus
  // mastering; kUnsupported when a window is exhausted.
  [[nodiscard]] Result<void> assign(hw::PciDevice& function);

 private:
  uint64_t memory_next_;
  uint64_t memory_end_;
  uint32_t io_next_;
  uint32_t io_end_;
};

}  // namespace lamina::machine
