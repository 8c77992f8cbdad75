// qcow2 and VMDK readers against images built from the specifications (no qemu-img needed),
// plus the shared helpers they use (CRC-32C, inflate, the VMDK descriptor parser).
#include <gtest/gtest.h>

#include <algorithm>

#include <cstring>
#include <string_view>

#include "base/byte_order.h"
#include "image_builders.h"
#include "image_test_support.h"
#include "storage/crc32c.h"
#include "storage/inflate.h"
#include "storage/qcow2_image.h"
#include "storage/vmdk_descriptor.h"
#include "storage/vmdk_image.h"

namespace lamina::storage {
namespace {

using testing::BuiltImage;
using testing::TempDir;

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

// Reads the whole device in pieces of `piece` bytes and compares with the expected content.
void expect_content(BlockDevice& device, const std::vector<std::byte>& expected, size_t piece) {
  ASSERT_EQ(device.size(), expected.size());
  std::vector<std::byte> actual(expected.size());
  for (size_t offset = 0; offset < expected.size(); offset += piece) {
    size_t count = std::min(piece, expected.size() - offset);
    auto result = device.read(offset, std::span(actual).subspan(offset, count));
    ASSERT_TRUE(result) << result.error().message();
  }
  auto mismatch = std::mismatch(actual.begin(), actual.end(), expected.begin());
  EXPECT_EQ(mismatch.first, actual.end())
      << "first difference at byte " << (mismatch.first - actual.begin());
}

TEST(Crc32c, MatchesTheCastagnoliCheckValue) {
  // The standard check value of CRC-32C over "123456789" (RFC 3720 appendix B.4 family).
  EXPECT_EQ(crc32c(bytes_of("123456789")), 0xE3069283u);
  EXPECT_EQ(crc32c(bytes_of("6789"), crc32c(bytes_of("12345"))), 0xE3069283u);
  EXPECT_EQ(crc32c({}), 0u);
}

TEST(Inflate, RejectsGarbageAndNeverOverrunsOutput) {
  std::vector<std::byte> output(64);
  auto garbage = bytes_of("this is not a deflate stream at all");
  EXPECT_FALSE(inflate_into(garbage, output, InflateFormat::kZlib));
  EXPECT_FALSE(inflate_into({}, output, InflateFormat::kRawDeflate));
}

TEST(Qcow2, ReadsBuiltImagesOfBothVersions) {
  TempDir dir;
  for (int version : {2, 3}) {
    SCOPED_TRACE(version);
    BuiltImage image = testing::build_qcow2(version);
    auto path = dir / "built.qcow2";
    testing::write_whole_file(path, image.file);
    auto device = open_qcow2(path);
    ASSERT_TRUE(device) << device.error().message();
    for (size_t piece : {512u, 4096u, 777u, 65536u})
      expect_content(**device, image.expected, piece);
    auto info = inspect_qcow2(path);
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->version, static_cast<uint32_t>(version));
    EXPECT_EQ(info->cluster_size, 512u);
    EXPECT_EQ(info->virtual_size, 65536u);
    EXPECT_FALSE(open_qcow2(path, false));
    std::vector<std::byte> buffer(512);
    EXPECT_FALSE((*device)->write(0, buffer));
    EXPECT_FALSE((*device)->read(65536 - 256, buffer)) << "a read past the end must fail";
  }
}

TEST(Qcow2, RejectsDamagedCompressedCluster) {
  TempDir dir;
  BuiltImage image = testing::build_qcow2(3);
  // Find the compressed L2 entry (cluster 10 of the first L2 table at 1024) and damage its data.
  uint64_t entry = load_be<uint64_t>(&image.file[1024 + 10 * 8]);
  uint64_t host = entry & ((1ull << 61) - 1);
  for (int index = 0; index < 40; ++index) image.file[host + index] ^= std::byte{0xa5};
  auto path = dir / "bad.qcow2";
  testing::write_whole_file(path, image.file);
  auto device = open_qcow2(path);
  ASSERT_TRUE(device) << device.error().message();
  std::vector<std::byte> buffer(512);
  auto result = (*device)->read(10 * 512, buffer);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
  EXPECT_TRUE((*device)->read(0, buffer));
}

TEST(Qcow2, NamesUnknownIncompatibleFeaturesFromTheFeatureTable) {
  TempDir dir;
  BuiltImage image = testing::build_qcow2(3);
  // A feature name table extension right after the 104-byte header: bit 5 is "fancy".
  store_be<uint32_t>(&image.file[104], 0x6803f857);
  store_be<uint32_t>(&image.file[108], 48);
  image.file[112] = std::byte{0};
  image.file[113] = std::byte{5};
  std::memcpy(&image.file[114], "fancy", 5);
  auto path = dir / "feature.qcow2";
  testing::write_whole_file(path, image.file);
  ASSERT_TRUE(open_qcow2(path)) << "the table alone changes nothing";
  store_be<uint64_t>(&image.file[72], 1ull << 5);
  testing::write_whole_file(path, image.file);
  auto device = open_qcow2(path);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(device.error().message().find("'fancy' (bit 5)"), std::string::npos)
      << device.error().message();
}

TEST(Vmdk, ReadsBuiltSparseAndStreamOptimizedImages) {
  TempDir dir;
  for (bool stream : {false, true}) {
    SCOPED_TRACE(stream);
    BuiltImage image = testing::build_vmdk_sparse(stream);
    auto path = dir / "self.vmdk";
    testing::write_whole_file(path, image.file);
    auto device = open_vmdk(path);
    ASSERT_TRUE(device) << device.error().message();
    for (size_t piece : {512u, 4096u, 1000u, 65536u})
      expect_content(**device, image.expected, piece);
    // The extent map tiles the disk, and what it calls zero reads as zeros.
    size_t zero_bytes = 0;
    for (uint64_t offset = 0; offset < (*device)->size();) {
      auto extent = (*device)->map_extent(offset, (*device)->size() - offset);
      ASSERT_TRUE(extent) << extent.error().message();
      ASSERT_GT(extent->length, 0u);
      if (extent->zero) {
        zero_bytes += extent->length;
        EXPECT_TRUE(std::all_of(image.expected.begin() + static_cast<std::ptrdiff_t>(offset),
                                image.expected.begin() +
                                    static_cast<std::ptrdiff_t>(offset + extent->length),
                                [](std::byte b) { return b == std::byte{0}; }))
            << "zero extent at " << offset;
      }
      offset += extent->length;
    }
    EXPECT_GT(zero_bytes, 0u) << "the built image leaves grains unallocated";
    auto info = inspect_vmdk(path);
    ASSERT_TRUE(info) << info.error().message();
    EXPECT_EQ(info->create_type, stream ? "streamOptimized" : "monolithicSparse");
    EXPECT_EQ(info->grain_size, 4096u);
    EXPECT_EQ(info->compressed, stream);
  }
}

TEST(Vmdk, StreamOptimizedGrainForTheWrongSectorIsCorrupt) {
  TempDir dir;
  BuiltImage image = testing::build_vmdk_sparse(true);
  // The first grain's marker sits at sector 8; claim it belongs elsewhere.
  store_le<uint64_t>(&image.file[8 * 512], 999);
  auto path = dir / "self.vmdk";
  testing::write_whole_file(path, image.file);
  auto device = open_vmdk(path);
  ASSERT_TRUE(device) << device.error().message();
  std::vector<std::byte> buffer(512);
  auto result = (*device)->read(0, buffer);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("self.vmdk"), std::string::npos);
}

