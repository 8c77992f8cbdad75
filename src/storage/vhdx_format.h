#pragma once
// VHDX on-disk structures (Microsoft "VHDX Format Specification" v1.00 / MS-VHDX): the file
// type identifier, the two headers, the region tables, the metadata table and its known
// items, BAT entries. Decoding checks signatures, CRC-32C checksums and field ranges; encoding
// produces the exact bytes (with checksums) for create and header updates.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"

namespace lamina::storage::vhdx {

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;

// Section 2.1: the header section is the first 1 MB; its parts sit at fixed offsets.
inline constexpr uint64_t kHeaderSectionSize = kMiB;
inline constexpr uint64_t kHeaderOffsets[2] = {64 * kKiB, 128 * kKiB};
inline constexpr uint64_t kHeaderSize = 4 * kKiB;
inline constexpr uint64_t kRegionTableOffsets[2] = {192 * kKiB, 256 * kKiB};
inline constexpr uint64_t kRegionTableSize = 64 * kKiB;
inline constexpr uint32_t kMaxRegionEntries = 2047;
inline constexpr uint32_t kMaxMetadataEntries = 2047;
inline constexpr uint64_t kMetadataTableSize = 64 * kKiB;
inline constexpr uint64_t kMaxMetadataItemSize = kMiB;
inline constexpr uint64_t kMaxVirtualSize = 64ull << 40;  // 2.6.2.2: at most 64 TB
inline constexpr uint64_t kMinBlockSize = kMiB;
inline constexpr uint64_t kMaxBlockSize = 256 * kMiB;
inline constexpr uint64_t kSectorBitmapBlockSize = kMiB;
inline constexpr uint64_t kLogSectorSize = 4 * kKiB;

// A GUID in its on-disk ("binary") form: Data1..Data3 little-endian, Data4 as bytes.
struct Guid {
  std::array<std::byte, 16> bytes{};
  bool operator==(const Guid&) const = default;
  bool is_zero() const { return *this == Guid{}; }
  // "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" in lowercase, as parent locators store it.
  std::string to_string() const;
};

// Builds a GUID from its text form's groups: 2DC27766-F623-4200-9D64-115E9BFD4A08 is
// make_guid(0x2DC27766, 0xF623, 0x4200, 0x9D64115E9BFD4A08).
constexpr Guid make_guid(uint32_t data1, uint16_t data2, uint16_t data3, uint64_t data4) {
  Guid guid;
  for (int i = 0; i < 4; ++i) guid.bytes[i] = static_cast<std::byte>(data1 >> (8 * i));
  for (int i = 0; i < 2; ++i) guid.bytes[4 + i] = static_cast<std::byte>(data2 >> (8 * i));
  for (int i = 0; i < 2; ++i) guid.bytes[6 + i] = static_cast<std::byte>(data3 >> (8 * i));
  for (int i = 0; i < 8; ++i) guid.bytes[8 + i] = static_cast<std::byte>(data4 >> (8 * (7 - i)));
  return guid;
}

Guid random_guid();
Guid load_guid(const std::byte* source);
void store_guid(std::byte* destination, const Guid& guid);
// Parses "{...}" or bare text GUIDs (case-insensitive); nullopt when malformed.
std::optional<Guid> parse_guid(std::string_view text);

// Section 2.2.3.2 known regions.
inline constexpr Guid kBatRegion = make_guid(0x2DC27766, 0xF623, 0x4200, 0x9D64115E9BFD4A08);
inline constexpr Guid kMetadataRegion = make_guid(0x8B7CA206, 0x4790, 0x4B9A, 0xB8FE575F050F886E);
// Section 2.6.2 known metadata items.
inline constexpr Guid kFileParametersItem =
    make_guid(0xCAA16737, 0xFA36, 0x4D43, 0xB3B633F0AA44E76B);
inline constexpr Guid kVirtualDiskSizeItem =
    make_guid(0x2FA54224, 0xCD1B, 0x4876, 0xB2115DBED83BF4B8);
inline constexpr Guid kVirtualDiskIdItem =
    make_guid(0xBECA12AB, 0xB2E6, 0x4523, 0x93EFC309E000C746);
inline constexpr Guid kLogicalSectorSizeItem =
    make_guid(0x8141BF1D, 0xA96F, 0x4709, 0xBA47F233A8FAAB5F);
inline constexpr Guid kPhysicalSectorSizeItem =
    make_guid(0xCDA348C7, 0x445D, 0x4471, 0x9CC9E9885251C556);
inline constexpr Guid kParentLocatorItem =
    make_guid(0xA8D35F2D, 0xB30B, 0x454D, 0xABF7D3D84834AB0C);
inline constexpr Guid kVhdxParentLocatorType =
    make_guid(0xB04AEFB7, 0xD19E, 0x4A81, 0xB78925B8E9445913);

// Section 2.2.2.
struct Header {
  uint64_t sequence_number = 0;
  Guid file_write_guid;
  Guid data_write_guid;
  Guid log_guid;
  uint16_t log_version = 0;
  uint16_t version = 1;
  uint32_t log_length = 0;
  uint64_t log_offset = 0;
};

// Decodes a 4 KB header; nullopt when the signature or checksum is wrong (the other copy
// may still be good, section 2.2.2.1).
std::optional<Header> decode_header(std::span<const std::byte> bytes);
std::array<std::byte, kHeaderSize> encode_header(const Header& header);

struct RegionEntry {
  Guid guid;
  uint64_t file_offset = 0;
  uint32_t length = 0;
  bool required = false;
};

// Decodes a 64 KB region table; nullopt on a bad signature, checksum or entry count.
std::optional<std::vector<RegionEntry>> decode_region_table(std::span<const std::byte> bytes);
std::vector<std::byte> encode_region_table(std::span<const RegionEntry> entries);

struct MetadataEntry {
  Guid item;
  uint32_t offset = 0;  // relative to the metadata region
  uint32_t length = 0;
  bool is_user = false;
  bool is_virtual_disk = false;
  bool is_required = false;
};

// Decodes the metadata table (the region's first 64 KB); the error names what is wrong.
Result<std::vector<MetadataEntry>> decode_metadata_table(std::span<const std::byte> bytes);
std::vector<std::byte> encode_metadata_table(std::span<const MetadataEntry> entries);

// Section 2.5.1: a BAT entry is a 3-bit state and a 44-bit offset in MB.
enum class BlockState : uint8_t {
  kNotPresent = 0,
  kUndefined = 1,
  kZero = 2,
  kUnmapped = 3,
  kFullyPresent = 6,
  kPartiallyPresent = 7,
};
inline BlockState bat_state(uint64_t entry) { return static_cast<BlockState>(entry & 7); }
inline uint64_t bat_file_offset(uint64_t entry) { return (entry >> 20) * kMiB; }
inline uint64_t make_bat_entry(BlockState state, uint64_t file_offset) {
  return static_cast<uint64_t>(state) | ((file_offset / kMiB) << 20);
}

// Section 2.2.1: "vhdxfile" then the creator as UTF-16LE.
inline constexpr std::string_view kFileSignature = "vhdxfile";
std::vector<std::byte> encode_file_identifier(std::string_view creator);

// Decodes UTF-16LE (parent locator strings); characters outside ASCII become '?'.
std::string utf16_to_narrow(std::span<const std::byte> bytes);

}  // namespace lamina::storage::vhdx
