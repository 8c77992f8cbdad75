#pragma once
// The pieces every ACPI table shares: the 36-byte System Description Table Header (ACPI 6.5,
// section 5.2.6), the byte checksum, and the Generic Address Structure (section 5.2.3.2).
//
// Table is a growable byte buffer with little-endian appenders; finish() writes the length and
// checksum. Not thread-safe; one owner builds one table.

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

namespace lamina::machine::acpi {

using Bytes = std::vector<std::byte>;

inline constexpr size_t kTableHeaderSize = 36;
inline constexpr char kOemId[] = "LAMINA";        // 6 bytes
inline constexpr char kOemTableId[] = "LAMINAVM";  // 8 bytes

// Sum of all bytes modulo 256; a table is valid when the sum over it is 0.
uint8_t checksum_of(std::span<const std::byte> bytes);

// The value to store in a checksum field so the bytes sum to zero.
uint8_t balancing_checksum(std::span<const std::byte> bytes);

// Address spaces of the Generic Address Structure.
enum class AddressSpace : uint8_t { kSystemMemory = 0, kSystemIo = 1 };
// Access sizes: 1 byte, 2 word, 3 dword, 4 qword (0 undefined).
struct GenericAddress {
  AddressSpace space = AddressSpace::kSystemMemory;
  uint8_t bit_width = 0;
  uint8_t bit_offset = 0;
  uint8_t access_size = 0;
  uint64_t address = 0;
};

class Table {
 public:
  // Starts a table with the standard header: signature, revision, Lamina's OEM fields.
  Table(std::string_view signature, uint8_t revision);

  void u8(uint8_t value) { bytes_.push_back(std::byte{value}); }
  void u16(uint16_t value);
  void u32(uint32_t value);
  void u64(uint64_t value);
  void text(std::string_view value, size_t width);  // padded with NULs to width
  void append(std::span<const std::byte> more);
  void gas(const GenericAddress& address);
  size_t size() const { return bytes_.size(); }

  // Writes the length (offset 4) and the checksum (offset 9) and hands over the bytes.
  Bytes finish() &&;

 private:
  Bytes bytes_;
};

}  // namespace lamina::machine::acpi
