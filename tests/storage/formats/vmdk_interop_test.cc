// VMDK images of every hosted subformat made by qemu-img read back by Lamina byte for byte,
// and damaged ones rejected cleanly.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "image_test_support.h"
#include "storage/vmdk_image.h"

namespace lamina::storage {
namespace {

using testing::Region;
using testing::TempDir;

constexpr uint64_t kSize = 8u << 20;
const std::vector<Region> kRegions = {
    {0, 4096}, {65536 - 700, 3000}, {1u << 20, 300000}, {5u << 20, 1}, {kSize - 70000, 70000}};

class VmdkInterop : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
  }
  std::filesystem::path convert(const std::filesystem::path& truth, const std::string& subformat) {
    auto out = dir_ / (subformat + ".vmdk");
    EXPECT_EQ(
        testing::run_command(fmt::format("qemu-img convert -f raw -O vmdk -o subformat={} {} {}",
                                         subformat, truth.string(), out.string())),
        0);
    return out;
  }

  TempDir dir_;
};

TEST_P(VmdkInterop, ReadsEverySubformat) {
  auto truth = dir_ / "truth.raw";
  testing::write_pattern_file(truth, kSize, kRegions, 7);
  auto image = convert(truth, GetParam());
  auto device = open_vmdk(image);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ((*device)->size(), kSize);
  EXPECT_EQ(testing::compare_with_truth(**device, truth, 0, kSize, 65536 + 511), "");
  auto info = inspect_vmdk(image);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->create_type, GetParam());
  EXPECT_EQ(info->virtual_size, kSize);
  EXPECT_EQ(info->compressed, std::string_view(GetParam()) == "streamOptimized");
}

// Beyond 2 GiB the twoGbMaxExtent formats split into several extent files.
TEST_P(VmdkInterop, ReadsAcrossExtentBoundaries) {
  constexpr uint64_t kLarge = (5ull << 30) + (1u << 20);
  constexpr uint64_t kTwoGiB = 2ull << 30;
  auto truth = dir_ / "large.raw";
  testing::write_pattern_file(
      truth, kLarge,
      {{kTwoGiB - 100000, 250000}, {2 * kTwoGiB - 4096, 8192}, {kLarge - 4096, 4096}}, 11);
  auto image = convert(truth, GetParam());
  auto device = open_vmdk(image);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ((*device)->size(), kLarge);
  EXPECT_EQ(testing::compare_with_truth(**device, truth, kTwoGiB - (1u << 20), 2u << 20, 100000),
            "");
  EXPECT_EQ(
      testing::compare_with_truth(**device, truth, 2 * kTwoGiB - (1u << 20), 2u << 20, 65536 + 512),
      "");
  EXPECT_EQ(testing::compare_with_truth(**device, truth, kLarge - (1u << 20), 1u << 20, 4096), "");
  auto info = inspect_vmdk(image);
  ASSERT_TRUE(info);
  if (std::string_view(GetParam()).starts_with("twoGb")) {
    EXPECT_EQ(info->extent_count, 3u);
  }
}

INSTANTIATE_TEST_SUITE_P(Subformats, VmdkInterop,
                         ::testing::Values("monolithicSparse", "streamOptimized", "monolithicFlat",
                                           "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"));

class VmdkCorrupt : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
    testing::write_pattern_file(truth_, kSize, kRegions, 7);
  }
  std::vector<std::byte> make(const std::string& subformat) {
    auto out = dir_ / "good.vmdk";
    EXPECT_EQ(
        testing::run_command(fmt::format("qemu-img convert -f raw -O vmdk -o subformat={} {} {}",
                                         subformat, truth_.string(), out.string())),
        0);
    return testing::read_whole_file(out);
  }
  Result<void> open_and_read_all(std::span<const std::byte> bytes) {
    testing::write_whole_file(broken_, bytes);
    auto device = open_vmdk(broken_);
    if (!device) return fail(device.error());
    std::vector<std::byte> buffer(1u << 20);
    for (uint64_t offset = 0; offset < (*device)->size(); offset += buffer.size()) {
      if (auto read = (*device)->read(offset, buffer); !read) return read;
    }
    return {};
  }
  TempDir dir_;
  std::filesystem::path truth_ = dir_ / "truth.raw";
  std::filesystem::path broken_ = dir_ / "broken.vmdk";
};

