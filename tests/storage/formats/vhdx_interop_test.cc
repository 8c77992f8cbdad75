// VHDX against qemu-img both ways: Lamina reads what qemu-img writes, qemu-img reads (and
// checks) what Lamina writes, and qemu replays a log Lamina left behind.
#include <gtest/gtest.h>

#include <fmt/format.h>
#include <cstdio>

#include "base/byte_order.h"
#include "image_test_support.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::Region;
using testing::TempDir;

constexpr uint64_t kSize = 24u << 20;
const std::vector<Region> kRegions = {{0, 4096},
                                      {65536 - 512, 3072},
                                      {(1u << 20) - 4096, 300032},
                                      {5u << 20, 512},
                                      {(9u << 20) + 7 * 512, 2u << 20},
                                      {kSize - 70144, 70144}};

class VhdxInterop : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::have_qemu_img()) GTEST_SKIP() << "qemu-img is not installed";
    testing::write_pattern_file(truth_, kSize, kRegions, 3);
  }
  // Writes the truth's regions into a Lamina-opened device.
  void write_regions(BlockDevice& device) {
    for (const Region& region : kRegions) {
      auto bytes = testing::read_file_range(truth_, region.offset, region.length);
      auto written = device.write(region.offset, bytes);
      ASSERT_TRUE(written) << written.error().message();
    }
    ASSERT_TRUE(device.flush());
  }
  void expect_qemu_reads_truth(const std::filesystem::path& image) {
    EXPECT_EQ(testing::run_command(fmt::format("qemu-img check -f vhdx {}", image.string())), 0);
    auto raw = dir_ / "qemu-out.raw";
    ASSERT_EQ(testing::run_command(fmt::format("qemu-img convert -f vhdx -O raw {} {}",
                                               image.string(), raw.string())),
              0);
    EXPECT_EQ(testing::first_difference(raw, truth_), "");
  }

  TempDir dir_;
  std::filesystem::path truth_ = dir_ / "truth.raw";
};

TEST_F(VhdxInterop, ReadsQemuImages) {
  for (std::string options :
       {"", "-o block_size=1M", "-o subformat=fixed", "-o block_size=8M,log_size=4M"}) {
    SCOPED_TRACE(options);
    auto image = dir_ / "qemu.vhdx";
    std::filesystem::remove(image);
    ASSERT_EQ(testing::run_command(fmt::format("qemu-img convert -f raw -O vhdx {} {} {}", options,
                                               truth_.string(), image.string())),
              0);
    auto device = open_vhdx(image, true);
    ASSERT_TRUE(device) << device.error().message();
    EXPECT_EQ((*device)->size(), kSize);
    EXPECT_EQ(testing::compare_with_truth(**device, truth_, 0, kSize, (1u << 20) + 512), "");
    EXPECT_EQ(testing::compare_with_truth(**device, truth_, (1u << 20) - 8192, 16384, 1024), "");
  }
}

TEST_F(VhdxInterop, WritesIntoQemuImage) {
  auto image = dir_ / "qemu.vhdx";
  ASSERT_EQ(testing::run_command(fmt::format("qemu-img create -f vhdx -o block_size=1M {} {}",
                                             image.string(), kSize)),
            0);
  {
    auto device = open_vhdx(image, false);
    ASSERT_TRUE(device) << device.error().message();
    write_regions(**device);
  }
  expect_qemu_reads_truth(image);
}

TEST_F(VhdxInterop, QemuReadsDynamicAndFixedImagesLaminaWrote) {
  for (VhdxType type : {VhdxType::kDynamic, VhdxType::kFixed}) {
    for (uint32_t logical : {512u, 4096u}) {
      SCOPED_TRACE(fmt::format("type {} logical {}", static_cast<int>(type), logical));
      auto image = dir_ / "lamina.vhdx";
      std::filesystem::remove(image);
      VhdxOptions options;
      options.type = type;
      options.block_size = 2u << 20;
      options.logical_sector_size = logical;
      auto created = create_vhdx(image, kSize, options);
      ASSERT_TRUE(created) << created.error().message();
      {
        auto device = open_vhdx(image, false);
        ASSERT_TRUE(device) << device.error().message();
        write_regions(**device);
      }
      {
        auto device = open_vhdx(image, true);
        ASSERT_TRUE(device) << device.error().message();
        EXPECT_EQ(testing::compare_with_truth(**device, truth_, 0, kSize, (1u << 20) + 4096), "");
      }
      // qemu 7.2 refuses 4096-byte logical sectors ("Operation not supported").
      if (logical == 512) expect_qemu_reads_truth(image);
      auto info = inspect_vhdx(image);
      ASSERT_TRUE(info) << info.error().message();
      EXPECT_EQ(info->type, type);
      EXPECT_EQ(info->logical_sector_size, logical);
      EXPECT_FALSE(info->log_replay_pending);
      if (logical == 512) {
        EXPECT_EQ(testing::run_command(fmt::format(
                      "qemu-img info -f vhdx {} | grep -q 'virtual size: 24 MiB'", image.string())),
                  0);
      }
    }
  }
}

