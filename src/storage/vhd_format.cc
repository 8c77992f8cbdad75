#include "storage/vhd_format.h"

#include <cstring>
#include <ctime>
#include <fmt/format.h>
#include <random>

#include "base/byte_order.h"

namespace lamina::storage::vhd {

namespace {

constexpr std::string_view kFooterCookie = "conectix";
constexpr std::string_view kHeaderCookie = "cxsparse";
// Field offsets in the footer (spec, "Hard Disk Footer Format").
constexpr size_t kFooterChecksumOffset = 64;
// Field offsets in the dynamic disk header (spec, "Dynamic Disk Header Format").
constexpr size_t kHeaderChecksumOffset = 36;
constexpr size_t kParentNameOffset = 64;
constexpr size_t kParentNameUnits = 256;
constexpr size_t kLocatorOffset = 576;
constexpr size_t kLocatorSize = 24;

bool cookie_matches(std::span<const std::byte> bytes, std::string_view cookie) {
  return bytes.size() >= cookie.size() && std::memcmp(bytes.data(), cookie.data(), cookie.size()) == 0;
}

}  // namespace

uint32_t checksum(std::span<const std::byte> bytes, size_t checksum_offset) {
  uint32_t sum = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i >= checksum_offset && i < checksum_offset + 4) continue;
    sum += static_cast<uint8_t>(bytes[i]);
  }
  return ~sum;
}

bool has_footer_cookie(std::span<const std::byte> bytes) {
  return cookie_matches(bytes, kFooterCookie);
}

Result<Footer> parse_footer(std::span<const std::byte> bytes) {
  if (bytes.size() < kFooterSize) {
    return fail(ErrorCode::kCorrupt, "VHD footer is shorter than 512 bytes");
  }
  if (!cookie_matches(bytes, kFooterCookie)) {
    return fail(ErrorCode::kCorrupt, "no VHD footer (cookie \"conectix\" missing)");
  }
  const std::byte* p = bytes.data();
  Footer footer;
  footer.features = load_be<uint32_t>(p + 8);
  footer.format_version = load_be<uint32_t>(p + 12);
  footer.data_offset = load_be<uint64_t>(p + 16);
  footer.time_stamp = load_be<uint32_t>(p + 24);
  std::memcpy(footer.creator_application.data(), p + 28, 4);
  footer.creator_version = load_be<uint32_t>(p + 32);
  footer.creator_host_os = load_be<uint32_t>(p + 36);
  footer.original_size = load_be<uint64_t>(p + 40);
  footer.current_size = load_be<uint64_t>(p + 48);
  footer.geometry.cylinders = load_be<uint16_t>(p + 56);
  footer.geometry.heads = static_cast<uint8_t>(p[58]);
  footer.geometry.sectors_per_track = static_cast<uint8_t>(p[59]);
  uint32_t type = load_be<uint32_t>(p + 60);
  footer.checksum = load_be<uint32_t>(p + 64);
  std::memcpy(footer.unique_id.data(), p + 68, 16);
  footer.saved_state = static_cast<uint8_t>(p[84]);

  uint32_t expected = checksum(bytes.first(kFooterSize), kFooterChecksumOffset);
  if (expected != footer.checksum) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("VHD footer checksum is wrong (stored {:#010x}, computed {:#010x})",
                            footer.checksum, expected));
  }
  if (type != 2 && type != 3 && type != 4) {
    return fail(ErrorCode::kUnsupported, fmt::format("VHD disk type {} is not fixed (2), "
                                                     "dynamic (3) or differencing (4)", type));
  }
  footer.disk_type = static_cast<DiskType>(type);
  if ((footer.format_version >> 16) != 1) {
    return fail(ErrorCode::kUnsupported,
                fmt::format("VHD format version {:#010x} is not 1.x", footer.format_version));
  }
  return footer;
}

std::array<std::byte, kFooterSize> serialize_footer(const Footer& footer) {
  std::array<std::byte, kFooterSize> bytes{};
  std::byte* p = bytes.data();
  std::memcpy(p, kFooterCookie.data(), 8);
  store_be<uint32_t>(p + 8, footer.features);
  store_be<uint32_t>(p + 12, footer.format_version);
  store_be<uint64_t>(p + 16, footer.data_offset);
  store_be<uint32_t>(p + 24, footer.time_stamp);
  std::memcpy(p + 28, footer.creator_application.data(), 4);
  store_be<uint32_t>(p + 32, footer.creator_version);
  store_be<uint32_t>(p + 36, footer.creator_host_os);
  store_be<uint64_t>(p + 40, footer.original_size);
  store_be<uint64_t>(p + 48, footer.current_size);
  store_be<uint16_t>(p + 56, footer.geometry.cylinders);
  p[58] = std::byte{footer.geometry.heads};
  p[59] = std::byte{footer.geometry.sectors_per_track};
  store_be<uint32_t>(p + 60, static_cast<uint32_t>(footer.disk_type));
  std::memcpy(p + 68, footer.unique_id.data(), 16);
  p[84] = std::byte{footer.saved_state};
  store_be<uint32_t>(p + 64, checksum(bytes, kFooterChecksumOffset));
  return bytes;
}