TEST_F(VmdkCorrupt, RejectsBadSparseHeaderFields) {
  auto bytes = make("monolithicSparse");
  ASSERT_TRUE(open_and_read_all(bytes));
  auto copy = bytes;
  store_le<uint64_t>(&copy[20], 3);  // grain size not a power of two
  auto result = open_and_read_all(copy);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("grain size"), std::string::npos);
  copy = bytes;
  store_le<uint64_t>(&copy[12], ~0ull);  // capacity
  EXPECT_FALSE(open_and_read_all(copy));
  copy = bytes;
  store_le<uint32_t>(&copy[44], 0);  // entries per grain table
  EXPECT_FALSE(open_and_read_all(copy));
  // Truncated in the middle of the grain tables.
  result = open_and_read_all(std::span(bytes).first(bytes.size() / 3));
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
}

TEST_F(VmdkCorrupt, FallsBackToRedundantDirectoryAndRejectsBadTables) {
  auto bytes = make("monolithicSparse");
  uint64_t directory = load_le<uint64_t>(&bytes[56]) * 512;
  uint64_t redundant = load_le<uint64_t>(&bytes[48]) * 512;
  ASSERT_NE(redundant, 0u);
  // A primary directory entry pointing outside the file: the redundant copy takes over.
  auto copy = bytes;
  store_le<uint32_t>(&copy[directory], 0x7ffffff0);
  EXPECT_TRUE(open_and_read_all(copy));
  // Both broken: a clean error naming the file.
  store_le<uint32_t>(&copy[redundant], 0x7ffffff0);
  auto result = open_and_read_all(copy);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("broken.vmdk"), std::string::npos);
  // A grain table entry pointing into the grain directory.
  copy = bytes;
  uint64_t table = uint64_t{load_le<uint32_t>(&copy[directory])} * 512;
  store_le<uint32_t>(&copy[table], static_cast<uint32_t>(directory / 512));
  result = open_and_read_all(copy);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
}

TEST_F(VmdkCorrupt, RejectsDamagedCompressedGrains) {
  auto bytes = make("streamOptimized");
  ASSERT_TRUE(open_and_read_all(bytes));
  // Flip bytes inside the first compressed grain (sector after the embedded descriptor area).
  uint64_t overhead = load_le<uint64_t>(&bytes[64]) * 512;
  auto copy = bytes;
  for (uint64_t index = overhead + 12; index < overhead + 200 && index < copy.size(); ++index)
    copy[index] ^= std::byte{0x5c};
  auto result = open_and_read_all(copy);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
  // No footer: a stream whose end was cut off.
  result = open_and_read_all(std::span(bytes).first(bytes.size() - 1536));
  EXPECT_FALSE(result);
}

TEST_F(VmdkCorrupt, RejectsBadDescriptors) {
  auto descriptor = dir_ / "d.vmdk";
  auto write_text = [&](std::string_view text) {
    testing::write_whole_file(descriptor, std::as_bytes(std::span(text.data(), text.size())));
    return open_vmdk(descriptor);
  };
  auto result = write_text(
      "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 16 FLAT \"missing.raw\" 0\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kNotFound);
  testing::write_pattern_file(dir_ / "short.raw", 4096, {{0, 4096}}, 1);
  result = write_text(
      "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 16 FLAT \"short.raw\" 0\n");
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("shorter"), std::string::npos);
  result = write_text(
      "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"short.raw\" 0\nRW 8 "
      "ZERO\n");
  ASSERT_TRUE(result) << result.error().message();
  EXPECT_EQ((*result)->size(), 8192u);
  result =
      write_text("# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"d.vmdk\" 0\n");
  EXPECT_FALSE(result);
  // Extents outside the descriptor's folder would expose arbitrary host files.
  result = write_text(
      "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"/etc/passwd\" 0\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_NE(result.error().message().find("outside the image's folder"), std::string::npos);
  result = write_text(
      "# Disk DescriptorFile\ncreateType=\"monolithicFlat\"\nRW 8 FLAT \"../short.raw\" 0\n");
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().code(), ErrorCode::kCorrupt) << result.error().message();
  result = write_text(
      "# Disk "
      "DescriptorFile\nparentCID=12345678\nparentFileNameHint=\"p.vmdk\"\ncreateType="
      "\"monolithicSparse\"\n");
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kUnsupported);
}

}  // namespace
}  // namespace lamina::storage
