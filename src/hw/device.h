#pragma once
// Device: the one interface for port I/O and MMIO devices. A bus maps a device at a range and
// hands it offsets within that range only; the device never sees absolute addresses.
//
// Thread-safety: read() and write() are called from any vCPU thread (and device I/O threads);
// implementations synchronize internally. Bad guest input never throws, aborts or blocks: the
// device ignores it or enters its spec'd error state, and logs rate-limited.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace lamina::hw {

class Device {
 public:
  virtual ~Device() = default;

  // Short name for logs and saved state, e.g. "uart16550@0x3f8".
  virtual std::string_view name() const = 0;

  // An access of data.size() bytes (1, 2, 4 or 8) at offset within the mapped range.
  // Registers a device does not implement read as all ones; writes to them are dropped.
  virtual void read(uint64_t offset, std::span<std::byte> data) = 0;
  virtual void write(uint64_t offset, std::span<const std::byte> data) = 0;
};

}  // namespace lamina::hw
