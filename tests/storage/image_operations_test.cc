// Format detection and the whole-image operations: convert, merge, resize, compact.

#include "storage/image_operations.h"

#include <gtest/gtest.h>

#include <tuple>

#include "storage/raw_image.h"
#include "storage/vhd_check.h"
#include "storage/vhd_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

constexpr uint64_t kMiB = 1 << 20;

std::unique_ptr<BlockDevice> open_any(const std::string& path, bool writable = false) {
  auto image = open_image(path, writable);
  EXPECT_TRUE(image) << image.error().message();
  return image ? std::move(*image) : nullptr;
}

std::vector<std::byte> whole(const std::string& path) {
  auto image = open_any(path);
  return image ? test::read_device(*image, 0, image->size()) : std::vector<std::byte>{};
}

// A raw image of `size` bytes with data in the given MiB slots and zeros elsewhere.
std::vector<std::byte> make_raw(const std::string& path, uint64_t size,
                                std::initializer_list<uint64_t> data_mib) {
  std::vector<std::byte> bytes(size);
  for (uint64_t slot : data_mib) {
    auto data = test::pattern(kMiB, slot + 100);
    std::memcpy(bytes.data() + slot * kMiB, data.data(), kMiB);
  }
  test::write_file(path, bytes);
  return bytes;
}

uint64_t allocated_blocks(const std::string& path) {
  auto image = VhdImage::open(path, {});
  EXPECT_TRUE(image);
  uint64_t count = 0;
  for (uint32_t entry : (*image)->bat()) count += entry != vhd::kUnusedBatEntry;
  return count;
}

TEST(ImageFormats, DetectionUsesContentNotNames) {
  test::TempDir dir;
  CreateOptions fixed;
  fixed.size = 2 * kMiB;
  fixed.type = "fixed";
  ASSERT_TRUE(create_image(dir.file("fixed.raw"), "vhd", fixed, false));
  CreateOptions dynamic;
  dynamic.size = 2 * kMiB;
  ASSERT_TRUE(create_image(dir.file("dynamic.img"), "vhd", dynamic, false));
  make_raw(dir.file("plain.vhd"), 2 * kMiB, {1});
  EXPECT_EQ((*detect_format(dir.file("fixed.raw")))->name, "vhd");
  EXPECT_EQ((*detect_format(dir.file("dynamic.img")))->name, "vhd");
  EXPECT_EQ((*detect_format(dir.file("plain.vhd")))->name, "raw");
  // A fixed VHD opens as a VHD of the requested size, not as raw with the footer.
  EXPECT_EQ(open_any(dir.file("fixed.raw"))->size(), 2 * kMiB);
  EXPECT_FALSE(detect_format(dir.file("absent")));
}

TEST(ImageFormats, FormatsWithoutInspectOrCheckGetGenericAnswers) {
  test::TempDir dir;
  make_raw(dir.file("disk.img"), 2 * kMiB, {1});
  ImageFormat bare = raw_image_format();
  bare.name = "bare";
  bare.inspect = nullptr;
  bare.check = nullptr;
  auto info = inspect_image(bare, dir.file("disk.img"));
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->format, "bare");
  EXPECT_EQ(info->virtual_size, 2 * kMiB);
  auto report = check_image(bare, dir.file("disk.img"), false);
  ASSERT_TRUE(report);
  EXPECT_TRUE(report->clean());
  EXPECT_FALSE(check_image(bare, dir.file("absent.img"), false));
}

