// Bad VHD files: each is refused with an error naming the problem and the file, `check`
// reports it, and `check --repair` fixes only what is safe.

#include <gtest/gtest.h>

#include <cstring>

#include "base/byte_order.h"
#include "storage/image_operations.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

class CorruptVhd : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.file("disk.vhd");
    CreateOptions options;
    options.size = 8 * kMiB;
    ASSERT_TRUE(create_image(path_, "vhd", options, false));
    auto image = VhdImage::open(path_, {.writable = true, .durable = true, .open_parent = true, .access = {}});
    ASSERT_TRUE(image);
    ASSERT_TRUE((*image)->write(0, test::pattern(4 * kMiB, 1)));  // blocks 0 and 1
    ASSERT_TRUE((*image)->flush());
    bytes_ = test::read_file(path_);
  }

  void set_bat_entry(uint32_t index, uint32_t value) {
    store_be<uint32_t>(bytes_.data() + 1536 + 4 * index, value);
    test::write_file(path_, bytes_);
  }
  uint32_t bat_entry(uint32_t index) const { return load_be<uint32_t>(bytes_.data() + 1536 + 4 * index); }

  // Open must fail with a message containing `needle` and the file's path.
  void expect_refused(const std::string& needle) {
    auto image = VhdImage::open(path_, {});
    ASSERT_FALSE(image) << "opened a bad image";
    EXPECT_NE(image.error().message().find(needle), std::string::npos) << image.error().message();
    EXPECT_NE(image.error().message().find(path_), std::string::npos) << image.error().message();
    EXPECT_EQ(test::read_file(path_), bytes_) << "a failed open changed the file";
  }

  CheckReport check(bool repair) {
    auto report = check_vhd(path_, repair);
    EXPECT_TRUE(report) << report.error().message();
    return report ? *report : CheckReport{};
  }

  test::TempDir dir_;
  std::string path_;
  std::vector<std::byte> bytes_;
};

TEST_F(CorruptVhd, CleanImageChecksClean) {
  CheckReport report = check(false);
  EXPECT_TRUE(report.clean());
  for (const auto& problem : report.problems) EXPECT_FALSE(problem.error) << problem.message;
}

TEST_F(CorruptVhd, BadFooterChecksumAtBothCopiesIsRefused) {
  bytes_[100] ^= std::byte{1};
  bytes_[bytes_.size() - 512 + 100] ^= std::byte{1};
  test::write_file(path_, bytes_);
  expect_refused("checksum");
  EXPECT_FALSE(check(true).clean());
}

TEST_F(CorruptVhd, DamagedTrailingFooterIsReadFromTheCopyAndRepaired) {
  bytes_[bytes_.size() - 512 + 70] ^= std::byte{0x55};
  test::write_file(path_, bytes_);
  auto read_only = VhdImage::open(path_, {});
  ASSERT_TRUE(read_only) << read_only.error().message();
  EXPECT_FALSE((*read_only)->warnings().empty());
  read_only->reset();  // its shared lock would refuse the writers below
  EXPECT_FALSE(VhdImage::open(path_, {.writable = true, .durable = true, .open_parent = true, .access = {}})) << "wrote to a damaged image";
  EXPECT_FALSE(check(false).clean());
  CheckReport repaired = check(true);
  EXPECT_TRUE(repaired.clean());
  EXPECT_TRUE(check(false).clean());
  auto image = VhdImage::open(path_, {.writable = true, .durable = true, .open_parent = true, .access = {}});
  ASSERT_TRUE(image);
  EXPECT_EQ(test::read_device(**image, 0, 4 * kMiB), test::pattern(4 * kMiB, 1));
}

TEST_F(CorruptVhd, DamagedFooterCopyIsRepairedFromTheEnd) {
  bytes_[30] ^= std::byte{0x55};
  test::write_file(path_, bytes_);
  EXPECT_FALSE(check(false).clean());
  EXPECT_TRUE(check(true).clean());
  EXPECT_TRUE(check(false).clean());
}

