// `lamina disk resize`, `compact`, `merge` and `create --parent` on VHDX, through the public
// operations: content survives, sizes and allocation change as promised, identities that
// children depend on are kept or changed as MS-VHDX requires, and refused or interrupted
// operations leave the files readable with their old content.
#include <gtest/gtest.h>

#include <random>

#include "base/byte_order.h"
#include "image_test_support.h"
#include "storage/image_operations.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;

std::vector<std::byte> pattern(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
  return bytes;
}

std::vector<std::byte> read_all(const std::filesystem::path& path) {
  auto device = open_vhdx(path, true);
  EXPECT_TRUE(device) << device.error().message();
  if (!device) return {};
  std::vector<std::byte> bytes((*device)->size());
  EXPECT_TRUE((*device)->read(0, bytes));
  return bytes;
}

VhdxInfo info_of(const std::filesystem::path& path) {
  auto info = inspect_vhdx(path);
  EXPECT_TRUE(info) << info.error().message();
  return info ? *info : VhdxInfo{};
}

class VhdxOperations : public ::testing::Test {
 protected:
  // A 1 MiB-block image of `size` bytes holding `content` (its length <= size) from offset 0.
  void make_image(const std::filesystem::path& path, uint64_t size,
                  const std::vector<std::byte>& content, VhdxType type = VhdxType::kDynamic) {
    VhdxOptions options;
    options.type = type;
    options.block_size = kMiB;
    auto created = create_vhdx(path, size, options);
    ASSERT_TRUE(created) << created.error().message();
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(0, content));
  }
  void write_at(const std::filesystem::path& path, uint64_t offset,
                const std::vector<std::byte>& data) {
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device) << device.error().message();
    auto written = (*device)->write(offset, data);
    ASSERT_TRUE(written) << written.error().message();
  }

  TempDir dir_;
  std::filesystem::path image_ = dir_ / "disk.vhdx";
};

TEST_F(VhdxOperations, GrowsInPlaceWithZerosPastTheOldEnd) {
  // 5.5 MiB: the last block is half used, and its unused half holds junk a grow must not show.
  auto content = pattern(11 * kMiB / 2, 1);
  make_image(image_, content.size(), content);
  {
    // Junk in the file behind block 5's unused half (create_vhdx puts the BAT at 3 MiB).
    auto bytes = testing::read_whole_file(image_);
    uint64_t entry = load_le<uint64_t>(&bytes[3 * kMiB + 5 * 8]);
    uint64_t block_offset = (entry >> 20) * kMiB;
    ASSERT_EQ(entry & 7, 6u) << "block 5 is fully present";
    ASSERT_LE(block_offset + kMiB, bytes.size());
    std::fill_n(bytes.begin() + static_cast<std::ptrdiff_t>(block_offset + kMiB / 2), kMiB / 2,
                std::byte{0xee});
    testing::write_whole_file(image_, bytes);
    ASSERT_TRUE(read_all(image_) == content) << "junk past the end is invisible";
  }
  VhdxInfo before = info_of(image_);
  ASSERT_TRUE(resize_image(image_, 12 * kMiB, false, {}));
  auto expected = content;
  expected.resize(12 * kMiB);
  EXPECT_TRUE(read_all(image_) == expected);
  VhdxInfo after = info_of(image_);
  EXPECT_EQ(after.virtual_size, 12 * kMiB);
  EXPECT_EQ(after.virtual_disk_id, before.virtual_disk_id) << "the same disk";
  EXPECT_NE(after.data_write_guid, before.data_write_guid) << "its content changed (2.2.2)";
  EXPECT_FALSE(after.log_replay_pending);
  // The new blocks are writable.
  write_at(image_, 11 * kMiB, pattern(kMiB, 2));
  std::copy_n(pattern(kMiB, 2).begin(), kMiB, expected.begin() + 11 * kMiB);
  EXPECT_TRUE(read_all(image_) == expected);
}

