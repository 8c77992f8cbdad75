// BlockDevice::write_zeroes for every writable format: the range reads back as zeros (also after
// reopening), data around it is untouched, and space is freed where the format promises it
// (raw holes, unallocated VHD blocks, PAYLOAD_BLOCK_ZERO VHDX blocks).

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <fmt/format.h>

#include "storage/host_file.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"
#include "storage/vhdx_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

bool all_zero(const std::vector<std::byte>& bytes) {
  return !bytes.empty() &&
         std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

// Bytes the host file system has allocated for the file.
uint64_t host_allocation(const std::string& path) {
  struct stat status {};
  EXPECT_EQ(::stat(path.c_str(), &status), 0);
  return static_cast<uint64_t>(status.st_blocks) * 512;
}

// Whether the temp folder's file system can punch holes (the allocation checks need it).
bool can_punch_holes(const test::TempDir& dir) {
  std::string probe = dir.file("probe");
  test::write_file(probe, test::pattern(kMiB, 1));
  auto file = HostFile::open(probe, HostFile::Mode::kReadWrite);
  return file && file->punch_hole(0, kMiB);
}

std::unique_ptr<BlockDevice> create_and_open(const std::string& path, std::string_view format,
                                             uint64_t size, std::string type = "") {
  CreateOptions options;
  options.size = size;
  options.type = std::move(type);
  if (format == "vhdx") options.block_size = kMiB;
  auto created = create_image(path, format, options, false);
  EXPECT_TRUE(created) << created.error().message();
  auto image = open_image(path, true);
  EXPECT_TRUE(image) << image.error().message();
  return image ? std::move(*image) : nullptr;
}

// Writes 6 MiB of pattern, zeroes [1.5 MiB, 4 MiB) and checks every byte of the first 6 MiB.
void zero_and_check(BlockDevice& device, bool may_unmap) {
  auto data = test::pattern(6 * kMiB, 7);
  ASSERT_TRUE(device.write(0, data));
  ASSERT_TRUE(device.write_zeroes(3 * kMiB / 2, 5 * kMiB / 2, may_unmap));
  std::fill(data.begin() + 3 * kMiB / 2, data.begin() + 4 * kMiB, std::byte{0});
  EXPECT_TRUE(test::read_device(device, 0, 6 * kMiB) == data);
  ASSERT_TRUE(device.flush());
}

TEST(WriteZeroes, RawPunchesHolesOnlyWhenAllowedToUnmap) {
  test::TempDir dir;
  bool punching = can_punch_holes(dir);
  for (bool may_unmap : {false, true}) {
    std::string path = dir.file(may_unmap ? "unmap.raw" : "keep.raw");
    auto image = create_and_open(path, "raw", 8 * kMiB);
    ASSERT_TRUE(image);
    auto data = test::pattern(6 * kMiB, 7);
    ASSERT_TRUE(image->write(0, data));
    ASSERT_TRUE(image->flush());
    uint64_t before = host_allocation(path);
    zero_and_check(*image, may_unmap);
    uint64_t after = host_allocation(path);
    if (!punching) continue;
    if (may_unmap) {
      EXPECT_LE(after + 2 * kMiB, before) << "2.5 MiB zeroed, at least 2 MiB freed";
    } else {
      EXPECT_GE(after, before) << "without may_unmap the range stays allocated";
    }
  }
}

TEST(WriteZeroes, DynamicVhdDropsWholeBlocksOnlyWhenAllowedToUnmap) {
  test::TempDir dir;
  for (bool may_unmap : {false, true}) {
    std::string path = dir.file(may_unmap ? "unmap.vhd" : "keep.vhd");
    {
      auto image = create_and_open(path, "vhd", 8 * kMiB);  // 2 MiB blocks
      ASSERT_TRUE(image);
      zero_and_check(*image, may_unmap);
      // Block 1 ([2, 4) MiB) was wholly zeroed; blocks 0 and 2 only partly or not at all.
      auto& vhd = dynamic_cast<VhdImage&>(*image);
      EXPECT_EQ(vhd.bat()[1] == vhd::kUnusedBatEntry, may_unmap);
      EXPECT_NE(vhd.bat()[0], vhd::kUnusedBatEntry);
      EXPECT_NE(vhd.bat()[2], vhd::kUnusedBatEntry);
      // Zeroing an unallocated block allocates nothing.
      ASSERT_TRUE(image->write_zeroes(6 * kMiB, 2 * kMiB, may_unmap));
      EXPECT_EQ(vhd.bat()[3], vhd::kUnusedBatEntry);
    }
    auto reopened = open_image(path, false);
    ASSERT_TRUE(reopened);
    EXPECT_TRUE(all_zero(test::read_device(**reopened, 3 * kMiB / 2, 5 * kMiB / 2)));
    auto report = check_vhd(path, false);
    ASSERT_TRUE(report);
    EXPECT_TRUE(report->clean());
  }
}

TEST(WriteZeroes, FixedVhdZeroesInPlace) {
  test::TempDir dir;
  std::string path = dir.file("fixed.vhd");
  auto image = create_and_open(path, "vhd", 8 * kMiB, "fixed");
  ASSERT_TRUE(image);
  uint64_t file_size = std::filesystem::file_size(path);
  zero_and_check(*image, true);
  image.reset();
  EXPECT_EQ(std::filesystem::file_size(path), file_size);
  auto report = check_vhd(path, false);
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->clean()) << "the footer is intact";
}