TEST(Convert, RawToDynamicKeepsZeroBlocksUnallocatedAndRoundTrips) {
  test::TempDir dir;
  auto raw = make_raw(dir.file("in.raw"), 16 * kMiB, {0, 5, 15});
  ConvertOptions options;
  ASSERT_TRUE(convert_image(dir.file("in.raw"), dir.file("out.vhd"), options, nullptr));
  EXPECT_EQ(allocated_blocks(dir.file("out.vhd")), 3u);  // 2 MiB blocks 0, 2 and 7
  EXPECT_EQ(whole(dir.file("out.vhd")), raw);
  ConvertOptions to_raw;
  to_raw.format = "raw";
  ASSERT_TRUE(convert_image(dir.file("out.vhd"), dir.file("back.raw"), to_raw, nullptr));
  EXPECT_EQ(test::read_file(dir.file("back.raw")), raw);
  ConvertOptions fixed;
  fixed.create.type = "fixed";
  ASSERT_TRUE(convert_image(dir.file("out.vhd"), dir.file("fixed.vhd"), fixed, nullptr));
  EXPECT_EQ(whole(dir.file("fixed.vhd")), raw);
  EXPECT_EQ(std::filesystem::file_size(dir.file("fixed.vhd")), 16 * kMiB + 512);
}

TEST(Convert, OddSizedRawIsPaddedToWholeSectorsAndAzureToWholeMiB) {
  test::TempDir dir;
  auto data = test::pattern(kMiB + 1000, 3);
  test::write_file(dir.file("odd.raw"), data);
  ConvertOptions options;
  ASSERT_TRUE(convert_image(dir.file("odd.raw"), dir.file("odd.vhd"), options, nullptr));
  auto image = open_any(dir.file("odd.vhd"));
  EXPECT_EQ(image->size(), kMiB + 1024);
  auto read = test::read_device(*image, 0, kMiB + 1024);
  data.resize(kMiB + 1024);
  EXPECT_EQ(read, data);
  ConvertOptions azure;
  azure.create.azure = true;
  ASSERT_TRUE(convert_image(dir.file("odd.raw"), dir.file("azure.vhd"), azure, nullptr));
  auto azure_image = VhdImage::open(dir.file("azure.vhd"), {});
  ASSERT_TRUE(azure_image);
  EXPECT_EQ((*azure_image)->size(), 2 * kMiB);
  EXPECT_EQ((*azure_image)->footer().disk_type, vhd::DiskType::kFixed);
}

TEST(Convert, ExistingDestinationIsKeptWithoutOverwrite) {
  test::TempDir dir;
  make_raw(dir.file("in.raw"), 2 * kMiB, {1});
  test::write_file(dir.file("out.vhd"), test::pattern(1000, 1));
  ConvertOptions options;
  auto result = convert_image(dir.file("in.raw"), dir.file("out.vhd"), options, nullptr);
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("--force"), std::string::npos);
  EXPECT_EQ(test::read_file(dir.file("out.vhd")), test::pattern(1000, 1));
  options.overwrite = true;
  ASSERT_TRUE(convert_image(dir.file("in.raw"), dir.file("out.vhd"), options, nullptr));
  EXPECT_EQ(whole(dir.file("out.vhd")), test::read_file(dir.file("in.raw")));
}

TEST(Convert, FailureLeavesNoFileBehind) {
  test::TempDir dir;
  make_raw(dir.file("in.raw"), 2 * kMiB, {1});
  ConvertOptions options;
  options.create.block_size = 1000;  // not a power of two
  EXPECT_FALSE(convert_image(dir.file("in.raw"), dir.file("out.vhd"), options, nullptr));
  EXPECT_FALSE(convert_image(dir.file("missing.raw"), dir.file("out2.vhd"), {}, nullptr));
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) {
    names.push_back(entry.path().filename().string());
  }
  EXPECT_EQ(names, std::vector<std::string>{"in.raw"});
}

TEST(Convert, CancelledConversionLeavesNothing) {
  test::TempDir dir;
  make_raw(dir.file("in.raw"), 16 * kMiB, {0, 5, 9, 15});
  int calls = 0;
  auto result = convert_image(dir.file("in.raw"), dir.file("out.vhd"), {},
                              [&](uint64_t, uint64_t) { return ++calls < 2; });
  ASSERT_FALSE(result);
  EXPECT_NE(result.error().message().find("interrupted"), std::string::npos);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()),
                          std::filesystem::directory_iterator()), 1);
}