TEST_F(VhdxOperations, ShrinkNeedsTheFlagAndAGrowAfterItShowsZeros) {
  auto content = pattern(8 * kMiB, 3);
  make_image(image_, content.size(), content);
  auto bytes = testing::read_whole_file(image_);
  auto refused = resize_image(image_, 3 * kMiB + 512, false, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("--shrink"), std::string::npos);
  EXPECT_TRUE(testing::read_whole_file(image_) == bytes) << "a refused resize writes nothing";
  ASSERT_TRUE(resize_image(image_, 3 * kMiB + 512, true, {}));
  EXPECT_EQ(info_of(image_).virtual_size, 3 * kMiB + 512);
  EXPECT_EQ(info_of(image_).allocated_bytes, 4 * kMiB);
  ASSERT_TRUE(resize_image(image_, 8 * kMiB, false, {}));
  auto expected = content;
  std::fill(expected.begin() + 3 * kMiB + 512, expected.end(), std::byte{0});
  EXPECT_TRUE(read_all(image_) == expected) << "dropped data must not come back";
}

TEST_F(VhdxOperations, FixedDisksGrowFullyAllocated) {
  auto content = pattern(4 * kMiB, 4);
  make_image(image_, content.size(), content, VhdxType::kFixed);
  ASSERT_TRUE(resize_image(image_, 9 * kMiB, false, {}));
  VhdxInfo info = info_of(image_);
  EXPECT_EQ(info.type, VhdxType::kFixed);
  EXPECT_EQ(info.allocated_bytes, 9 * kMiB);
  auto expected = content;
  expected.resize(9 * kMiB);
  EXPECT_TRUE(read_all(image_) == expected);
}

TEST_F(VhdxOperations, GrowingPastTheBatRegionRewritesTheImage) {
  // A 1 MiB BAT region holds 131072 entries: with 1 MiB blocks, about 127 GiB.
  auto content = pattern(3 * kMiB, 5);
  make_image(image_, 8 * kMiB, content);
  VhdxInfo before = info_of(image_);
  constexpr uint64_t kLarge = 200ull << 30;
  ASSERT_TRUE(resize_image(image_, kLarge, false, {}));
  VhdxInfo after = info_of(image_);
  EXPECT_EQ(after.virtual_size, kLarge);
  EXPECT_EQ(after.virtual_disk_id, before.virtual_disk_id);
  EXPECT_EQ(after.allocated_bytes, 3 * kMiB) << "zeros stay unallocated";
  EXPECT_LT(after.file_size, 16 * kMiB);
  auto device = open_vhdx(image_, true);
  ASSERT_TRUE(device);
  std::vector<std::byte> head(3 * kMiB), tail(kMiB);
  ASSERT_TRUE((*device)->read(0, head));
  ASSERT_TRUE((*device)->read(kLarge - kMiB, tail));
  EXPECT_TRUE(head == content);
  EXPECT_TRUE(tail == std::vector<std::byte>(kMiB));
  for (const auto& entry : std::filesystem::directory_iterator(dir_.path())) {
    EXPECT_EQ(entry.path().filename().string()[0] == '.', false) << "no staged file left";
  }
}

TEST_F(VhdxOperations, RefusesWhatItCannotResize) {
  make_image(image_, 4 * kMiB, pattern(kMiB, 6));
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  auto bytes = testing::read_whole_file(child);
  auto refused = resize_image(child, 8 * kMiB, false, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("differencing"), std::string::npos);
  EXPECT_TRUE(testing::read_whole_file(child) == bytes);
  EXPECT_FALSE(resize_image(image_, 4 * kMiB + 100, false, {})) << "not whole sectors";
  EXPECT_FALSE(resize_image(image_, 65ull << 40, false, {})) << "over 64 TiB";
  EXPECT_EQ(info_of(image_).virtual_size, 4 * kMiB);
}

