// The VHD structures on their own: checksums, round trips, corrupt fields, the CHS algorithm.

#include "storage/vhd_format.h"

#include <gtest/gtest.h>

#include <cstring>

namespace lamina::storage::vhd {
namespace {

TEST(VhdFormat, FooterRoundTripsAndKeepsEveryField) {
  Footer footer;
  footer.data_offset = 512;
  footer.time_stamp = 12345;
  footer.creator_application = {'t', 'e', 's', 't'};
  footer.creator_version = 0x00050003;
  footer.creator_host_os = 0x5769326b;
  footer.original_size = 1 << 20;
  footer.current_size = 2 << 20;
  footer.geometry = {100, 4, 17};
  footer.disk_type = DiskType::kDynamic;
  footer.unique_id = random_uuid();
  auto bytes = serialize_footer(footer);
  auto parsed = parse_footer(bytes);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->data_offset, 512u);
  EXPECT_EQ(parsed->time_stamp, 12345u);
  EXPECT_EQ(parsed->creator_application, footer.creator_application);
  EXPECT_EQ(parsed->current_size, 2u << 20);
  EXPECT_EQ(parsed->original_size, 1u << 20);
  EXPECT_EQ(parsed->geometry.cylinders, 100);
  EXPECT_EQ(parsed->disk_type, DiskType::kDynamic);
  EXPECT_EQ(parsed->unique_id, footer.unique_id);
}

TEST(VhdFormat, FooterFieldsAreBigEndianAtSpecOffsets) {
  Footer footer;
  footer.current_size = 0x0102030405060708ull;
  footer.disk_type = DiskType::kFixed;
  auto bytes = serialize_footer(footer);
  EXPECT_EQ(std::memcmp(bytes.data(), "conectix", 8), 0);
  EXPECT_EQ(bytes[48], std::byte{0x01});  // current size, most significant byte first
  EXPECT_EQ(bytes[55], std::byte{0x08});
  EXPECT_EQ(bytes[63], std::byte{0x02});  // disk type 2 = fixed
  // Spec: checksum = one's complement of the byte sum without the checksum field.
  uint32_t sum = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i < 64 || i >= 68) sum += static_cast<uint8_t>(bytes[i]);
  }
  uint32_t stored = (uint32_t{static_cast<uint8_t>(bytes[64])} << 24) |
                    (uint32_t{static_cast<uint8_t>(bytes[65])} << 16) |
                    (uint32_t{static_cast<uint8_t>(bytes[66])} << 8) | static_cast<uint8_t>(bytes[67]);
  EXPECT_EQ(stored, ~sum);
}

TEST(VhdFormat, WrongChecksumCookieOrTypeIsRefused) {
  Footer footer;
  auto bytes = serialize_footer(footer);
  auto damaged = bytes;
  damaged[100] = std::byte{1};
  auto result = parse_footer(damaged);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("checksum"), std::string::npos);
  damaged = bytes;
  damaged[0] = std::byte{'X'};
  EXPECT_FALSE(parse_footer(damaged));
  footer.disk_type = static_cast<DiskType>(7);
  EXPECT_FALSE(parse_footer(serialize_footer(footer)));
  EXPECT_FALSE(parse_footer(std::span(bytes).first(100)));
}

TEST(VhdFormat, DynamicHeaderRoundTripsWithParentNameAndLocators) {
  DynamicHeader header;
  header.table_offset = 1536;
  header.max_table_entries = 50;
  header.block_size = 512 * 1024;
  header.parent_unique_id = random_uuid();
  header.parent_time_stamp = 77;
  header.parent_unicode_name = u"b\u00e4se.vhd";
  header.parent_locators[0] = {kPlatformW2ru, 512, 20, 4096};
  auto bytes = serialize_dynamic_header(header);
  // Spec: the parent name is UTF-16 big-endian: 'b' is 0x00 0x62 at offset 64.
  EXPECT_EQ(bytes[64], std::byte{0});
  EXPECT_EQ(bytes[65], std::byte{'b'});
  auto parsed = parse_dynamic_header(bytes);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->parent_unicode_name, header.parent_unicode_name);
  EXPECT_EQ(parsed->parent_locators[0].platform_code, kPlatformW2ru);
  EXPECT_EQ(parsed->parent_locators[0].data_offset, 4096u);
  EXPECT_EQ(parsed->block_size, 512u * 1024);
  EXPECT_EQ(parsed->parent_unique_id, header.parent_unique_id);
}

TEST(VhdFormat, BlockSizeMustBeAPowerOfTwo) {
  DynamicHeader header;
  header.block_size = 3 * 1024 * 1024;
  auto result = parse_dynamic_header(serialize_dynamic_header(header));
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("power of two"), std::string::npos);
  header.block_size = 256;
  EXPECT_FALSE(parse_dynamic_header(serialize_dynamic_header(header)));
}

TEST(VhdFormat, GeometryFollowsTheSpecAppendix) {
  // Worked by hand from the appendix: 2 GiB = 4194304 sectors falls through 17 and 31 sectors
  // per track to 63, 16 heads, 4194304 / 63 / 16 = 4161 cylinders.
  Geometry two_gib = geometry_for_size(uint64_t{2} << 30);
  EXPECT_EQ(two_gib.cylinders, 4161);
  EXPECT_EQ(two_gib.heads, 16);
  EXPECT_EQ(two_gib.sectors_per_track, 63);
  // 100 MiB = 204800 sectors: 17 sectors, 204800 / 17 = 12047, heads ceil(12047/1024) = 12.
  Geometry small = geometry_for_size(100 << 20);
  EXPECT_EQ(small.sectors_per_track, 17);
  EXPECT_EQ(small.heads, 12);
  EXPECT_EQ(small.cylinders, 1003);
  // At or past 65535 * 16 * 255 sectors the geometry saturates.
  Geometry huge = geometry_for_size(kMaxVirtualSize);
  EXPECT_EQ(huge.cylinders, 65535);
  EXPECT_EQ(huge.heads, 16);
  EXPECT_EQ(huge.sectors_per_track, 255);
}

TEST(VhdFormat, BitmapIsPaddedToWholeSectors) {
  EXPECT_EQ(bitmap_size(2 << 20), 512u);   // 4096 sectors -> 512 bytes
  EXPECT_EQ(bitmap_size(512 << 10), 512u);  // 1024 sectors -> 128 bytes, padded
  EXPECT_EQ(bitmap_size(16 << 20), 4096u);  // 32768 sectors -> 4096 bytes
}

TEST(VhdFormat, Utf16ConversionsRoundTrip) {
  std::string text = "C:\\VMs\\b\u00e4se \xf0\x9f\x92\xbe.vhd";
  EXPECT_EQ(utf16_to_utf8(utf8_to_utf16(text)), text);
  std::string le = encode_utf16le(u"ab");
  ASSERT_EQ(le.size(), 4u);
  EXPECT_EQ(le[0], 'a');
  EXPECT_EQ(le[1], '\0');
}

}  // namespace
}  // namespace lamina::storage::vhd
