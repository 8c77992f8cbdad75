#include "storage/vhdx_format.h"

#include <fmt/format.h>
#include <cctype>
#include <cstring>
#include <random>

#include "base/byte_order.h"
#include "storage/crc32c.h"

namespace lamina::storage::vhdx {

namespace {

constexpr uint32_t kHeaderSignature = 0x64616568;               // "head"
constexpr uint32_t kRegionSignature = 0x69676572;               // "regi"
constexpr uint64_t kMetadataSignature = 0x617461646174656dull;  // "metadata"

// Checksum of a structure whose 4-byte checksum field at `field` counts as zero.
uint32_t checksum_without_field(std::span<const std::byte> bytes, size_t field) {
  std::array<std::byte, 4> zero{};
  uint32_t crc = crc32c(bytes.first(field));
  crc = crc32c(zero, crc);
  return crc32c(bytes.subspan(field + 4), crc);
}

}  // namespace

std::string Guid::to_string() const {
  return fmt::format("{{{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}}}",
                     load_le<uint32_t>(&bytes[0]), load_le<uint16_t>(&bytes[4]),
                     load_le<uint16_t>(&bytes[6]), static_cast<unsigned>(bytes[8]),
                     static_cast<unsigned>(bytes[9]), static_cast<unsigned>(bytes[10]),
                     static_cast<unsigned>(bytes[11]), static_cast<unsigned>(bytes[12]),
                     static_cast<unsigned>(bytes[13]), static_cast<unsigned>(bytes[14]),
                     static_cast<unsigned>(bytes[15]));
}

Guid random_guid() {
  std::random_device device;
  Guid guid;
  for (auto& value : guid.bytes) value = static_cast<std::byte>(device() & 0xff);
  // RFC 4122 version 4, variant 1.
  guid.bytes[7] = (guid.bytes[7] & std::byte{0x0f}) | std::byte{0x40};
  guid.bytes[8] = (guid.bytes[8] & std::byte{0x3f}) | std::byte{0x80};
  return guid;
}

Guid load_guid(const std::byte* source) {
  Guid guid;
  std::memcpy(guid.bytes.data(), source, 16);
  return guid;
}

void store_guid(std::byte* destination, const Guid& guid) {
  std::memcpy(destination, guid.bytes.data(), 16);
}

std::optional<Guid> parse_guid(std::string_view text) {
  if (text.size() == 38 && text.front() == '{' && text.back() == '}') text = text.substr(1, 36);
  if (text.size() != 36) return std::nullopt;
  std::string hex;
  for (size_t i = 0; i < text.size(); ++i) {
    bool dash_place = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash_place != (text[i] == '-')) return std::nullopt;
    if (!dash_place) {
      if (!std::isxdigit(static_cast<unsigned char>(text[i]))) return std::nullopt;
      hex += text[i];
    }
  }
  auto field = [&](size_t start, size_t length) {
    return std::stoull(hex.substr(start, length), nullptr, 16);
  };
  return make_guid(static_cast<uint32_t>(field(0, 8)), static_cast<uint16_t>(field(8, 4)),
                   static_cast<uint16_t>(field(12, 4)), field(16, 16));
}

std::optional<Header> decode_header(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderSize) return std::nullopt;
  bytes = bytes.first(kHeaderSize);
  if (load_le<uint32_t>(&bytes[0]) != kHeaderSignature) return std::nullopt;
  if (load_le<uint32_t>(&bytes[4]) != checksum_without_field(bytes, 4)) return std::nullopt;
  Header header;
  header.sequence_number = load_le<uint64_t>(&bytes[8]);
  header.file_write_guid = load_guid(&bytes[16]);
  header.data_write_guid = load_guid(&bytes[32]);
  header.log_guid = load_guid(&bytes[48]);
  header.log_version = load_le<uint16_t>(&bytes[64]);
  header.version = load_le<uint16_t>(&bytes[66]);
  header.log_length = load_le<uint32_t>(&bytes[68]);
  header.log_offset = load_le<uint64_t>(&bytes[72]);
  return header;
}

std::array<std::byte, kHeaderSize> encode_header(const Header& header) {
  std::array<std::byte, kHeaderSize> bytes{};
  store_le<uint32_t>(&bytes[0], kHeaderSignature);
  store_le<uint64_t>(&bytes[8], header.sequence_number);
  store_guid(&bytes[16], header.file_write_guid);
  store_guid(&bytes[32], header.data_write_guid);
  store_guid(&bytes[48], header.log_guid);
  store_le<uint16_t>(&bytes[64], header.log_version);
  store_le<uint16_t>(&bytes[66], header.version);
  store_le<uint32_t>(&bytes[68], header.log_length);
  store_le<uint64_t>(&bytes[72], header.log_offset);
  store_le<uint32_t>(&bytes[4], crc32c(bytes));
  return bytes;
}

