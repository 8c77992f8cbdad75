// VhdImage through its public surface: write, read back, reopen; differencing chains.

#include "storage/vhd_image.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "storage/image_operations.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

using test::pattern;
using test::read_device;

constexpr uint64_t kMiB = 1 << 20;

std::unique_ptr<VhdImage> open_vhd(const std::string& path, bool writable = false) {
  auto image = VhdImage::open(path, {.writable = writable, .durable = true, .open_parent = true, .access = {}});
  EXPECT_TRUE(image) << image.error().message();
  return image ? std::move(*image) : nullptr;
}

void create(const std::string& path, uint64_t size, const std::string& type,
            uint32_t block_size = 0) {
  CreateOptions options;
  options.size = size;
  options.type = type;
  options.block_size = block_size;
  auto created = create_image(path, "vhd", options, false);
  ASSERT_TRUE(created) << created.error().message();
}

class VhdTypes : public ::testing::TestWithParam<std::string> {};

TEST_P(VhdTypes, WritesReadBackAcrossBlocksAndReopen) {
  test::TempDir dir;
  std::string path = dir.file("disk.vhd");
  create(path, 9 * kMiB, GetParam(), 1 << 20);
  auto first = pattern(3 * kMiB + 4096, 1);    // spans block boundaries
  auto second = pattern(512, 2);               // one sector inside an allocated block
  auto third = pattern(8192, 3);               // the very end of the disk
  {
    auto image = open_vhd(path, true);
    ASSERT_TRUE(image);
    EXPECT_EQ(image->size(), 9 * kMiB);
    ASSERT_TRUE(image->write(kMiB / 2, first));
    ASSERT_TRUE(image->write(kMiB + 512 * 7, second));
    ASSERT_TRUE(image->write(9 * kMiB - 8192, third));
    ASSERT_TRUE(image->flush());
  }
  auto image = open_vhd(path);
  ASSERT_TRUE(image);
  auto expected = first;
  std::memcpy(expected.data() + kMiB / 2 + 512 * 7, second.data(), 512);
  EXPECT_EQ(read_device(*image, kMiB / 2, expected.size()), expected);
  EXPECT_EQ(read_device(*image, 9 * kMiB - 8192, 8192), third);
  EXPECT_EQ(read_device(*image, 0, kMiB / 2), std::vector<std::byte>(kMiB / 2));
  EXPECT_EQ(read_device(*image, 5 * kMiB, kMiB), std::vector<std::byte>(kMiB));
}

INSTANTIATE_TEST_SUITE_P(FixedAndDynamic, VhdTypes, ::testing::Values("fixed", "dynamic"));

TEST(VhdImage, ZeroWritesLeaveDynamicBlocksUnallocated) {
  test::TempDir dir;
  std::string path = dir.file("disk.vhd");
  create(path, 8 * kMiB, "dynamic");
  auto image = open_vhd(path, true);
  ASSERT_TRUE(image);
  ASSERT_TRUE(image->write(0, std::vector<std::byte>(4 * kMiB)));
  ASSERT_TRUE(image->write(6 * kMiB, pattern(512, 9)));
  int allocated = 0;
  for (uint32_t entry : image->bat()) allocated += entry != vhd::kUnusedBatEntry;
  EXPECT_EQ(allocated, 1);
  auto extent = image->map_extent(0, 8 * kMiB);
  ASSERT_TRUE(extent);
  EXPECT_TRUE(extent->zero);
  EXPECT_EQ(extent->length, 6 * kMiB);
}

TEST(VhdImage, RejectsUnalignedAndOutOfRangeAccess) {
  test::TempDir dir;
  std::string path = dir.file("disk.vhd");
  create(path, 4 * kMiB, "dynamic");
  auto image = open_vhd(path, true);
  ASSERT_TRUE(image);
  std::vector<std::byte> buffer(512);
  EXPECT_FALSE(image->read(100, buffer));
  EXPECT_FALSE(image->read(4 * kMiB, buffer));
  EXPECT_FALSE(image->write(4 * kMiB - 512, std::vector<std::byte>(1024)));
  image.reset();  // its exclusive lock would refuse the reader
  auto read_only = open_vhd(path, false);
  EXPECT_FALSE(read_only->write(0, buffer));
}

