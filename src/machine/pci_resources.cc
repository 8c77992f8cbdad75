#include "machine/pci_resources.h"

#include <fmt/format.h>

namespace lamina::machine {

namespace {
constexpr uint16_t kCommand = 0x04;
constexpr uint16_t kBar0 = 0x10;
constexpr uint16_t kCommandIo = 1u << 0, kCommandMemory = 1u << 1, kCommandBusMaster = 1u << 2;
}  // namespace

Result<void> PciResourceAllocator::assign(hw::PciDevice& function) {
  uint16_t command = kCommandBusMaster;
  // Decoding stays off while the BARs hold sizing patterns (PCI 3.0 section 6.2.5.1).
  const auto saved_command = static_cast<uint16_t>(function.config_read(kCommand, 2));
  function.config_write(kCommand, 2, saved_command & ~(kCommandIo | kCommandMemory));
  for (unsigned index = 0; index < hw::PciDevice::kBars; ++index) {
    const auto offset = static_cast<uint16_t>(kBar0 + 4 * index);
    const uint32_t type = function.config_read(offset, 4);
    function.config_write(offset, 4, 0xffffffff);
    const uint32_t probed = function.config_read(offset, 4);
    if (probed == 0) continue;  // not implemented
    if (type & 1) {
      // I/O BAR: bits 31:2 give the size.
      const uint32_t size = ~(probed & ~3u) + 1;
      const uint32_t address = (io_next_ + size - 1) & ~(size - 1);
      if (size == 0 || address + size > io_end_) {
        return fail(ErrorCode::kUnsupported,
                    fmt::format("pci {}: no I/O space left for BAR{}", function.name(), index));
      }
      function.config_write(offset, 4, address);
      io_next_ = address + size;
      command |= kCommandIo;
      continue;
    }
    const bool is64 = (type & 0x6) == 0x4;
    uint64_t mask = probed & ~0xfull;
    if (is64) {
      function.config_write(offset + 4, 4, 0xffffffff);
      mask |= static_cast<uint64_t>(function.config_read(offset + 4, 4)) << 32;
    } else {
      mask |= 0xffffffff00000000ull;
    }
    const uint64_t size = ~mask + 1;
    const uint64_t address = (memory_next_ + size - 1) & ~(size - 1);
    if (size == 0 || address + size > memory_end_ || address + size < address) {
      return fail(ErrorCode::kUnsupported,
                  fmt::format("pci {}: no MMIO space left for BAR{}", function.name(), index));
    }
    function.config_write(offset, 4, static_cast<uint32_t>(address));
    if (is64) function.config_write(offset + 4, 4, static_cast<uint32_t>(address >> 32));
    memory_next_ = address + size;
    command |= kCommandMemory;
    if (is64) ++index;  // the upper half
  }
  function.config_write(kCommand, 2, saved_command | command);
  return {};
}

}  // namespace lamina::machine