TEST_F(VhdxOperations, CompactDropsZeroBlocksAndKeepsTheIdentityChildrenLinkTo) {
  auto content = pattern(8 * kMiB, 7);
  std::fill_n(content.begin() + 2 * kMiB, 3 * kMiB, std::byte{0});  // blocks 2-4 written as zeros
  make_image(image_, content.size(), content);
  EXPECT_EQ(info_of(image_).allocated_bytes, 8 * kMiB);
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  VhdxInfo before = info_of(image_);
  auto sizes = compact_image(image_, {});
  ASSERT_TRUE(sizes) << sizes.error().message();
  EXPECT_LT(sizes->second + 3 * kMiB, sizes->first + 1);
  VhdxInfo after = info_of(image_);
  EXPECT_EQ(after.allocated_bytes, 5 * kMiB);
  EXPECT_EQ(after.virtual_disk_id, before.virtual_disk_id);
  EXPECT_EQ(after.data_write_guid, before.data_write_guid);
  EXPECT_TRUE(read_all(image_) == content);
  EXPECT_TRUE(read_all(child) == content) << "the child still links to the compacted parent";
}

TEST_F(VhdxOperations, CompactKeepsADifferencingDisksOwnSectorsZerosIncluded) {
  make_image(image_, 8 * kMiB, pattern(8 * kMiB, 8));
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  write_at(child, 4096, pattern(8192, 9));
  write_at(child, 3 * kMiB, std::vector<std::byte>(kMiB));  // zeros hiding the parent
  auto expected = read_all(child);
  ASSERT_TRUE(compact_image(child, {}));
  EXPECT_TRUE(read_all(child) == expected);
  EXPECT_EQ(info_of(child).type, VhdxType::kDifferencing);
}

TEST_F(VhdxOperations, FixedDisksAreNotCompacted) {
  make_image(image_, 4 * kMiB, pattern(kMiB, 10), VhdxType::kFixed);
  auto refused = compact_image(image_, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("fixed"), std::string::npos);
}

TEST_F(VhdxOperations, MergeCommitsTheChildAndBreaksOtherChildren) {
  make_image(image_, 8 * kMiB, pattern(6 * kMiB, 11));
  auto child = dir_ / "child.vhdx";
  auto sibling = dir_ / "sibling.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  ASSERT_TRUE(create_differencing(sibling, image_, false));
  write_at(child, 512, pattern(3 * 512, 12));        // a few sectors
  write_at(child, 2 * kMiB, pattern(kMiB, 13));      // a whole block
  write_at(child, 7 * kMiB, pattern(kMiB / 2, 14));  // past the parent's data
  {
    auto device = open_vhdx(child, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write_zeroes(4 * kMiB, kMiB, true));  // zeros over parent data
  }
  auto expected = read_all(child);
  VhdxInfo child_before = info_of(child);
  auto merged = merge_image(child, {});
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(*merged, 3 * 512 + 2 * kMiB + kMiB / 2);
  EXPECT_TRUE(read_all(image_) == expected) << "the parent holds the child's view";
  EXPECT_TRUE(read_all(child) == expected) << "the child reads the same";
  VhdxInfo child_after = info_of(child);
  EXPECT_EQ(child_after.allocated_bytes, 0u);
  EXPECT_EQ(child_after.virtual_disk_id, child_before.virtual_disk_id);
  EXPECT_EQ(child_after.data_write_guid, child_before.data_write_guid);
  EXPECT_EQ(child_after.parent_linkage, info_of(image_).data_write_guid);
  auto stale = open_vhdx(sibling, true);
  ASSERT_FALSE(stale) << "the parent changed under the sibling";
  EXPECT_NE(stale.error().message().find("modified"), std::string::npos);
}

TEST_F(VhdxOperations, AnInterruptedMergeLeavesTheChildReadingTheSame) {
  make_image(image_, 8 * kMiB, pattern(8 * kMiB, 15));
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  write_at(child, 0, pattern(kMiB, 16));
  write_at(child, 5 * kMiB, pattern(kMiB, 17));
  auto expected = read_all(child);
  auto parent_bytes = testing::read_whole_file(image_);
  // Cancelled while the child is rewritten (the first of its 8 blocks): nothing changes.
  auto early = merge_image(child, [](uint64_t done, uint64_t) { return done < kMiB; });
  ASSERT_FALSE(early);
  EXPECT_NE(early.error().message().find("nothing was merged"), std::string::npos);
  EXPECT_TRUE(testing::read_whole_file(image_) == parent_bytes);
  EXPECT_TRUE(read_all(child) == expected);
  // Cancelled after the first block went into the parent (8 reports rewrite the child first).
  int calls = 0;
  auto merged = merge_image(child, [&](uint64_t, uint64_t) { return ++calls < 9; });
  ASSERT_FALSE(merged);
  EXPECT_NE(merged.error().message().find("merged again"), std::string::npos);
  EXPECT_TRUE(read_all(child) == expected) << "the child opens through parent_linkage2";
  EXPECT_FALSE(std::ranges::equal(read_all(image_), expected)) << "only part is in the parent";
  ASSERT_TRUE(merge_image(child, {}));
  EXPECT_TRUE(read_all(image_) == expected);
  EXPECT_TRUE(read_all(child) == expected);
}