std::optional<std::vector<RegionEntry>> decode_region_table(std::span<const std::byte> bytes) {
  if (bytes.size() < kRegionTableSize) return std::nullopt;
  bytes = bytes.first(kRegionTableSize);
  if (load_le<uint32_t>(&bytes[0]) != kRegionSignature) return std::nullopt;
  if (load_le<uint32_t>(&bytes[4]) != checksum_without_field(bytes, 4)) return std::nullopt;
  uint32_t count = load_le<uint32_t>(&bytes[8]);
  if (count > kMaxRegionEntries) return std::nullopt;
  std::vector<RegionEntry> entries(count);
  for (uint32_t index = 0; index < count; ++index) {
    const std::byte* entry = &bytes[16 + 32 * index];
    entries[index].guid = load_guid(entry);
    entries[index].file_offset = load_le<uint64_t>(entry + 16);
    entries[index].length = load_le<uint32_t>(entry + 24);
    entries[index].required = (load_le<uint32_t>(entry + 28) & 1) != 0;
  }
  return entries;
}

std::vector<std::byte> encode_region_table(std::span<const RegionEntry> entries) {
  std::vector<std::byte> bytes(kRegionTableSize);
  store_le<uint32_t>(&bytes[0], kRegionSignature);
  store_le<uint32_t>(&bytes[8], static_cast<uint32_t>(entries.size()));
  for (size_t index = 0; index < entries.size(); ++index) {
    std::byte* entry = &bytes[16 + 32 * index];
    store_guid(entry, entries[index].guid);
    store_le<uint64_t>(entry + 16, entries[index].file_offset);
    store_le<uint32_t>(entry + 24, entries[index].length);
    store_le<uint32_t>(entry + 28, entries[index].required ? 1u : 0u);
  }
  store_le<uint32_t>(&bytes[4], crc32c(bytes));
  return bytes;
}

Result<std::vector<MetadataEntry>> decode_metadata_table(std::span<const std::byte> bytes) {
  if (bytes.size() < kMetadataTableSize || load_le<uint64_t>(&bytes[0]) != kMetadataSignature) {
    return fail(ErrorCode::kCorrupt, "metadata table has no \"metadata\" signature");
  }
  uint16_t count = load_le<uint16_t>(&bytes[10]);
  if (count > kMaxMetadataEntries) {
    return fail(ErrorCode::kCorrupt,
                fmt::format("metadata table claims {} entries (at most 2047)", count));
  }
  std::vector<MetadataEntry> entries(count);
  for (uint16_t index = 0; index < count; ++index) {
    const std::byte* entry = &bytes[32 + 32 * index];
    entries[index].item = load_guid(entry);
    entries[index].offset = load_le<uint32_t>(entry + 16);
    entries[index].length = load_le<uint32_t>(entry + 20);
    uint32_t flags = load_le<uint32_t>(entry + 24);
    entries[index].is_user = (flags & 1) != 0;
    entries[index].is_virtual_disk = (flags & 2) != 0;
    entries[index].is_required = (flags & 4) != 0;
  }
  return entries;
}

std::vector<std::byte> encode_metadata_table(std::span<const MetadataEntry> entries) {
  std::vector<std::byte> bytes(kMetadataTableSize);
  store_le<uint64_t>(&bytes[0], kMetadataSignature);
  store_le<uint16_t>(&bytes[10], static_cast<uint16_t>(entries.size()));
  for (size_t index = 0; index < entries.size(); ++index) {
    std::byte* entry = &bytes[32 + 32 * index];
    store_guid(entry, entries[index].item);
    store_le<uint32_t>(entry + 16, entries[index].offset);
    store_le<uint32_t>(entry + 20, entries[index].length);
    uint32_t flags = (entries[index].is_user ? 1u : 0u) |
                     (entries[index].is_virtual_disk ? 2u : 0u) |
                     (entries[index].is_required ? 4u : 0u);
    store_le<uint32_t>(entry + 24, flags);
  }
  return bytes;
}

std::vector<std::byte> encode_file_identifier(std::string_view creator) {
  std::vector<std::byte> bytes(64 * kKiB);
  std::memcpy(bytes.data(), kFileSignature.data(), kFileSignature.size());
  for (size_t index = 0; index < creator.size() && index < 255; ++index) {
    store_le<uint16_t>(&bytes[8 + 2 * index],
                       static_cast<uint16_t>(static_cast<unsigned char>(creator[index])));
  }
  return bytes;
}

std::string utf16_to_narrow(std::span<const std::byte> bytes) {
  std::string text;
  for (size_t index = 0; index + 1 < bytes.size(); index += 2) {
    uint16_t unit = load_le<uint16_t>(&bytes[index]);
    text += unit < 0x80 ? static_cast<char>(unit) : '?';
  }
  return text;
}

}  // namespace lamina::storage::vhdx
