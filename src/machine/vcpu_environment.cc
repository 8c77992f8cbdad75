#include "machine/vcpu_environment.h"

#include <array>
#include <span>

#include "base/byte_order.h"

namespace lamina::machine {
namespace {

constexpr uint64_t kPageSize = 0x1000;

// The CPU core promises sizes of 1, 2, 4 (and 8 for MMIO); anything larger is clamped so the
// buffer below can never be overrun.
size_t clamp_size(uint8_t size) { return size > 8 ? 8 : (size == 0 ? 1 : size); }

}  // namespace

uint32_t VcpuEnvironment::io_read(uint16_t port, uint8_t size) {
  std::array<std::byte, 8> buffer{};
  const std::span<std::byte> data(buffer.data(), clamp_size(size) > 4 ? 4 : clamp_size(size));
  io_.read(port, data);
  return static_cast<uint32_t>(load_le_sized(data));
}

void VcpuEnvironment::io_write(uint16_t port, uint8_t size, uint32_t value) {
  std::array<std::byte, 8> buffer{};
  const std::span<std::byte> data(buffer.data(), clamp_size(size) > 4 ? 4 : clamp_size(size));
  store_le_sized(data, value);
  io_.write(port, data);
}

std::optional<uint64_t> VcpuEnvironment::apic_offset(uint64_t physical, uint8_t size) const {
  const std::optional<uint64_t> page = apic_.mmio_page();
  if (!page || physical < *page || physical - *page + size > kPageSize) return std::nullopt;
  return physical - *page;
}

uint64_t VcpuEnvironment::mmio_read(uint64_t physical, uint8_t size) {
  std::array<std::byte, 8> buffer{};
  const std::span<std::byte> data(buffer.data(), clamp_size(size));
  if (auto offset = apic_offset(physical, size)) {
    apic_.read(*offset, data);
  } else {
    mmio_.read(physical, data);
  }
  return load_le_sized(data);
}

void VcpuEnvironment::mmio_write(uint64_t physical, uint8_t size, uint64_t value) {
  std::array<std::byte, 8> buffer{};
  const std::span<std::byte> data(buffer.data(), clamp_size(size));
  store_le_sized(data, value);
  if (auto offset = apic_offset(physical, size)) {
    apic_.write(*offset, data);
  } else {
    mmio_.write(physical, data);
  }
}

}  // namespace lamina::machine
