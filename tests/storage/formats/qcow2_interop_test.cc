// qcow2 images made by qemu-img read back by Lamina byte for byte, and the images Lamina
// must refuse (encryption, external data files) or reject as corrupt.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "base/byte_order.h"
#include "image_builders.h"
#include "image_test_support.h"
#include "storage/qcow2_image.h"

namespace lamina::storage {
namespace {

using testing::Region;
using testing::TempDir;

constexpr uint64_t kSize = 8u << 20;
const std::vector<Region> kRegions = {
    {0, 4096}, {65536 - 700, 3000}, {1u << 20, 300000}, {5u << 20, 1}, {kSize - 70000, 70000}};

class Qcow2Interop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
    testing::write_pattern_file(truth_, kSize, kRegions, 5);
  }
  std::string convert(const std::string& options, const std::string& name) {
    auto out = dir_ / name;
    EXPECT_EQ(testing::run_command(fmt::format("qemu-img convert -f raw -O qcow2 {} {} {}", options,
                                               truth_.string(), out.string())),
              0);
    return out.string();
  }
  void expect_same(const std::filesystem::path& image, const std::filesystem::path& truth) {
    auto device = open_qcow2(image);
    ASSERT_TRUE(device) << device.error().message();
    EXPECT_EQ((*device)->size(), std::filesystem::file_size(truth));
    EXPECT_EQ(testing::compare_with_truth(**device, truth, 0, (*device)->size(), 65536 + 511), "");
    EXPECT_EQ(testing::compare_with_truth(**device, truth, (1u << 20) - 4096, 1u << 20, 4096), "");
  }

  TempDir dir_;
  std::filesystem::path truth_ = dir_ / "truth.raw";
};

TEST_F(Qcow2Interop, ReadsVersion3Image) { expect_same(convert("", "plain.qcow2"), truth_); }

TEST_F(Qcow2Interop, ReadsVersion2ImageWithSmallClusters) {
  expect_same(convert("-o compat=0.10,cluster_size=512", "v2.qcow2"), truth_);
  auto info = inspect_qcow2(dir_ / "v2.qcow2");
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->version, 2u);
  EXPECT_EQ(info->cluster_size, 512u);
}

TEST_F(Qcow2Interop, ReadsCompressedClusters) {
  expect_same(convert("-c", "compressed.qcow2"), truth_);
  expect_same(convert("-c -o cluster_size=2M", "compressed-2m.qcow2"), truth_);
}

TEST_F(Qcow2Interop, ReportsInfo) {
  auto info = inspect_qcow2(convert("-o cluster_size=4096", "info.qcow2"));
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->version, 3u);
  EXPECT_EQ(info->virtual_size, kSize);
  EXPECT_EQ(info->cluster_size, 4096u);
  EXPECT_TRUE(info->backing_file.empty());
  // Clusters touched by the regions (4 KiB each), as qemu-img convert allocates them.
  EXPECT_GE(info->allocated_bytes, 300000u);
  EXPECT_LT(info->allocated_bytes, 500000u);
}

TEST_F(Qcow2Interop, ReadsThroughBackingChainWithZeroClusters) {
  std::string base = convert("", "base.qcow2");
  auto middle = dir_ / "middle.qcow2";
  auto top = dir_ / "top.qcow2";
  ASSERT_EQ(testing::run_command(
                fmt::format("qemu-img create -f qcow2 -b base.qcow2 -F qcow2 {}", middle.string())),
            0);
  ASSERT_EQ(testing::run_command(fmt::format("qemu-io -f qcow2 -c 'write -P 0xab 1048576 65536' {}",
                                             middle.string())),
            0);
  // A relative backing name in another image; zero clusters hide the backing data.
  ASSERT_EQ(testing::run_command(
                fmt::format("qemu-img create -f qcow2 -b middle.qcow2 -F qcow2 {}", top.string())),
            0);
  ASSERT_EQ(testing::run_command(fmt::format(
                "qemu-io -f qcow2 -c 'write -z 1114112 65536' -c 'write -P 0x5a 7000 3000' {}",
                top.string())),
            0);
  auto expected = testing::read_whole_file(truth_);
  std::fill_n(expected.begin() + (1 << 20), 65536, std::byte{0xab});
  std::fill_n(expected.begin() + 1114112, 65536, std::byte{0});
  std::fill_n(expected.begin() + 7000, 3000, std::byte{0x5a});
  auto expected_path = dir_ / "expected.raw";
  testing::write_whole_file(expected_path, expected);
  expect_same(top, expected_path);
  auto info = inspect_qcow2(top);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->backing_file, "middle.qcow2");
  EXPECT_EQ(info->backing_format, "qcow2");
}

