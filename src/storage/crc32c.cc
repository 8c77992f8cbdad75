#include "storage/crc32c.h"

#include <array>

namespace lamina::storage {

namespace {

// Reflected form of the Castagnoli polynomial 0x1EDC6F41.
constexpr uint32_t kReflectedPolynomial = 0x82F63B78u;

constexpr std::array<uint32_t, 256> make_table() {
  std::array<uint32_t, 256> table{};
  for (uint32_t index = 0; index < 256; ++index) {
    uint32_t value = index;
    for (int bit = 0; bit < 8; ++bit) {
      value = (value & 1u) ? (value >> 1) ^ kReflectedPolynomial : value >> 1;
    }
    table[index] = value;
  }
  return table;
}

constexpr std::array<uint32_t, 256> kTable = make_table();

}  // namespace

uint32_t crc32c(std::span<const std::byte> data, uint32_t previous) {
  uint32_t crc = ~previous;
  for (std::byte value : data) {
    crc = kTable[(crc ^ static_cast<uint32_t>(value)) & 0xffu] ^ (crc >> 8);
  }
  return ~crc;
}

}  // namespace lamina::storage