TEST_F(VhdxInterop, LogLeftByLaminaIsReplayedByQemuAndLamina) {
  auto image = dir_ / "lamina.vhdx";
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(image, kSize, options));
  auto crashed = dir_ / "crashed.vhdx";
  {
    auto device = open_vhdx(image, false);
    ASSERT_TRUE(device) << device.error().message();
    write_regions(**device);
    // A copy taken while the image is open looks like a crash: the LogGuid is still set.
    std::filesystem::copy_file(image, crashed);
  }
  // Lose the BAT's final location as a crash between the log flush and the BAT write would.
  auto bytes = testing::read_whole_file(crashed);
  std::fill_n(bytes.begin() + (3u << 20), 4096, std::byte{0});
  testing::write_whole_file(crashed, bytes);

  auto info = inspect_vhdx(crashed);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(info->log_replay_pending);

  // Read-only: replayed in memory, the file is not touched.
  {
    auto device = open_vhdx(crashed, true);
    ASSERT_TRUE(device) << device.error().message();
    EXPECT_EQ(testing::compare_with_truth(**device, truth_, 0, kSize, 1u << 20), "");
  }
  EXPECT_TRUE(testing::read_whole_file(crashed) == bytes) << "a read-only open changed the file";

  // qemu replays the same log.
  auto for_qemu = dir_ / "for-qemu.vhdx";
  std::filesystem::copy_file(crashed, for_qemu);
  ASSERT_EQ(
      testing::run_command(fmt::format("qemu-img check -r all -f vhdx {}", for_qemu.string())), 0);
  expect_qemu_reads_truth(for_qemu);

  // Read-write: replayed into the file and the LogGuid cleared.
  {
    auto device = open_vhdx(crashed, false);
    ASSERT_TRUE(device) << device.error().message();
    EXPECT_EQ(testing::compare_with_truth(**device, truth_, 0, kSize, 1u << 20), "");
  }
  info = inspect_vhdx(crashed);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->log_replay_pending);
  expect_qemu_reads_truth(crashed);
}

TEST_F(VhdxInterop, DiscardReadsAsZerosForQemuToo) {
  auto image = dir_ / "lamina.vhdx";
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(image, kSize, options));
  {
    auto device = open_vhdx(image, false);
    ASSERT_TRUE(device);
    write_regions(**device);
    ASSERT_TRUE((*device)->discard((1u << 20), 65536));
    ASSERT_TRUE((*device)->flush());
  }
  auto expected = testing::read_whole_file(truth_);
  std::fill_n(expected.begin() + (1 << 20), 65536, std::byte{0});
  testing::write_whole_file(truth_, expected);
  expect_qemu_reads_truth(image);
}