TEST(Convert, DifferencingChainIsFlattened) {
  test::TempDir dir;
  auto raw = make_raw(dir.file("in.raw"), 8 * kMiB, {1, 6});
  ASSERT_TRUE(convert_image(dir.file("in.raw"), dir.file("base.vhd"), {}, nullptr));
  ASSERT_TRUE(create_differencing(dir.file("child.vhd"), dir.file("base.vhd"), false));
  auto update = test::pattern(4096, 3);
  ASSERT_TRUE(open_any(dir.file("child.vhd"), true)->write(6 * kMiB + 8192, update));
  std::memcpy(raw.data() + 6 * kMiB + 8192, update.data(), update.size());
  ASSERT_TRUE(convert_image(dir.file("child.vhd"), dir.file("flat.vhd"), {}, nullptr));
  auto flat = VhdImage::open(dir.file("flat.vhd"), {});
  ASSERT_TRUE(flat);
  EXPECT_EQ((*flat)->footer().disk_type, vhd::DiskType::kDynamic);
  EXPECT_EQ(whole(dir.file("flat.vhd")), raw);
}

// copy_content's pipeline (a reader, a writer pool): every destination gets every byte,
// serialized destinations get their writes in source order, progress ends at the total, and a
// failing destination stops the copy with its error.
TEST(CopyContent, ManyPiecesReachEveryKindOfDestinationInOrder) {
  test::TempDir dir;
  std::vector<std::byte> raw(40 * kMiB);
  for (uint64_t mib : {0, 1, 2, 3, 7, 8, 13, 21, 22, 23, 24, 25, 26, 39}) {
    auto data = test::pattern(kMiB, mib + 7);
    std::memcpy(raw.data() + mib * kMiB, data.data(), kMiB);
  }
  test::write_file(dir.file("in.raw"), raw);
  auto source = open_any(dir.file("in.raw"));
  ASSERT_TRUE(source);
  for (auto [name, format, type] : {std::tuple{"out.raw", "raw", ""}, {"fixed.vhd", "vhd", "fixed"},
                                    {"dynamic.vhd", "vhd", ""}, {"dynamic.vhdx", "vhdx", ""}}) {
    SCOPED_TRACE(name);
    CreateOptions options;
    options.size = raw.size();
    options.type = type;
    ASSERT_TRUE(create_image(dir.file(name), format, options, false));
    auto destination = open_any(dir.file(name), true);
    ASSERT_TRUE(destination);
    uint64_t last_done = 0;
    bool monotonic = true;
    ASSERT_TRUE(copy_content(*source, *destination, [&](uint64_t done, uint64_t total) {
      monotonic = monotonic && done >= last_done && total == raw.size();
      last_done = done;
      return true;
    }));
    EXPECT_TRUE(monotonic);
    EXPECT_EQ(last_done, raw.size());
    ASSERT_TRUE(destination->flush());
    EXPECT_TRUE(test::read_device(*destination, 0, raw.size()) == raw);
  }
  // The dynamic VHD's blocks were allocated in order: BAT offsets grow with the block index.
  auto vhd = VhdImage::open(dir.file("dynamic.vhd"), {});
  ASSERT_TRUE(vhd);
  uint32_t previous = 0;
  for (uint32_t entry : (*vhd)->bat()) {
    if (entry == vhd::kUnusedBatEntry) continue;
    EXPECT_GT(entry, previous);
    previous = entry;
  }
  // A destination that refuses writes stops the copy with its error.
  auto read_only = open_any(dir.file("out.raw"), false);
  ASSERT_TRUE(read_only);
  auto failed = copy_content(*source, *read_only, nullptr);
  ASSERT_FALSE(failed);
  EXPECT_NE(failed.error().message().find("read-only"), std::string::npos);
}