TEST(VhdImage, DifferencingChainReadsThroughEveryLevel) {
  test::TempDir dir;
  create(dir.file("base.vhd"), 6 * kMiB, "dynamic");
  {
    auto base = open_vhd(dir.file("base.vhd"), true);
    ASSERT_TRUE(base->write(0, pattern(6 * kMiB, 10)));
  }
  ASSERT_TRUE(create_differencing(dir.file("mid.vhd"), dir.file("base.vhd"), false));
  {
    auto mid = open_vhd(dir.file("mid.vhd"), true);
    ASSERT_TRUE(mid);
    ASSERT_TRUE(mid->write(kMiB, pattern(1024, 11)));  // two sectors of a block
  }
  ASSERT_TRUE(create_differencing(dir.file("top.vhd"), dir.file("mid.vhd"), false));
  auto top = open_vhd(dir.file("top.vhd"), true);
  ASSERT_TRUE(top);
  ASSERT_TRUE(top->write(kMiB + 512, pattern(512, 12)));  // overlaps mid's second sector
  ASSERT_TRUE(top->write(3 * kMiB, std::vector<std::byte>(4096)));  // zeros mask the base

  auto expected = pattern(6 * kMiB, 10);
  auto mid_data = pattern(1024, 11);
  std::memcpy(expected.data() + kMiB, mid_data.data(), 1024);
  auto top_data = pattern(512, 12);
  std::memcpy(expected.data() + kMiB + 512, top_data.data(), 512);
  std::memset(expected.data() + 3 * kMiB, 0, 4096);
  EXPECT_EQ(read_device(*top, 0, 6 * kMiB), expected);
  ASSERT_NE(top->parent(), nullptr);
  ASSERT_NE(top->parent()->parent(), nullptr);
  EXPECT_EQ(top->parent()->parent()->parent(), nullptr);
}

TEST(VhdImage, DeepChainsWork) {
  test::TempDir dir;
  create(dir.file("disk0.vhd"), 2 * kMiB, "dynamic", 512 * 1024);
  constexpr int kDepth = 24;
  for (int level = 1; level <= kDepth; ++level) {
    std::string path = dir.file("disk" + std::to_string(level) + ".vhd");
    ASSERT_TRUE(create_differencing(path, dir.file("disk" + std::to_string(level - 1) + ".vhd"), false));
    auto image = open_vhd(path, true);
    ASSERT_TRUE(image);
    // Each level owns one sector of its own.
    ASSERT_TRUE(image->write(uint64_t(level) * 512 * 7, test::pattern(512, level)));
  }
  auto top = open_vhd(dir.file("disk" + std::to_string(kDepth) + ".vhd"));
  ASSERT_TRUE(top);
  for (int level = 1; level <= kDepth; ++level) {
    EXPECT_EQ(read_device(*top, uint64_t(level) * 512 * 7, 512), test::pattern(512, level))
        << "level " << level;
  }
}

TEST(VhdImage, ParentIsFoundAfterMovingTheChainTogether) {
  test::TempDir dir;
  std::filesystem::create_directory(dir.file("a"));
  create(dir.file("a/base.vhd"), 2 * kMiB, "dynamic");
  ASSERT_TRUE(create_differencing(dir.file("a/child.vhd"), dir.file("a/base.vhd"), false));
  // The absolute locator is now stale; the relative one still finds the parent.
  std::filesystem::rename(dir.file("a"), dir.file("b"));
  auto child = open_vhd(dir.file("b/child.vhd"));
  ASSERT_TRUE(child);
  EXPECT_EQ(child->parent_path(), dir.file("b/base.vhd"));
}