// write_zeroes leaves PAYLOAD_BLOCK_ZERO entries and zeroed ranges that qemu reads as zeros
// and accepts in check.
TEST_F(VhdxInterop, ZeroedBlocksReadAsZerosForQemu) {
  auto image = dir_ / "zeroed.vhdx";
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(image, kSize, options));
  auto truth = testing::read_whole_file(truth_);
  std::fill(truth.begin(), truth.end(), std::byte{0x5a});
  {
    auto device = open_vhdx(image, false);
    ASSERT_TRUE(device) << device.error().message();
    ASSERT_TRUE((*device)->write(0, truth));
    // Whole blocks 3..5 unmapped, part of block 8 zeroed in place, block 10 kept allocated.
    ASSERT_TRUE((*device)->write_zeroes(3u << 20, 3u << 20, true));
    ASSERT_TRUE((*device)->write_zeroes((8u << 20) + 4096, 8192, true));
    ASSERT_TRUE((*device)->write_zeroes(10u << 20, 1u << 20, false));
    ASSERT_TRUE((*device)->flush());
  }
  std::fill_n(truth.begin() + (3u << 20), 3u << 20, std::byte{0});
  std::fill_n(truth.begin() + (8u << 20) + 4096, 8192, std::byte{0});
  std::fill_n(truth.begin() + (10u << 20), 1u << 20, std::byte{0});
  testing::write_whole_file(truth_, truth);
  auto info = inspect_vhdx(image);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->allocated_bytes, kSize - (3u << 20));
  expect_qemu_reads_truth(image);
}

}  // namespace
}  // namespace lamina::storage

namespace lamina::storage {
namespace {

// Runs a command and returns what it printed (empty when it failed).
std::string command_output(const std::string& command) {
  std::string output;
  if (FILE* pipe = ::popen((command + " 2>/dev/null").c_str(), "r")) {
    char buffer[4096];
    size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
    if (::pclose(pipe) != 0) output.clear();
  }
  return output;
}

// libvhdi's vhdiinfo, a second independent reader, agrees on type, size and the parent link
// (qemu cannot open differencing VHDX at all).
TEST(VhdxLibvhdiInterop, VhdiinfoUnderstandsFixedDynamicAndDifferencingImages) {
  if (testing::run_command("vhdiinfo -V") != 0)
    GTEST_SKIP() << "vhdiinfo (libvhdi-utils) is not installed";
  testing::TempDir dir;
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(dir / "dynamic.vhdx", 8u << 20, options));
  options.type = VhdxType::kFixed;
  ASSERT_TRUE(create_vhdx(dir / "fixed.vhdx", 8u << 20, options));
  ASSERT_TRUE(create_vhdx_differencing(dir / "child.vhdx", dir / "dynamic.vhdx"));

  std::string dynamic = command_output("vhdiinfo " + (dir / "dynamic.vhdx").string());
  EXPECT_NE(dynamic.find("Disk type\t\t: Dynamic"), std::string::npos) << dynamic;
  EXPECT_NE(dynamic.find("(8388608 bytes)"), std::string::npos) << dynamic;
  std::string fixed = command_output("vhdiinfo " + (dir / "fixed.vhdx").string());
  EXPECT_NE(fixed.find("Disk type\t\t: Fixed"), std::string::npos) << fixed;
  std::string child = command_output("vhdiinfo " + (dir / "child.vhdx").string());
  EXPECT_NE(child.find("Disk type\t\t: Differential"), std::string::npos) << child;
  // The child's parent identifier is the parent's DataWriteGuid, which libvhdi shows as the
  // parent's identifier.
  auto info = inspect_vhdx(dir / "dynamic.vhdx");
  ASSERT_TRUE(info);
  std::string guid = info->data_write_guid.substr(1, 36);
  EXPECT_NE(child.find("Parent identifier\t: " + guid), std::string::npos) << child;
  EXPECT_NE(dynamic.find("Identifier\t\t: " + guid), std::string::npos) << dynamic;
}

}  // namespace
}  // namespace lamina::storage

namespace lamina::storage {
namespace {

// Unmounts on scope exit, so a failing test never leaves a FUSE mount behind.
class VhdiMount {
 public:
  VhdiMount(const std::filesystem::path& image, const std::filesystem::path& mount_point)
      : mount_point_(mount_point) {
    std::filesystem::create_directories(mount_point);
    mounted_ = testing::run_command(fmt::format("timeout 20 vhdimount {} {}", image.string(),
                                                mount_point.string())) == 0 &&
               std::filesystem::exists(mount_point / "vhdi1");
  }
  ~VhdiMount() {
    if (mounted_) (void)testing::run_command("umount " + mount_point_.string());
  }
  VhdiMount(const VhdiMount&) = delete;
  VhdiMount& operator=(const VhdiMount&) = delete;
  bool mounted() const { return mounted_; }
  // vhdimount shows each layer of a chain as vhdi1 (the base) .. vhdiN (the image given).
  std::filesystem::path top_layer() const {
    int layer = 1;
    while (std::filesystem::exists(mount_point_ / ("vhdi" + std::to_string(layer + 1)))) ++layer;
    return mount_point_ / ("vhdi" + std::to_string(layer));
  }