TEST(Merge, ChildDataLandsInTheParentAndTheChildIsEmptied) {
  test::TempDir dir;
  auto raw = make_raw(dir.file("in.raw"), 8 * kMiB, {0, 3});
  ASSERT_TRUE(convert_image(dir.file("in.raw"), dir.file("base.vhd"), {}, nullptr));
  ASSERT_TRUE(create_differencing(dir.file("child.vhd"), dir.file("base.vhd"), false));
  auto update = test::pattern(1536, 77);
  {
    auto child = open_any(dir.file("child.vhd"), true);
    ASSERT_TRUE(child->write(3 * kMiB + 512, update));
    ASSERT_TRUE(child->write(6 * kMiB, update));
  }
  std::memcpy(raw.data() + 3 * kMiB + 512, update.data(), update.size());
  std::memcpy(raw.data() + 6 * kMiB, update.data(), update.size());
  auto merged = merge_image(dir.file("child.vhd"), nullptr);
  ASSERT_TRUE(merged) << merged.error().message();
  EXPECT_EQ(*merged, 2 * update.size());
  EXPECT_EQ(whole(dir.file("base.vhd")), raw);
  EXPECT_EQ(whole(dir.file("child.vhd")), raw);
  EXPECT_EQ(allocated_blocks(dir.file("child.vhd")), 0u);
  EXPECT_FALSE(merge_image(dir.file("base.vhd"), nullptr)) << "merged a disk with no parent";
}

TEST(Resize, FixedGrowsAndShrinksOnlyWithPermission) {
  test::TempDir dir;
  CreateOptions options;
  options.size = 4 * kMiB;
  options.type = "fixed";
  ASSERT_TRUE(create_image(dir.file("f.vhd"), "vhd", options, false));
  auto data = test::pattern(4 * kMiB, 5);
  ASSERT_TRUE(open_any(dir.file("f.vhd"), true)->write(0, data));
  ASSERT_TRUE(resize_image(dir.file("f.vhd"), 6 * kMiB, false, nullptr));
  auto grown = whole(dir.file("f.vhd"));
  ASSERT_EQ(grown.size(), 6 * kMiB);
  EXPECT_TRUE(std::equal(data.begin(), data.end(), grown.begin()));
  EXPECT_TRUE(is_all_zero(std::span(grown).subspan(4 * kMiB)));  // the old footer is gone
  auto refused = resize_image(dir.file("f.vhd"), 2 * kMiB, false, nullptr);
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().message().find("--shrink"), std::string::npos);
  ASSERT_TRUE(resize_image(dir.file("f.vhd"), 2 * kMiB, true, nullptr));
  EXPECT_EQ(whole(dir.file("f.vhd")), std::vector<std::byte>(data.begin(), data.begin() + 2 * kMiB));
  EXPECT_TRUE(check_vhd(dir.file("f.vhd"), false)->clean());
}

TEST(Resize, DynamicGrowsInPlaceOrByRewriteAndKeepsItsIdentity) {
  test::TempDir dir;
  CreateOptions options;
  options.size = 4 * kMiB;
  ASSERT_TRUE(create_image(dir.file("d.vhd"), "vhd", options, false));
  auto data = test::pattern(3 * kMiB, 6);
  ASSERT_TRUE(open_any(dir.file("d.vhd"), true)->write(kMiB, data));
  auto id = (*VhdImage::open(dir.file("d.vhd"), {}))->footer().unique_id;
  // 2 BAT entries fit 128 in their sector: in place.
  ASSERT_TRUE(resize_image(dir.file("d.vhd"), 100 * kMiB, false, nullptr));
  // 1000 entries do not: rewritten.
  ASSERT_TRUE(resize_image(dir.file("d.vhd"), 2000 * kMiB, false, nullptr));
  auto image = VhdImage::open(dir.file("d.vhd"), {});
  ASSERT_TRUE(image);
  EXPECT_EQ((*image)->size(), 2000 * kMiB);
  EXPECT_EQ((*image)->footer().unique_id, id);
  EXPECT_EQ(test::read_device(**image, kMiB, 3 * kMiB), data);
  EXPECT_TRUE(is_all_zero(test::read_device(**image, 4 * kMiB, 96 * kMiB)));
  EXPECT_TRUE(check_vhd(dir.file("d.vhd"), false)->clean());
  image->reset();  // a reader's lock refuses the resize
  // Shrinking inside a block zeroes the rest so growing again shows zeros.
  ASSERT_TRUE(resize_image(dir.file("d.vhd"), 3 * kMiB, true, nullptr));
  ASSERT_TRUE(resize_image(dir.file("d.vhd"), 4 * kMiB, false, nullptr));
  auto again = whole(dir.file("d.vhd"));
  EXPECT_TRUE(std::equal(data.begin(), data.begin() + 2 * kMiB, again.begin() + kMiB));
  EXPECT_TRUE(is_all_zero(std::span(again).subspan(3 * kMiB)));
}