TEST(VmdkDescriptor, ParsesExtentsAndSettings) {
  auto parsed = parse_vmdk_descriptor(
      "# Disk "
      "DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="
      "\"twoGbMaxExtentFlat\"\n\n"
      "# Extent description\nRW 4192256 FLAT \"disk name-f001.vmdk\" 0\nRDONLY 2048 FLAT "
      "\"b.vmdk\" 16\n"
      "RW 100 ZERO\nRW 64 SPARSE \"c.vmdk\"\n\n#DDB\nddb.virtualHWVersion = \"4\"\n",
      "d.vmdk");
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->create_type, "twoGbMaxExtentFlat");
  EXPECT_FALSE(parsed->has_parent);
  ASSERT_EQ(parsed->extents.size(), 4u);
  EXPECT_EQ(parsed->extents[0].file, "disk name-f001.vmdk");
  EXPECT_EQ(parsed->extents[0].sectors, 4192256u);
  EXPECT_FALSE(parsed->extents[1].writable);
  EXPECT_EQ(parsed->extents[1].offset_sectors, 16u);
  EXPECT_EQ(parsed->extents[2].type, VmdkExtentType::kZero);
  EXPECT_EQ(parsed->extents[3].type, VmdkExtentType::kSparse);
}

TEST(VmdkDescriptor, RejectsMalformedLines) {
  const char* bad[] = {
      "# Disk DescriptorFile\nRW x FLAT \"a\" 0\n",       // size not a number
      "# Disk DescriptorFile\nRW 10 FLAT a 0\n",          // unquoted name
      "# Disk DescriptorFile\nRW 10 FLAT \"a 0\n",        // unclosed quote
      "# Disk DescriptorFile\nRW 10 VMFSSPARSE \"a\"\n",  // unsupported type
      "# Disk DescriptorFile\nRW 0 FLAT \"a\" 0\n",       // empty extent
      "# Disk DescriptorFile\nthis line means nothing\n", "no header, no createType\n",
  };
  for (const char* text : bad) EXPECT_FALSE(parse_vmdk_descriptor(text, "d.vmdk")) << text;
}

}  // namespace
}  // namespace lamina::storage
