#include "machine/acpi/table.h"

#include "base/byte_order.h"

namespace lamina::machine::acpi {

uint8_t checksum_of(std::span<const std::byte> bytes) {
  uint8_t sum = 0;
  for (std::byte byte : bytes) sum = static_cast<uint8_t>(sum + static_cast<uint8_t>(byte));
  return sum;
}

uint8_t balancing_checksum(std::span<const std::byte> bytes) {
  return static_cast<uint8_t>(0x100 - checksum_of(bytes));
}

Table::Table(std::string_view signature, uint8_t revision) {
  text(signature, 4);
  u32(0);  // length, set by finish()
  u8(revision);
  u8(0);   // checksum, set by finish()
  text(kOemId, 6);
  text(kOemTableId, 8);
  u32(1);  // OEM revision
  text("LMNA", 4);  // creator ID
  u32(1);  // creator revision
}

void Table::u16(uint16_t value) {
  for (int i = 0; i < 2; ++i) u8(static_cast<uint8_t>(value >> (8 * i)));
}
void Table::u32(uint32_t value) {
  for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(value >> (8 * i)));
}
void Table::u64(uint64_t value) {
  for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(value >> (8 * i)));
}

void Table::text(std::string_view value, size_t width) {
  for (size_t i = 0; i < width; ++i) u8(i < value.size() ? static_cast<uint8_t>(value[i]) : 0);
}

void Table::append(std::span<const std::byte> more) {
  bytes_.insert(bytes_.end(), more.begin(), more.end());
}

void Table::gas(const GenericAddress& address) {
  u8(static_cast<uint8_t>(address.space));
  u8(address.bit_width);
  u8(address.bit_offset);
  u8(address.access_size);
  u64(address.address);
}

Bytes Table::finish() && {
  store_le<uint32_t>(bytes_.data() + 4, static_cast<uint32_t>(bytes_.size()));
  bytes_[9] = std::byte{0};
  bytes_[9] = std::byte{balancing_checksum(bytes_)};
  return std::move(bytes_);
}

}  // namespace lamina::machine::acpi
