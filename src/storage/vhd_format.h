#pragma once
// VHD on-disk structures (Microsoft "Virtual Hard Disk Image Format Specification" v1.0):
// the 512-byte footer, the 1024-byte dynamic disk header with its parent locators, the CHS
// geometry algorithm, checksums, UUIDs and time stamps. Pure functions on byte spans: no file
// access, so the parser can be fuzzed and unit-tested on its own.
//
// Every multi-byte field is big-endian (spec: "all values are stored in network byte order").

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "base/error.h"

namespace lamina::storage::vhd {

inline constexpr size_t kFooterSize = 512;
inline constexpr size_t kDynamicHeaderSize = 1024;
inline constexpr uint32_t kFormatVersion = 0x00010000;
inline constexpr uint32_t kUnusedBatEntry = 0xffffffff;
inline constexpr uint64_t kFixedDataOffset = 0xffffffffffffffff;
inline constexpr uint32_t kDefaultBlockSize = 2 * 1024 * 1024;
inline constexpr uint32_t kMinBlockSize = 512;
inline constexpr uint32_t kMaxBlockSize = 256 * 1024 * 1024;
// Hyper-V's limit for VHD, the largest virtual size Lamina writes or accepts.
inline constexpr uint64_t kMaxVirtualSize = uint64_t{2040} << 30;
// Largest CHS the spec's algorithm produces (65535 cylinders, 16 heads, 255 sectors).
inline constexpr uint64_t kMaxChsSectors = uint64_t{65535} * 16 * 255;
// A BAT larger than this (256 MiB in memory) is refused rather than allocated.
inline constexpr uint32_t kMaxBatEntries = uint32_t{1} << 26;
// Seconds from the Unix epoch to the VHD epoch, 2000-01-01 00:00:00 UTC.
inline constexpr int64_t kVhdEpoch = 946684800;

enum class DiskType : uint32_t { kFixed = 2, kDynamic = 3, kDifferencing = 4 };

// Parent locator platform codes (spec, "Parent Locator Entry").
inline constexpr uint32_t kPlatformNone = 0;
inline constexpr uint32_t kPlatformW2ru = 0x57327275;  // relative Windows path, UTF-16LE
inline constexpr uint32_t kPlatformW2ku = 0x57326b75;  // absolute Windows path, UTF-16LE

using Uuid = std::array<uint8_t, 16>;

struct Geometry {
  uint16_t cylinders = 0;
  uint8_t heads = 0;
  uint8_t sectors_per_track = 0;
  uint64_t total_sectors() const {
    return uint64_t{cylinders} * heads * sectors_per_track;
  }
};

struct Footer {
  uint32_t features = 2;  // bit 1 "reserved" is always set (spec)
  uint32_t format_version = kFormatVersion;
  uint64_t data_offset = kFixedDataOffset;
  uint32_t time_stamp = 0;
  std::array<char, 4> creator_application{};
  uint32_t creator_version = 0;
  uint32_t creator_host_os = 0;
  uint64_t original_size = 0;
  uint64_t current_size = 0;
  Geometry geometry;
  DiskType disk_type = DiskType::kFixed;
  uint32_t checksum = 0;
  Uuid unique_id{};
  uint8_t saved_state = 0;
};

struct ParentLocator {
  uint32_t platform_code = kPlatformNone;
  uint32_t data_space = 0;   // spec says sectors; Hyper-V and VirtualBox store bytes
  uint32_t data_length = 0;  // bytes
  uint64_t data_offset = 0;  // absolute file offset
};

struct DynamicHeader {
  uint64_t data_offset = kFixedDataOffset;
  uint64_t table_offset = 0;
  uint32_t header_version = kFormatVersion;
  uint32_t max_table_entries = 0;
  uint32_t block_size = kDefaultBlockSize;
  uint32_t checksum = 0;
  Uuid parent_unique_id{};
  uint32_t parent_time_stamp = 0;
  std::u16string parent_unicode_name;  // stored UTF-16BE, 256 code units at most
  std::array<ParentLocator, 8> parent_locators{};
};

// Spec: "one's complement of the sum of all the bytes in the footer without the checksum".
uint32_t checksum(std::span<const std::byte> bytes, size_t checksum_offset);

// Parses a footer; rejects a wrong cookie, a wrong checksum or an unknown disk type.
Result<Footer> parse_footer(std::span<const std::byte> bytes);
// Writes the footer with a freshly computed checksum.
std::array<std::byte, kFooterSize> serialize_footer(const Footer& footer);

Result<DynamicHeader> parse_dynamic_header(std::span<const std::byte> bytes);
std::array<std::byte, kDynamicHeaderSize> serialize_dynamic_header(const DynamicHeader& header);

// True when bytes begin with the footer cookie "conectix".
bool has_footer_cookie(std::span<const std::byte> bytes);

// Spec appendix "CHS Calculation": the geometry for a size (saturates at kMaxChsSectors).
Geometry geometry_for_size(uint64_t size_bytes);

// Sector bitmap bytes preceding each block, padded to a 512-byte boundary (spec).
inline uint64_t bitmap_size(uint32_t block_size) {
  uint64_t bytes = (uint64_t{block_size} / 512 + 7) / 8;
  return (bytes + 511) / 512 * 512;
}

Uuid random_uuid();
std::string format_uuid(const Uuid& uuid);
uint32_t vhd_time_now();

std::string disk_type_name(DiskType type);

// UTF-16 <-> UTF-8 for parent names and locators (invalid sequences become U+FFFD).
std::string utf16_to_utf8(std::u16string_view text);
std::u16string utf8_to_utf16(std::string_view text);
std::u16string decode_utf16le(std::span<const std::byte> bytes);
std::string encode_utf16le(std::u16string_view text);

}  // namespace lamina::storage::vhd
