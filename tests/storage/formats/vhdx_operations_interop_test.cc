// VHDX resize, compact and merge against qemu-img: what Lamina leaves passes `qemu-img check`,
// has the size `qemu-img info` reports and the content `qemu-img compare` finds, for images
// Lamina made and images qemu-img made. (qemu 7.2 cannot open differencing VHDX, so merge is
// checked on the parent it leaves.)
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "image_test_support.h"
#include "storage/image_operations.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::Region;
using testing::TempDir;

constexpr uint64_t kMiB = 1u << 20;
constexpr uint64_t kSize = 24 * kMiB;
const std::vector<Region> kRegions = {{0, 4096},
                                      {kMiB - 4096, 300032},
                                      {5 * kMiB, 512},
                                      {9 * kMiB + 7 * 512, 2 * kMiB},
                                      {kSize - 70144, 70144}};

class VhdxOperationsInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
    testing::write_pattern_file(truth_, kSize, kRegions, 5);
  }
  // A Lamina-made image holding the truth.
  void make_image(const std::filesystem::path& path, VhdxType type) {
    VhdxOptions options;
    options.type = type;
    options.block_size = 2 * kMiB;
    ASSERT_TRUE(create_vhdx(path, kSize, options));
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device);
    auto bytes = testing::read_whole_file(truth_);
    ASSERT_TRUE((*device)->write(0, bytes));
  }
  // The truth cut or zero-extended to `size`.
  void resize_truth(uint64_t size) { std::filesystem::resize_file(truth_, size); }
  void expect_qemu_agrees(const std::filesystem::path& image, uint64_t size) {
    EXPECT_EQ(testing::run_command(fmt::format("qemu-img check -f vhdx {}", image.string())), 0);
    EXPECT_EQ(testing::run_command(
                  fmt::format("qemu-img info -f vhdx --output=json {} | grep -q '\"virtual-size\": {},'",
                              image.string(), size)),
              0);
    EXPECT_EQ(testing::run_command(fmt::format("qemu-img compare -f raw -F vhdx {} {}",
                                               truth_.string(), image.string())),
              0);
  }

  TempDir dir_;
  std::filesystem::path truth_ = dir_ / "truth.raw";
  std::filesystem::path image_ = dir_ / "disk.vhdx";
};

TEST_F(VhdxOperationsInterop, ResizedImagesPassQemuCheck) {
  for (VhdxType type : {VhdxType::kDynamic, VhdxType::kFixed}) {
    SCOPED_TRACE(type == VhdxType::kFixed ? "fixed" : "dynamic");
    std::filesystem::remove(image_);
    testing::write_pattern_file(truth_, kSize, kRegions, 5);
    make_image(image_, type);
    ASSERT_TRUE(resize_image(image_, 41 * kMiB, false, {}));
    resize_truth(41 * kMiB);
    expect_qemu_agrees(image_, 41 * kMiB);
    // Shrink into the middle of a block, then grow again: the dropped data must not return.
    ASSERT_TRUE(resize_image(image_, 10 * kMiB + 1536, true, {}));
    resize_truth(10 * kMiB + 1536);
    expect_qemu_agrees(image_, 10 * kMiB + 1536);
    ASSERT_TRUE(resize_image(image_, 16 * kMiB, false, {}));
    resize_truth(16 * kMiB);
    expect_qemu_agrees(image_, 16 * kMiB);
  }
}

TEST_F(VhdxOperationsInterop, ResizesImagesQemuMade) {
  ASSERT_EQ(testing::run_command(fmt::format("qemu-img convert -f raw -O vhdx -o block_size=1M {} {}",
                                             truth_.string(), image_.string())),
            0);
  ASSERT_TRUE(resize_image(image_, 30 * kMiB, false, {}));
  resize_truth(30 * kMiB);
  expect_qemu_agrees(image_, 30 * kMiB);
  auto compacted = compact_image(image_, {});
  ASSERT_TRUE(compacted) << compacted.error().message();
  expect_qemu_agrees(image_, 30 * kMiB);
}

TEST_F(VhdxOperationsInterop, CompactedImagesPassQemuCheck) {
  make_image(image_, VhdxType::kDynamic);
  {
    // Zeros written over two whole blocks and the middle of another: data, but all zero.
    auto device = open_vhdx(image_, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(8 * kMiB, std::vector<std::byte>(4 * kMiB)));
  }
  auto truth = testing::read_whole_file(truth_);
  std::fill_n(truth.begin() + 8 * kMiB, 4 * kMiB, std::byte{0});
  testing::write_whole_file(truth_, truth);
  uint64_t allocated = inspect_vhdx(image_)->allocated_bytes;
  auto sizes = compact_image(image_, {});
  ASSERT_TRUE(sizes) << sizes.error().message();
  EXPECT_LT(sizes->second, sizes->first);
  EXPECT_LT(inspect_vhdx(image_)->allocated_bytes, allocated);
  expect_qemu_agrees(image_, kSize);
}

TEST_F(VhdxOperationsInterop, MergedParentPassesQemuCheck) {
  make_image(image_, VhdxType::kDynamic);
  auto child = dir_ / "child.vhdx";
  ASSERT_TRUE(create_differencing(child, image_, false));
  auto expected = testing::read_whole_file(truth_);
  {
    auto device = open_vhdx(child, false);
    ASSERT_TRUE(device);
    std::vector<std::byte> data(3 * kMiB + 1024, std::byte{0x77});
    ASSERT_TRUE((*device)->write(4 * kMiB - 512, data));
    std::copy(data.begin(), data.end(), expected.begin() + 4 * kMiB - 512);
    ASSERT_TRUE((*device)->write_zeroes(20 * kMiB, 4 * kMiB, true));
    std::fill_n(expected.begin() + 20 * kMiB, 4 * kMiB, std::byte{0});
  }
  auto merged = merge_image(child, {});
  ASSERT_TRUE(merged) << merged.error().message();
  testing::write_whole_file(truth_, expected);
  expect_qemu_agrees(image_, kSize);
  auto device = open_vhdx(child, true);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ(testing::compare_with_truth(**device, truth_, 0, kSize, kMiB + 512), "");
}

}  // namespace
}  // namespace lamina::storage