TEST_F(VhdxOperations, RefusesToMergeWhatIsNotADifferencingDisk) {
  make_image(image_, 4 * kMiB, pattern(kMiB, 18));
  auto refused = merge_image(image_, {});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("not a differencing disk"), std::string::npos);
  // A child whose parent vanished: nothing to merge into, nothing written.
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  std::filesystem::rename(image_, dir_ / "moved.vhdx");
  auto bytes = testing::read_whole_file(child);
  auto orphan = merge_image(child, {});
  ASSERT_FALSE(orphan);
  EXPECT_EQ(orphan.error().code(), ErrorCode::kNotFound);
  EXPECT_TRUE(testing::read_whole_file(child) == bytes);
}

TEST_F(VhdxOperations, DifferencingCreateTakesTheParentsFormatAndNeverOverwrites) {
  make_image(image_, 4 * kMiB, pattern(kMiB, 19));
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  EXPECT_EQ(info_of(child).type, VhdxType::kDifferencing);
  auto again = create_differencing(child, image_, false);
  ASSERT_FALSE(again);
  EXPECT_NE(again.error().message().find("--force"), std::string::npos);
  ASSERT_TRUE(create_differencing(child, image_, true));
  auto raw = dir_ / "plain.raw";
  testing::write_whole_file(raw, pattern(kMiB, 20));
  auto refused = create_differencing(dir_ / "other.vhdx", raw, false);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("VHD or VHDX parent"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir_ / "other.vhdx"));
}

TEST_F(VhdxOperations, DamagedImagesAreRefusedAndLeftAlone) {
  make_image(image_, 4 * kMiB, pattern(2 * kMiB, 21));
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  write_at(child, 0, pattern(4096, 22));
  // A payload BAT entry of the child pointing past the end of the file (its BAT is at 3 MiB).
  auto bytes = testing::read_whole_file(child);
  store_le<uint64_t>(&bytes[3 * kMiB + 8], (uint64_t{4096} << 20) | 6);
  testing::write_whole_file(child, bytes);
  auto parent_bytes = testing::read_whole_file(image_);
  for (int operation = 0; operation < 3; ++operation) {
    auto only_error = [](auto result) -> Result<void> {
      if (!result) return fail(result.error());
      return {};
    };
    Result<void> result = operation == 0   ? resize_image(child, 8 * kMiB, false, {})
                          : operation == 1 ? only_error(compact_image(child, {}))
                                           : only_error(merge_image(child, {}));
    ASSERT_FALSE(result) << operation;
    EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt) << result.error().message();
    EXPECT_NE(result.error().message().find("child.vhdx"), std::string::npos);
    EXPECT_TRUE(testing::read_whole_file(child) == bytes) << operation;
    EXPECT_TRUE(testing::read_whole_file(image_) == parent_bytes) << operation;
  }
  // Both headers damaged: not even recognised as a usable VHDX.
  auto base = testing::read_whole_file(image_);
  base[64 * 1024 + 4] ^= std::byte{1};
  base[128 * 1024 + 4] ^= std::byte{1};
  testing::write_whole_file(image_, base);
  auto resized = resize_image(image_, 8 * kMiB, false, {});
  ASSERT_FALSE(resized);
  EXPECT_NE(resized.error().message().find("both headers"), std::string::npos);
  EXPECT_TRUE(testing::read_whole_file(image_) == base);
}

}  // namespace
}  // namespace lamina::storage