TEST_F(CorruptVhd, BatEntryPastTheEndIsRefusedAndRepairCleared) {
  set_bat_entry(3, 0x00100000);  // 512 MiB into an 4 MiB file
  expect_refused("past the end");
  CheckReport report = check(true);
  EXPECT_TRUE(report.clean());
  auto image = VhdImage::open(path_, {});
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(test::read_device(**image, 6 * kMiB, kMiB), std::vector<std::byte>(kMiB));
  EXPECT_EQ(test::read_device(**image, 0, 4 * kMiB), test::pattern(4 * kMiB, 1));
}

TEST_F(CorruptVhd, OverlappingBlocksAreRefusedAndNotRepaired) {
  set_bat_entry(1, bat_entry(0));
  expect_refused("overlaps");
  CheckReport report = check(true);
  EXPECT_FALSE(report.clean());
}

TEST_F(CorruptVhd, BlockOverlappingMetadataIsRefused) {
  set_bat_entry(2, 1);  // offset 512: the dynamic header
  expect_refused("dynamic header");
}

TEST_F(CorruptVhd, TruncatedFileIsRefused) {
  bytes_.resize(bytes_.size() - kMiB);
  test::write_file(path_, bytes_);
  expect_refused("past the end");
  // Repair restores the footer and clears the entry of the cut-off block; block 0 survives.
  EXPECT_TRUE(check(true).clean());
  auto image = VhdImage::open(path_, {});
  ASSERT_TRUE(image) << image.error().message();
  EXPECT_EQ(test::read_device(**image, 0, 2 * kMiB), test::pattern(2 * kMiB, 1));
}

TEST_F(CorruptVhd, BlockSizeNotAPowerOfTwoIsRefused) {
  store_be<uint32_t>(bytes_.data() + 512 + 32, 3 << 20);
  uint32_t sum = vhd::checksum(std::span(bytes_).subspan(512, 1024), 36);
  store_be<uint32_t>(bytes_.data() + 512 + 36, sum);
  test::write_file(path_, bytes_);
  expect_refused("power of two");
}

TEST_F(CorruptVhd, SizeOverTheFormatMaximumIsRefused) {
  for (size_t at : {size_t{0}, bytes_.size() - 512}) {
    auto footer = vhd::parse_footer(std::span(bytes_).subspan(at, 512));
    ASSERT_TRUE(footer);
    footer->current_size = uint64_t{3} << 40;
    auto serialized = vhd::serialize_footer(*footer);
    std::memcpy(bytes_.data() + at, serialized.data(), 512);
  }
  test::write_file(path_, bytes_);
  expect_refused("2040 GiB");
}

TEST(CorruptFixedVhd, FooterClaimingMoreDataThanPresentIsRefused) {
  test::TempDir dir;
  std::string path = dir.file("fixed.vhd");
  CreateOptions options;
  options.size = 2 * kMiB;
  options.type = "fixed";
  ASSERT_TRUE(create_image(path, "vhd", options, false));
  auto bytes = test::read_file(path);
  auto footer = vhd::parse_footer(std::span(bytes).last(512));
  ASSERT_TRUE(footer);
  footer->current_size = 4 * kMiB;
  auto serialized = vhd::serialize_footer(*footer);
  std::memcpy(bytes.data() + bytes.size() - 512, serialized.data(), 512);
  test::write_file(path, bytes);
  auto image = VhdImage::open(path, {});
  ASSERT_FALSE(image);
  EXPECT_NE(image.error().message().find("truncated"), std::string::npos);
}

TEST(CreateLimits, SizesOverTheMaximumAndBadBlockSizesAreRefused) {
  test::TempDir dir;
  CreateOptions options;
  options.size = uint64_t{2041} << 30;
  auto too_big = create_image(dir.file("big.vhd"), "vhd", options, false);
  ASSERT_FALSE(too_big);
  EXPECT_NE(too_big.error().message().find("2040 GiB"), std::string::npos);
  options.size = kMiB;
  options.block_size = 3 << 20;
  EXPECT_FALSE(create_image(dir.file("odd.vhd"), "vhd", options, false));
  EXPECT_FALSE(std::filesystem::exists(dir.file("big.vhd")));
  EXPECT_FALSE(std::filesystem::exists(dir.file("odd.vhd")));
  // Nothing half-written remains in the folder either.
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace lamina::storage