TEST_F(Qcow2Interop, ReadsRawBackingFileAndShorterBacking) {
  auto small = dir_ / "small.raw";
  testing::write_pattern_file(small, 1u << 20, {{0, 1u << 20}}, 9);
  auto top = dir_ / "top.qcow2";
  ASSERT_EQ(testing::run_command(
                fmt::format("qemu-img create -f qcow2 -b small.raw -F raw {} 2M", top.string())),
            0);
  auto expected = testing::read_whole_file(small);
  expected.resize(2u << 20);
  auto expected_path = dir_ / "expected.raw";
  testing::write_whole_file(expected_path, expected);
  expect_same(top, expected_path);
}

TEST_F(Qcow2Interop, RefusesBackingLoop) {
  auto a = dir_ / "a.qcow2";
  auto b = dir_ / "b.qcow2";
  ASSERT_EQ(testing::run_command(
                fmt::format("qemu-img create -f qcow2 -u -b b.qcow2 -F qcow2 {} 1M", a.string())),
            0);
  ASSERT_EQ(testing::run_command(
                fmt::format("qemu-img create -f qcow2 -u -b a.qcow2 -F qcow2 {} 1M", b.string())),
            0);
  auto device = open_qcow2(a);
  ASSERT_FALSE(device);
  EXPECT_NE(device.error().message().find("deeper"), std::string::npos) << device.error().message();
}

TEST_F(Qcow2Interop, RefusesEncryptionAndExternalData) {
  auto encrypted = dir_ / "enc.qcow2";
  ASSERT_EQ(
      testing::run_command(fmt::format("qemu-img create -f qcow2 --object secret,id=s0,data=123456 "
                                       "-o encrypt.format=aes,encrypt.key-secret=s0 {} 1M",
                                       encrypted.string())),
      0);
  auto device = open_qcow2(encrypted);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(device.error().message().find("encrypted"), std::string::npos);

  auto external = dir_ / "ext.qcow2";
  ASSERT_EQ(testing::run_command(fmt::format("qemu-img create -f qcow2 -o data_file={} {} 1M",
                                             (dir_ / "ext.raw").string(), external.string())),
            0);
  device = open_qcow2(external);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code(), ErrorCode::kUnsupported);
  EXPECT_NE(device.error().message().find("external data file"), std::string::npos);
}

TEST_F(Qcow2Interop, RejectsCorruptTables) {
  std::string image = convert("", "victim.qcow2");
  auto bytes = testing::read_whole_file(image);
  uint64_t l1_offset = load_be<uint64_t>(&bytes[40]);

  auto broken = dir_ / "broken.qcow2";
  // An L1 entry pointing far past the end of the file.
  auto copy = bytes;
  store_be<uint64_t>(&copy[l1_offset], 0x7fff0000ull);
  testing::write_whole_file(broken, copy);
  auto device = open_qcow2(broken);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code(), ErrorCode::kCorrupt);
  EXPECT_NE(device.error().message().find("broken.qcow2"), std::string::npos);

  // An L1 entry pointing at the header cluster.
  copy = bytes;
  store_be<uint64_t>(&copy[l1_offset], 0);
  store_be<uint64_t>(&copy[l1_offset], 0x8000000000000000ull);
  copy[l1_offset + 7] = std::byte{0};
  testing::write_whole_file(broken, copy);
  // (offset 0 with only the copied flag means "unallocated": still readable, as zeros)
  device = open_qcow2(broken);
  ASSERT_TRUE(device) << device.error().message();

  // Truncated: the L2 tables and data are gone.
  testing::write_whole_file(broken, std::span(bytes).first(l1_offset + 8));
  device = open_qcow2(broken);
  EXPECT_FALSE(device);

  // cluster_bits out of range.
  copy = bytes;
  store_be<uint32_t>(&copy[20], 40);
  testing::write_whole_file(broken, copy);
  device = open_qcow2(broken);
  ASSERT_FALSE(device);
  EXPECT_NE(device.error().message().find("cluster_bits"), std::string::npos);

  // An L1 table that claims far more entries than the file can hold.
  copy = bytes;
  store_be<uint32_t>(&copy[36], 0x7fffffff);
  testing::write_whole_file(broken, copy);
  EXPECT_FALSE(open_qcow2(broken));

  // An unknown incompatible feature bit.
  copy = bytes;
  copy[72] = std::byte{0x80};
  testing::write_whole_file(broken, copy);
  device = open_qcow2(broken);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code(), ErrorCode::kUnsupported);
}