 private:
  std::filesystem::path mount_point_;
  bool mounted_ = false;
};

// libvhdi reads the data of a differencing chain Lamina wrote (parent blocks, child sectors
// through sector bitmaps) the same as Lamina does.
TEST(VhdxLibvhdiInterop, VhdimountReadsADifferencingChainLaminaWrote) {
  if (testing::run_command("vhdimount -V") != 0 || !std::filesystem::exists("/dev/fuse")) {
    GTEST_SKIP() << "vhdimount (libvhdi-utils) or FUSE is not available";
  }
  testing::TempDir dir;
  constexpr uint64_t kDisk = 8u << 20;
  auto truth = dir / "truth.raw";
  testing::write_pattern_file(truth, kDisk, {{0, 3u << 20}}, 31);
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(dir / "parent.vhdx", kDisk, options));
  {
    auto parent = open_vhdx(dir / "parent.vhdx", false);
    ASSERT_TRUE(parent);
    ASSERT_TRUE((*parent)->write(0, testing::read_file_range(truth, 0, 3u << 20)));
  }
  ASSERT_TRUE(create_vhdx_differencing(dir / "child.vhdx", dir / "parent.vhdx"));
  testing::write_pattern_file(dir / "patch.raw", 1u << 20, {{0, 1u << 20}}, 32);
  auto expected = testing::read_whole_file(truth);
  {
    auto child = open_vhdx(dir / "child.vhdx", false);
    ASSERT_TRUE(child);
    for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{
             {1536, 2048}, {(1u << 20) - 512, 1024}, {5u << 20, 4096}, {6u << 20, 1u << 20}}) {
      auto bytes = testing::read_file_range(dir / "patch.raw", 0, length);
      ASSERT_TRUE((*child)->write(offset, bytes));
      std::copy(bytes.begin(), bytes.end(), expected.begin() + static_cast<std::ptrdiff_t>(offset));
    }
  }
  testing::write_whole_file(dir / "expected.raw", expected);
  VhdiMount mount(dir / "child.vhdx", dir / "mnt");
  if (!mount.mounted()) GTEST_SKIP() << "vhdimount could not mount (no FUSE permission?)";
  EXPECT_EQ(mount.top_layer().filename(), "vhdi2");
  EXPECT_EQ(testing::first_difference(mount.top_layer(), dir / "expected.raw"), "");
}

// qemu refuses 4096-byte logical sectors; libvhdi reads them, so it checks those images.
TEST(VhdxLibvhdiInterop, VhdimountReadsFourKilobyteSectorImagesLaminaWrote) {
  if (testing::run_command("vhdimount -V") != 0 || !std::filesystem::exists("/dev/fuse")) {
    GTEST_SKIP() << "vhdimount (libvhdi-utils) or FUSE is not available";
  }
  testing::TempDir dir;
  constexpr uint64_t kDisk = 8u << 20;
  auto truth = dir / "truth.raw";
  testing::write_pattern_file(
      truth, kDisk, {{4096, 8192}, {(2u << 20) - 4096, 1u << 20}, {kDisk - 4096, 4096}}, 33);
  VhdxOptions options;
  options.block_size = 1u << 20;
  options.logical_sector_size = 4096;
  ASSERT_TRUE(create_vhdx(dir / "disk.vhdx", kDisk, options));
  {
    auto device = open_vhdx(dir / "disk.vhdx", false);
    ASSERT_TRUE(device);
    for (auto [offset, length] : std::vector<std::pair<uint64_t, uint64_t>>{
             {4096, 8192}, {(2u << 20) - 4096, 1u << 20}, {kDisk - 4096, 4096}}) {
      ASSERT_TRUE((*device)->write(offset, testing::read_file_range(truth, offset, length)));
    }
  }
  VhdiMount mount(dir / "disk.vhdx", dir / "mnt");
  if (!mount.mounted()) GTEST_SKIP() << "vhdimount could not mount (no FUSE permission?)";
  EXPECT_EQ(testing::first_difference(mount.top_layer(), truth), "");
}

}  // namespace
}  // namespace lamina::storage