TEST(WriteZeroes, DifferencingDisksHideTheParent) {
  test::TempDir dir;
  for (std::string_view format : {"vhd", "vhdx"}) {
    std::string parent = dir.file(fmt::format("parent.{}", format));
    std::string child = dir.file(fmt::format("child.{}", format));
    {
      auto image = create_and_open(parent, format, 8 * kMiB);
      ASSERT_TRUE(image);
      ASSERT_TRUE(image->write(0, test::pattern(8 * kMiB, 3)));
      ASSERT_TRUE(image->flush());
    }
    if (format == "vhd") {
      ASSERT_TRUE(create_differencing(child, parent, false));
    } else {
      ASSERT_TRUE(create_vhdx_differencing(child, parent));
    }
    {
      auto image = open_image(child, true);
      ASSERT_TRUE(image) << image.error().message();
      // 3 MiB crosses the default's 1 MiB buffer and whole and partial blocks.
      ASSERT_TRUE((*image)->write_zeroes(kMiB / 2, 3 * kMiB, true));
      ASSERT_TRUE((*image)->flush());
    }
    auto image = open_image(child, false);
    ASSERT_TRUE(image);
    auto expected = test::pattern(8 * kMiB, 3);
    std::fill(expected.begin() + kMiB / 2, expected.begin() + 7 * kMiB / 2, std::byte{0});
    EXPECT_TRUE(test::read_device(**image, 0, 8 * kMiB) == expected) << format;
    auto untouched = open_image(parent, false);
    ASSERT_TRUE(untouched);
    EXPECT_TRUE(test::read_device(**untouched, 0, 8 * kMiB) == test::pattern(8 * kMiB, 3));
  }
}

TEST(WriteZeroes, DynamicVhdxMarksWholeBlocksZero) {
  test::TempDir dir;
  bool punching = can_punch_holes(dir);
  for (bool may_unmap : {false, true}) {
    std::string path = dir.file(may_unmap ? "unmap.vhdx" : "keep.vhdx");
    {
      auto image = create_and_open(path, "vhdx", 8 * kMiB);  // 1 MiB blocks
      ASSERT_TRUE(image);
      ASSERT_TRUE(image->write(0, test::pattern(6 * kMiB, 7)));
      ASSERT_TRUE(image->flush());
      image.reset();
      uint64_t allocation_before = host_allocation(path);
      auto again = open_image(path, true);
      ASSERT_TRUE(again) << again.error().message();
      image = std::move(*again);
      zero_and_check(*image, may_unmap);
      image.reset();
      auto info = inspect_vhdx(path);
      ASSERT_TRUE(info);
      // [1.5, 4) MiB covers blocks 2 and 3 wholly; 1 is only half zeroed.
      EXPECT_EQ(info->allocated_bytes, may_unmap ? 4 * kMiB : 6 * kMiB);
      if (punching && may_unmap) {
        EXPECT_LE(host_allocation(path) + 2 * kMiB, allocation_before);
      }
    }
    auto reopened = open_image(path, false);
    ASSERT_TRUE(reopened);
    EXPECT_TRUE(all_zero(test::read_device(**reopened, 3 * kMiB / 2, 5 * kMiB / 2)));
    // A zeroed block written again holds the new data and zeros around it.
    reopened->reset();  // its shared lock would refuse the writer
    auto writable = open_image(path, true);
    ASSERT_TRUE(writable);
    auto small = test::pattern(4096, 9);
    ASSERT_TRUE((*writable)->write(2 * kMiB + 8192, small));
    auto block = test::read_device(**writable, 2 * kMiB, kMiB);
    std::vector<std::byte> expected(kMiB);
    std::copy(small.begin(), small.end(), expected.begin() + 8192);
    EXPECT_TRUE(block == expected);
  }
}

TEST(WriteZeroes, RefusesBadRanges) {
  test::TempDir dir;
  auto vhd = create_and_open(dir.file("a.vhd"), "vhd", 4 * kMiB);
  ASSERT_TRUE(vhd);
  EXPECT_FALSE(vhd->write_zeroes(100, 512, true)) << "unaligned";
  EXPECT_FALSE(vhd->write_zeroes(4 * kMiB - 512, 1024, true)) << "past the end";
  auto vhdx = create_and_open(dir.file("a.vhdx"), "vhdx", 4 * kMiB);
  ASSERT_TRUE(vhdx);
  EXPECT_FALSE(vhdx->write_zeroes(4 * kMiB, 512, true)) << "past the end";
  auto raw = create_and_open(dir.file("a.raw"), "raw", 4 * kMiB);
  ASSERT_TRUE(raw);
  EXPECT_FALSE(raw->write_zeroes(0, 4 * kMiB + 1, false)) << "past the end";
  // Their exclusive locks would refuse the readers.
  vhd.reset();
  vhdx.reset();
  raw.reset();
  for (const char* name : {"a.vhd", "a.vhdx", "a.raw"}) {
    auto read_only = open_image(dir.file(name), false);
    ASSERT_TRUE(read_only);
    EXPECT_FALSE((*read_only)->write_zeroes(0, 512, true)) << name << " is open read-only";
  }
}

}  // namespace
}  // namespace lamina::storage