TEST(Compact, DropsZeroBlocksAndUnusedSpaceKeepingContent) {
  test::TempDir dir;
  CreateOptions options;
  options.size = 16 * kMiB;
  ASSERT_TRUE(create_image(dir.file("d.vhd"), "vhd", options, false));
  {
    auto image = open_any(dir.file("d.vhd"), true);
    ASSERT_TRUE(image->write(0, test::pattern(8 * kMiB, 8)));
    ASSERT_TRUE(image->write(2 * kMiB, std::vector<std::byte>(4 * kMiB)));  // blocks 1, 2 zero
    ASSERT_TRUE(image->discard(6 * kMiB, 2 * kMiB));                         // block 3 dropped
  }
  auto before = whole(dir.file("d.vhd"));
  auto sizes = compact_image(dir.file("d.vhd"), nullptr);
  ASSERT_TRUE(sizes) << sizes.error().message();
  EXPECT_LT(sizes->second, sizes->first);
  EXPECT_EQ(allocated_blocks(dir.file("d.vhd")), 1u);
  EXPECT_EQ(whole(dir.file("d.vhd")), before);
}

TEST(Compact, DifferencingDiskKeepsItsParentAndItsZeroMasks) {
  test::TempDir dir;
  make_raw(dir.file("in.raw"), 4 * kMiB, {0, 1, 2, 3});
  ASSERT_TRUE(convert_image(dir.file("in.raw"), dir.file("base.vhd"), {}, nullptr));
  ASSERT_TRUE(create_differencing(dir.file("child.vhd"), dir.file("base.vhd"), false));
  {
    auto child = open_any(dir.file("child.vhd"), true);
    ASSERT_TRUE(child->write(kMiB, std::vector<std::byte>(4096)));
    ASSERT_TRUE(child->write(3 * kMiB, test::pattern(512, 4)));
  }
  auto before = whole(dir.file("child.vhd"));
  ASSERT_TRUE(compact_image(dir.file("child.vhd"), nullptr));
  EXPECT_EQ(whole(dir.file("child.vhd")), before);
}

TEST(RawImage, HolesAreReportedAsZeroExtents) {
  test::TempDir dir;
  auto file = HostFile::open(dir.file("sparse.raw"), HostFile::Mode::kCreateExclusive);
  ASSERT_TRUE(file);
  auto raw = RawImage::create(std::move(*file), 64 * kMiB);
  ASSERT_TRUE(raw);
  ASSERT_TRUE((*raw)->write(32 * kMiB, test::pattern(kMiB, 1)));
  auto extent = (*raw)->map_extent(0, 64 * kMiB);
  ASSERT_TRUE(extent);
  // File systems without SEEK_HOLE report all data, which is still correct.
  if (extent->zero) {
    EXPECT_LE(extent->length, 32 * kMiB);
  }
  EXPECT_EQ(test::read_device(**raw, 32 * kMiB, kMiB), test::pattern(kMiB, 1));
}

}  // namespace
}  // namespace lamina::storage