TEST(VhdImage, AbsoluteLocatorFindsTheParentWhenTheChildMoves) {
  test::TempDir dir;
  std::filesystem::create_directory(dir.file("a"));
  std::filesystem::create_directory(dir.file("b"));
  create(dir.file("a/base.vhd"), 2 * kMiB, "dynamic");
  ASSERT_TRUE(create_differencing(dir.file("a/child.vhd"), dir.file("a/base.vhd"), false));
  std::filesystem::rename(dir.file("a/child.vhd"), dir.file("b/child.vhd"));
  // Reference policy: the absolute locator leaves the child's folder, so it is refused...
  auto refused = VhdImage::open(dir.file("b/child.vhd"), {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("outside the image's folder"), std::string::npos)
      << refused.error().message();
  // ...unless the user allows the parent's folder.
  VhdImage::Options allowed{};
  allowed.access.references.allowed_folders = {dir.file("a")};
  auto child = VhdImage::open(dir.file("b/child.vhd"), allowed);
  ASSERT_TRUE(child) << child.error().message();
  EXPECT_EQ((*child)->parent_path(), dir.file("a/base.vhd"));
}

TEST(VhdImage, HyperVStyleDriveLetterLocatorIsFollowed) {
  test::TempDir dir;
  std::filesystem::create_directory(dir.file("vm"));
  create(dir.file("vm/base.vhd"), 2 * kMiB, "dynamic");
  ASSERT_TRUE(create_differencing(dir.file("vm/child.vhd"), dir.file("vm/base.vhd"), false));
  // Rewrite as Hyper-V would on drive C: only a W2ku locator "C:\...\base.vhd", no W2ru, and
  // no usable parent name, so the drive-letter path is the only way to the parent.
  auto bytes = test::read_file(dir.file("vm/child.vhd"));
  auto header = vhd::parse_dynamic_header(std::span(bytes).subspan(512, 1024));
  ASSERT_TRUE(header);
  std::string windows = "C:" + dir.file("vm/base.vhd");
  std::replace(windows.begin(), windows.end(), '/', '\\');
  std::string data = vhd::encode_utf16le(vhd::utf8_to_utf16(windows));
  vhd::ParentLocator& absolute = header->parent_locators[1];
  ASSERT_EQ(absolute.platform_code, vhd::kPlatformW2ku);
  ASSERT_LE(data.size(), absolute.data_space);
  std::memset(bytes.data() + absolute.data_offset, 0, absolute.data_space);
  std::memcpy(bytes.data() + absolute.data_offset, data.data(), data.size());
  absolute.data_length = static_cast<uint32_t>(data.size());
  header->parent_locators[0].platform_code = vhd::kPlatformNone;
  header->parent_unicode_name = u"elsewhere.vhd";
  auto serialized = vhd::serialize_dynamic_header(*header);
  std::memcpy(bytes.data() + 512, serialized.data(), serialized.size());
  test::write_file(dir.file("vm/child.vhd"), bytes);
  auto child = open_vhd(dir.file("vm/child.vhd"));
  ASSERT_TRUE(child);
  EXPECT_EQ(child->parent_path(), dir.file("vm/base.vhd"));
}

TEST(VhdImage, MissingParentAndWrongParentAreClearErrors) {
  test::TempDir dir;
  create(dir.file("base.vhd"), 2 * kMiB, "dynamic");
  ASSERT_TRUE(create_differencing(dir.file("child.vhd"), dir.file("base.vhd"), false));
  std::filesystem::rename(dir.file("base.vhd"), dir.file("elsewhere.vhd"));
  auto missing = VhdImage::open(dir.file("child.vhd"), {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_NE(missing.error().message().find("base.vhd"), std::string::npos);
  // A different disk under the parent's name has another unique id.
  create(dir.file("base.vhd"), 2 * kMiB, "dynamic");
  auto wrong = VhdImage::open(dir.file("child.vhd"), {});
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message().find("unique id"), std::string::npos);
}

// Points `child`'s parent link (unique id and locators) at `parent`, as if it had been created
// over it, by rewriting its dynamic header.
void relink(const std::string& child, const std::string& parent) {
  auto parent_image = open_vhd(parent);
  ASSERT_TRUE(parent_image);
  auto bytes = test::read_file(child);
  auto header = vhd::parse_dynamic_header(std::span(bytes).subspan(512, 1024));
  ASSERT_TRUE(header);
  header->parent_unique_id = parent_image->footer().unique_id;
  header->parent_unicode_name = vhd::utf8_to_utf16(std::filesystem::path(parent).filename().string());
  for (auto& locator : header->parent_locators) locator.platform_code = vhd::kPlatformNone;
  auto serialized = vhd::serialize_dynamic_header(*header);
  std::memcpy(bytes.data() + 512, serialized.data(), serialized.size());
  test::write_file(child, bytes);
}

TEST(VhdImage, ParentLoopIsDetected) {
  test::TempDir dir;
  create(dir.file("base.vhd"), 2 * kMiB, "dynamic");
  ASSERT_TRUE(create_differencing(dir.file("a.vhd"), dir.file("base.vhd"), false));
  ASSERT_TRUE(create_differencing(dir.file("b.vhd"), dir.file("a.vhd"), false));
  relink(dir.file("a.vhd"), dir.file("b.vhd"));  // a -> b -> a
  auto looped = VhdImage::open(dir.file("b.vhd"), {});
  ASSERT_FALSE(looped);
  EXPECT_NE(looped.error().message().find("loop"), std::string::npos) << looped.error().message();
  // A disk that names itself as parent.
  ASSERT_TRUE(create_differencing(dir.file("self.vhd"), dir.file("base.vhd"), false));
  relink(dir.file("self.vhd"), dir.file("self.vhd"));
  auto self = VhdImage::open(dir.file("self.vhd"), {});
  ASSERT_FALSE(self);
  EXPECT_NE(self.error().message().find("loop"), std::string::npos);
}

}  // namespace
}  // namespace lamina::storage