Result<DynamicHeader> parse_dynamic_header(std::span<const std::byte> bytes) {
  if (bytes.size() < kDynamicHeaderSize) {
    return fail(ErrorCode::kCorrupt, "VHD dynamic header is shorter than 1024 bytes");
  }
  if (!cookie_matches(bytes, kHeaderCookie)) {
    return fail(ErrorCode::kCorrupt, "no VHD dynamic header (cookie \"cxsparse\" missing)");
  }
  const std::byte* p = bytes.data();
  DynamicHeader header;
  header.data_offset = load_be<uint64_t>(p + 8);
  header.table_offset = load_be<uint64_t>(p + 16);
  header.header_version = load_be<uint32_t>(p + 24);
  header.max_table_entries = load_be<uint32_t>(p + 28);
  header.block_size = load_be<uint32_t>(p + 32);
  header.checksum = load_be<uint32_t>(p + 36);
  std::memcpy(header.parent_unique_id.data(), p + 40, 16);
  header.parent_time_stamp = load_be<uint32_t>(p + 56);
  for (size_t i = 0; i < kParentNameUnits; ++i) {
    auto unit = static_cast<char16_t>(load_be<uint16_t>(p + kParentNameOffset + 2 * i));
    if (unit == 0) break;
    header.parent_unicode_name.push_back(unit);
  }
  for (size_t i = 0; i < header.parent_locators.size(); ++i) {
    const std::byte* entry = p + kLocatorOffset + i * kLocatorSize;
    ParentLocator& locator = header.parent_locators[i];
    locator.platform_code = load_be<uint32_t>(entry);
    locator.data_space = load_be<uint32_t>(entry + 4);
    locator.data_length = load_be<uint32_t>(entry + 8);
    locator.data_offset = load_be<uint64_t>(entry + 16);
  }
  uint32_t expected = checksum(bytes.first(kDynamicHeaderSize), kHeaderChecksumOffset);
  if (expected != header.checksum) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("VHD dynamic header checksum is wrong (stored {:#010x}, computed "
                            "{:#010x})", header.checksum, expected));
  }
  if ((header.header_version >> 16) != 1) {
    return fail(ErrorCode::kUnsupported, fmt::format("VHD dynamic header version {:#010x} is "
                                                     "not 1.x", header.header_version));
  }
  // Spec: the block size is a power of two multiple of the sector size; 2 MiB by default.
  if (header.block_size < kMinBlockSize || header.block_size > kMaxBlockSize ||
      (header.block_size & (header.block_size - 1)) != 0) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("VHD block size {} is not a power of two between 512 bytes and "
                            "256 MiB", header.block_size));
  }
  return header;
}

std::array<std::byte, kDynamicHeaderSize> serialize_dynamic_header(const DynamicHeader& header) {
  std::array<std::byte, kDynamicHeaderSize> bytes{};
  std::byte* p = bytes.data();
  std::memcpy(p, kHeaderCookie.data(), 8);
  store_be<uint64_t>(p + 8, header.data_offset);
  store_be<uint64_t>(p + 16, header.table_offset);
  store_be<uint32_t>(p + 24, header.header_version);
  store_be<uint32_t>(p + 28, header.max_table_entries);
  store_be<uint32_t>(p + 32, header.block_size);
  std::memcpy(p + 40, header.parent_unique_id.data(), 16);
  store_be<uint32_t>(p + 56, header.parent_time_stamp);
  for (size_t i = 0; i < header.parent_unicode_name.size() && i < kParentNameUnits; ++i) {
    store_be<uint16_t>(p + kParentNameOffset + 2 * i,
                       static_cast<uint16_t>(header.parent_unicode_name[i]));
  }
  for (size_t i = 0; i < header.parent_locators.size(); ++i) {
    std::byte* entry = p + kLocatorOffset + i * kLocatorSize;
    const ParentLocator& locator = header.parent_locators[i];
    store_be<uint32_t>(entry, locator.platform_code);
    store_be<uint32_t>(entry + 4, locator.data_space);
    store_be<uint32_t>(entry + 8, locator.data_length);
    store_be<uint64_t>(entry + 16, locator.data_offset);
  }
  store_be<uint32_t>(p + 36, checksum(bytes, kHeaderChecksumOffset));
  return bytes;
}