TEST_F(Qcow2Interop, RejectsCorruptDataPointer) {
  std::string image = convert("-o cluster_size=4096", "victim.qcow2");
  auto bytes = testing::read_whole_file(image);
  uint64_t l1_offset = load_be<uint64_t>(&bytes[40]);
  uint64_t l2_offset = load_be<uint64_t>(&bytes[l1_offset]) & 0x00fffffffffffe00ull;
  store_be<uint64_t>(&bytes[l2_offset], 0x8000000000000000ull | (bytes.size() + 4096 * 16));
  auto broken = dir_ / "broken.qcow2";
  testing::write_whole_file(broken, bytes);
  auto device = open_qcow2(broken);
  ASSERT_TRUE(device) << device.error().message();
  std::vector<std::byte> buffer(512);
  auto result = (*device)->read(0, buffer);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kCorrupt);
  // Other clusters stay readable.
  EXPECT_TRUE((*device)->read(1u << 20, buffer));
}

}  // namespace
}  // namespace lamina::storage

namespace lamina::storage {
namespace {

// The spec-built images the unit tests use are read the same way by qemu-img, so those tests
// do not rest on Lamina's own reading of the specs alone.
TEST(BuiltImagesInterop, QemuReadsTheSpecBuiltImages) {
  if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
  testing::TempDir dir;
  struct Case {
    const char* name;
    testing::BuiltImage image;
  };
  Case cases[] = {{"v2.qcow2", testing::build_qcow2(2)},
                  {"v3.qcow2", testing::build_qcow2(3)},
                  {"sparse.vmdk", testing::build_vmdk_sparse(false)},
                  {"stream.vmdk", testing::build_vmdk_sparse(true)}};
  for (const Case& item : cases) {
    SCOPED_TRACE(item.name);
    auto image = dir / item.name;
    auto expected = dir / "expected.raw";
    auto out = dir / "out.raw";
    testing::write_whole_file(image, item.image.file);
    testing::write_whole_file(expected, item.image.expected);
    std::filesystem::remove(out);
    ASSERT_EQ(testing::run_command(
                  fmt::format("qemu-img convert -O raw {} {}", image.string(), out.string())),
              0);
    EXPECT_EQ(testing::first_difference(out, expected), "");
  }
}

}  // namespace
}  // namespace lamina::storage

#include "storage/image_format.h"

namespace lamina::storage {
namespace {

// The qcow2 table row follows a chain of qcow2 files down to a raw base, for inspect and reads.
TEST(Qcow2EntryInterop, InspectAndOpenFollowTheChain) {
  if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
  testing::TempDir dir;
  testing::write_pattern_file(dir / "base.raw", 1u << 20, {{0, 1u << 20}}, 41);
  ASSERT_EQ(testing::run_command(
                fmt::format("cd {} && qemu-img create -f qcow2 -b base.raw -F raw middle.qcow2 && "
                            "qemu-img create -f qcow2 -b middle.qcow2 -F qcow2 top.qcow2",
                            dir.path().string())),
            0);
  ImageFormat format = qcow2_image_format();
  auto info = format.inspect((dir / "top.qcow2").string(), {});
  ASSERT_TRUE(info) << info.error().message();
  ASSERT_EQ(info->backing_chain.size(), 2u);
  EXPECT_EQ(info->backing_chain[0].format, "qcow2");
  EXPECT_EQ(info->backing_chain[1].format, "raw");
  auto device = format.open((dir / "top.qcow2").string(), false, {});
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ(testing::compare_with_truth(**device, dir / "base.raw", 0, 1u << 20, 65536), "");
}

}  // namespace
}  // namespace lamina::storage
