#pragma once
// TableLoader: the command file ("etc/table-loader") through which firmware links tables that
// the host hands over as fw_cfg files (SeaBIOS src/fw/romfile_loader.h; OVMF's QemuLoader.h
// documents the same interface): ALLOCATE a file's blob in a memory zone, ADD_POINTER (add
// the address where one blob landed to a little-endian pointer field inside another), and
// ADD_CHECKSUM (subtract a range's byte sum from a checksum byte). Each command is 128 bytes,
// little-endian, file names NUL-padded to 56 bytes. The firmware runs the commands in order,
// so pointers are added before the checksums over them.
//
// A plain value built on one thread.

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace lamina::machine {

namespace table_loader {
inline constexpr size_t kCommandSize = 128;
inline constexpr size_t kFileNameSize = 56;
inline constexpr uint32_t kAllocate = 1;
inline constexpr uint32_t kAddPointer = 2;
inline constexpr uint32_t kAddChecksum = 3;
// Allocation zones: anywhere in RAM, or the 0xF0000 segment (where an RSDP must be found).
inline constexpr uint8_t kZoneHigh = 1;
inline constexpr uint8_t kZoneFseg = 2;
}  // namespace table_loader

class TableLoader {
 public:
  // Each fails with kInvalidArgument for a name that does not fit 55 bytes plus NUL or a
  // pointer size other than 1, 2, 4 or 8.
  [[nodiscard]] Result<void> allocate(std::string_view file, uint32_t alignment, uint8_t zone);
  [[nodiscard]] Result<void> add_pointer(std::string_view destination_file,
                                         std::string_view source_file, uint32_t offset,
                                         uint8_t size);
  [[nodiscard]] Result<void> add_checksum(std::string_view file, uint32_t checksum_offset,
                                          uint32_t start, uint32_t length);

  const std::vector<std::byte>& bytes() const { return bytes_; }

 private:
  std::byte* append_command(uint32_t command);

  std::vector<std::byte> bytes_;
};

}  // namespace lamina::machine