Geometry geometry_for_size(uint64_t size_bytes) {
  // Spec appendix "CHS Calculation", step by step.
  uint64_t total_sectors = size_bytes / 512;
  if (total_sectors > kMaxChsSectors) total_sectors = kMaxChsSectors;
  uint64_t sectors_per_track;
  uint64_t heads;
  uint64_t cylinder_times_heads;
  if (total_sectors >= uint64_t{65535} * 16 * 63) {
    sectors_per_track = 255;
    heads = 16;
    cylinder_times_heads = total_sectors / sectors_per_track;
  } else {
    sectors_per_track = 17;
    cylinder_times_heads = total_sectors / sectors_per_track;
    heads = (cylinder_times_heads + 1023) / 1024;
    if (heads < 4) heads = 4;
    if (cylinder_times_heads >= heads * 1024 || heads > 16) {
      sectors_per_track = 31;
      heads = 16;
      cylinder_times_heads = total_sectors / sectors_per_track;
    }
    if (cylinder_times_heads >= heads * 1024) {
      sectors_per_track = 63;
      heads = 16;
      cylinder_times_heads = total_sectors / sectors_per_track;
    }
  }
  Geometry geometry;
  geometry.cylinders = static_cast<uint16_t>(cylinder_times_heads / heads);
  geometry.heads = static_cast<uint8_t>(heads);
  geometry.sectors_per_track = static_cast<uint8_t>(sectors_per_track);
  return geometry;
}

Uuid random_uuid() {
  std::random_device device;
  Uuid uuid;
  for (size_t i = 0; i < uuid.size(); i += 4) {
    uint32_t word = device();
    std::memcpy(uuid.data() + i, &word, 4);
  }
  // RFC 4122 version 4 (random), variant 1.
  uuid[6] = static_cast<uint8_t>((uuid[6] & 0x0f) | 0x40);
  uuid[8] = static_cast<uint8_t>((uuid[8] & 0x3f) | 0x80);
  return uuid;
}

std::string format_uuid(const Uuid& u) {
  return fmt::format(
      "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}"
      "{:02x}{:02x}",
      u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
      u[14], u[15]);
}

uint32_t vhd_time_now() {
  int64_t now = static_cast<int64_t>(std::time(nullptr));
  return now > kVhdEpoch ? static_cast<uint32_t>(now - kVhdEpoch) : 0;
}

std::string disk_type_name(DiskType type) {
  switch (type) {
    case DiskType::kFixed: return "fixed";
    case DiskType::kDynamic: return "dynamic";
    case DiskType::kDifferencing: return "differencing";
  }
  return "unknown";
}

std::string utf16_to_utf8(std::u16string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    uint32_t code = text[i];
    if (code >= 0xd800 && code < 0xdc00 && i + 1 < text.size() && text[i + 1] >= 0xdc00 &&
        text[i + 1] < 0xe000) {
      code = 0x10000 + ((code - 0xd800) << 10) + (text[i + 1] - 0xdc00);
      ++i;
    } else if (code >= 0xd800 && code < 0xe000) {
      code = 0xfffd;
    }
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xc0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xe0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (code & 0x3f));
    }
  }
  return out;
}

std::u16string utf8_to_utf16(std::string_view text) {
  std::u16string out;
  size_t i = 0;
  while (i < text.size()) {
    auto byte = static_cast<uint8_t>(text[i]);
    uint32_t code = 0xfffd;
    size_t length = 1;
    if (byte < 0x80) {
      code = byte;
    } else if ((byte >> 5) == 0x6) {
      length = 2;
    } else if ((byte >> 4) == 0xe) {
      length = 3;
    } else if ((byte >> 3) == 0x1e) {
      length = 4;
    }
    if (length > 1) {
      if (i + length > text.size()) {
        length = 1;
      } else {
        code = byte & (0x7f >> length);
        for (size_t k = 1; k < length; ++k) {
          code = (code << 6) | (static_cast<uint8_t>(text[i + k]) & 0x3f);
        }
      }
    }
    i += length;
    if (code >= 0x10000) {
      code -= 0x10000;
      out += static_cast<char16_t>(0xd800 + (code >> 10));
      out += static_cast<char16_t>(0xdc00 + (code & 0x3ff));
    } else {
      out += static_cast<char16_t>(code);
    }
  }
  return out;
}

std::u16string decode_utf16le(std::span<const std::byte> bytes) {
  std::u16string out;
  for (size_t i = 0; i + 1 < bytes.size(); i += 2) {
    auto unit = static_cast<char16_t>(load_le<uint16_t>(bytes.data() + i));
    if (unit == 0) break;
    out += unit;
  }
  return out;
}

std::string encode_utf16le(std::u16string_view text) {
  std::string out(text.size() * 2, '\0');
  for (size_t i = 0; i < text.size(); ++i) store_le<uint16_t>(out.data() + 2 * i, text[i]);
  return out;
}

}  // namespace lamina::storage::vhd
