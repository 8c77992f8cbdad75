// Differencing VHDX: a child reads through to its parent, keeps its own writes sector by
// sector (sector bitmaps), survives reopening, and refuses a parent that changed or vanished.
#include <gtest/gtest.h>

#include <random>

#include "image_test_support.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::TempDir;

constexpr uint64_t kSize = 8u << 20;

std::vector<std::byte> pattern(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
  return bytes;
}

class VhdxDifferencing : public ::testing::Test {
 protected:
  void SetUp() override {
    VhdxOptions options;
    options.block_size = 1u << 20;
    ASSERT_TRUE(create_vhdx(parent_, kSize, options));
    auto device = open_vhdx(parent_, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE(
        (*device)->write(0, std::span(expected_).first(3u << 20)));  // blocks 0-2 in the parent
    std::fill(expected_.begin() + (3u << 20), expected_.end(), std::byte{0});
  }
  void write_child(BlockDevice& device, uint64_t offset, const std::vector<std::byte>& data) {
    auto written = device.write(offset, data);
    ASSERT_TRUE(written) << written.error().message();
    std::copy(data.begin(), data.end(), expected_.begin() + static_cast<std::ptrdiff_t>(offset));
  }
  void expect_reads_expected(const std::filesystem::path& path) {
    auto device = open_vhdx(path, true, above_);
    ASSERT_TRUE(device) << device.error().message();
    std::vector<std::byte> actual(kSize);
    for (uint64_t offset = 0; offset < kSize; offset += 300 * 512) {
      uint64_t count = std::min<uint64_t>(300 * 512, kSize - offset);
      ASSERT_TRUE((*device)->read(offset, std::span(actual).subspan(offset, count)));
    }
    auto mismatch = std::mismatch(actual.begin(), actual.end(), expected_.begin());
    EXPECT_EQ(mismatch.first, actual.end())
        << "first difference at " << (mismatch.first - actual.begin());
  }

  TempDir dir_;
  std::filesystem::path parent_ = dir_ / "parent.vhdx";
  std::vector<std::byte> expected_ = pattern(kSize, 21);
  // Children in a subfolder reach their parent only when the folder above is allowed.
  ImageAccess above_{.force_share = false, .references = {.allowed_folders = {}, .allow_parent_folder = true}};
};

TEST_F(VhdxDifferencing, ChildReadsThroughAndKeepsItsOwnSectors) {
  std::filesystem::create_directory(dir_ / "children");
  auto child = dir_ / "children" / "child.vhdx";
  auto created = create_vhdx_differencing(child, parent_);
  ASSERT_TRUE(created) << created.error().message();
  // Reference policy: '../parent.vhdx' leaves the child's folder, so it needs permission.
  auto refused = open_vhdx(child, true);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("outside the image's folder"), std::string::npos)
      << refused.error().message();
  expect_reads_expected(child);
  {
    auto device = open_vhdx(child, false, above_);
    ASSERT_TRUE(device) << device.error().message();
    write_child(**device, 512 * 3, pattern(512 * 5, 1));         // inside a parent block
    write_child(**device, (1u << 20) - 1024, pattern(4096, 2));  // across two blocks
    write_child(**device, 5u << 20, pattern(1536, 3));           // where the parent has nothing
    write_child(**device, 512 * 4, pattern(512, 4));             // again into a partial block
    write_child(**device, 6u << 20, pattern(1u << 20, 5));       // a whole block
    std::vector<std::byte> buffer(1024);
    EXPECT_FALSE((*device)->write(100, buffer)) << "unaligned";
  }
  expect_reads_expected(child);
  auto info = inspect_vhdx(child, above_);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->type, VhdxType::kDifferencing);
  EXPECT_EQ(info->parent_path, "..\\parent.vhdx");
  EXPECT_FALSE(info->parent_linkage.empty());
  // The parent is untouched.
  auto parent = open_vhdx(parent_, true);
  ASSERT_TRUE(parent);
  std::vector<std::byte> start(4096);
  ASSERT_TRUE((*parent)->read(0, start));
  EXPECT_TRUE(std::equal(start.begin(), start.end(), pattern(kSize, 21).begin()));
}

TEST_F(VhdxDifferencing, ChainsOfSeveralLevels) {
  auto middle = dir_ / "middle.vhdx";
  auto top = dir_ / "top.vhdx";
  ASSERT_TRUE(create_vhdx_differencing(middle, parent_));
  {
    auto device = open_vhdx(middle, false);
    ASSERT_TRUE(device);
    write_child(**device, 1u << 20, pattern(8192, 6));
  }
  ASSERT_TRUE(create_vhdx_differencing(top, middle));
  {
    auto device = open_vhdx(top, false);
    ASSERT_TRUE(device);
    write_child(**device, (1u << 20) + 4096, pattern(512, 7));
  }
  expect_reads_expected(top);
}

TEST_F(VhdxDifferencing, RefusesAChangedOrMissingParent) {
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_vhdx_differencing(child, parent_));
  {
    auto device = open_vhdx(parent_, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(0, pattern(512, 8)));
  }
  auto opened = open_vhdx(child, true);
  ASSERT_FALSE(opened);
  EXPECT_NE(opened.error().message().find("modified"), std::string::npos)
      << opened.error().message();
  // Issue 16: the candidate's DataWriteGuid (and the linkage) stay out of the message; the
  // candidate may be another user's disk, and its GUID is what a crafted child needs.
  auto parent_info = inspect_vhdx(parent_);
  ASSERT_TRUE(parent_info);
  auto child_info = inspect_vhdx(child);
  ASSERT_TRUE(child_info);
  for (const std::string& guid : {parent_info->data_write_guid, child_info->parent_linkage}) {
    std::string bare = guid.substr(1, guid.size() - 2);  // without the braces
    EXPECT_EQ(opened.error().message().find(bare), std::string::npos) << opened.error().message();
  }
  std::filesystem::remove(parent_);
  opened = open_vhdx(child, true);
  ASSERT_FALSE(opened);
  EXPECT_EQ(opened.error().code(), ErrorCode::kNotFound);
  EXPECT_FALSE(create_vhdx_differencing(dir_ / "orphan.vhdx", parent_));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "orphan.vhdx"));
}

}  // namespace
}  // namespace lamina::storage
