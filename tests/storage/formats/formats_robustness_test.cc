// Random mutations of valid images fed to each parser: headers, tables and logs with bytes
// flipped, fields set to extreme values and files cut short. The parsers must answer with
// errors or data, never crash, hang or allocate without bound (run under -DLAMINA_SANITIZE=ON
// for memory errors). For VHDX the checksums are recomputed after mutating, so the mutations
// reach the structures behind them instead of all dying at the CRC check.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>
#include <array>
#include <random>

#include "base/byte_order.h"
#include "format_exercise.h"
#include "image_builders.h"
#include "image_test_support.h"
#include "storage/crc32c.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::ImageFormat;
using testing::TempDir;

struct Range {
  uint64_t offset;
  uint64_t length;
};

// The part of the log the seeds use (two entries of 8 KiB) and that mutations touch.
constexpr uint64_t kLogHot = 16u << 10;

// Fixes checksums after a mutation (VHDX) or does nothing.
using Fixer = void (*)(std::vector<std::byte>&);

void store_crc(std::vector<std::byte>& bytes, uint64_t offset, uint64_t length) {
  if (offset + length > bytes.size()) return;
  store_le<uint32_t>(&bytes[offset + 4], 0);
  store_le<uint32_t>(&bytes[offset + 4], crc32c(std::span(bytes).subspan(offset, length)));
}

void fix_vhdx_checksums(std::vector<std::byte>& bytes) {
  for (uint64_t header : {64u << 10, 128u << 10}) store_crc(bytes, header, 4096);
  for (uint64_t table : {192u << 10, 256u << 10}) store_crc(bytes, table, 64u << 10);
  // Log entries in the 1 MiB log at 1 MiB (where create_vhdx puts it).
  for (uint64_t offset = 1u << 20; offset < (1u << 20) + kLogHot && offset + 4096 <= bytes.size();
       offset += 4096) {
    if (load_le<uint32_t>(&bytes[offset]) != 0x65676f6c) continue;
    uint32_t length = load_le<uint32_t>(&bytes[offset + 8]);
    if (length >= 4096 && length % 4096 == 0 && offset + length <= (2u << 20))
      store_crc(bytes, offset, length);
  }
}

// Runs `iterations` mutated copies of `seed` through the parser; returns {opened, refused}.
// Mutations land in the `hot` ranges (the whole file too when `whole_file`); the file is written
// once and each iteration patches those ranges in place and restores them afterwards.
std::pair<int, int> run_mutations(const std::vector<std::byte>& seed, std::vector<Range> hot,
                                  bool whole_file, ImageFormat format, Fixer fixer, int iterations,
                                  const std::filesystem::path& path, uint32_t rng_seed) {
  std::mt19937_64 generator(rng_seed);
  if (whole_file) hot.push_back({0, seed.size()});
  for (Range& range : hot)
    range.length = std::min<uint64_t>(range.length,
                                      seed.size() - std::min<uint64_t>(range.offset, seed.size()));
  const uint64_t interesting[] = {0,          1,           2,
                                  7,          8,           9,
                                  511,        512,         4096,
                                  65536,      1u << 20,    0x7fffffff,
                                  0x80000000, 0xffffffff,  0x7fffffffffffffffull,
                                  ~0ull,      seed.size(), seed.size() - 1};
  int opened = 0, refused = 0;
  testing::write_whole_file(path, seed);
  int descriptor = ::open(path.c_str(), O_RDWR);
  EXPECT_GE(descriptor, 0);
  auto write_range = [&](const std::vector<std::byte>& source, uint64_t offset, uint64_t length) {
    EXPECT_EQ(::pwrite(descriptor, source.data() + offset, length, static_cast<off_t>(offset)),
              static_cast<ssize_t>(length));
  };
  std::vector<std::byte> work = seed;
  for (int iteration = 0; iteration < iterations; ++iteration) {
    uint64_t cut = seed.size();
    int count = 1 + static_cast<int>(generator() % 4);
    for (int mutation = 0; mutation < count; ++mutation) {
      const Range& range = hot[generator() % hot.size()];
      if (range.length == 0) continue;
      uint64_t offset = range.offset + generator() % range.length;
      switch (generator() % 4) {
        case 0: work[offset] ^= static_cast<std::byte>(1u << (generator() % 8)); break;
        case 1: work[offset] = static_cast<std::byte>(generator() & 0xff); break;
        case 2: {
          int width = 1 << (generator() % 4);  // 1, 2, 4 or 8 bytes, in either byte order
          offset = offset / width * width;
          uint64_t value = interesting[generator() % std::size(interesting)];
          if (generator() % 4 == 0) value += generator() % 1024;
          for (int index = 0; index < width && offset + index < range.offset + range.length;
               ++index) {
            int shift = generator() % 2 ? 8 * index : 8 * (width - 1 - index);
            work[offset + index] = static_cast<std::byte>((value >> shift) & 0xff);
          }
          break;
        }
        default:
          if (generator() % 4 == 0) cut = std::min(cut, offset);
          break;
      }
    }
    if (fixer) fixer(work);
    for (const Range& range : hot) write_range(work, range.offset, range.length);
    EXPECT_EQ(::ftruncate(descriptor, static_cast<off_t>(cut)), 0);
    (testing::exercise_image(path, format, generator()) ? opened : refused) += 1;
    for (const Range& range : hot) {
      std::copy_n(seed.begin() + static_cast<std::ptrdiff_t>(range.offset), range.length,
                  work.begin() + static_cast<std::ptrdiff_t>(range.offset));
      write_range(seed, range.offset, range.length);
    }
    if (cut < seed.size()) write_range(seed, cut, seed.size() - cut);
  }
  ::close(descriptor);
  return {opened, refused};
}

TEST(FormatsRobustness, Qcow2SurvivesMutatedImages) {
  TempDir dir;
  for (int version : {2, 3}) {
    auto image = testing::build_qcow2(version);
    auto [opened, refused] =
        run_mutations(image.file, {{0, 112}, {512, 16}, {1024, 1024}}, true, ImageFormat::kQcow2,
                      nullptr, 1000, dir / "m.qcow2", 100 + version);
    EXPECT_GT(opened, 0);
    EXPECT_GT(refused, 0);
  }
}

TEST(FormatsRobustness, VmdkSurvivesMutatedImages) {
  TempDir dir;
  for (bool stream : {false, true}) {
    auto image = testing::build_vmdk_sparse(stream);
    uint64_t end = image.file.size();
    auto [opened, refused] =
        run_mutations(image.file, {{0, 80}, {512, 512}, {end - 4096, 4096}}, true,
                      ImageFormat::kVmdk, nullptr, 1000, dir / "self.vmdk", stream ? 7 : 8);
    EXPECT_GT(opened, 0);
    EXPECT_GT(refused, 0);
  }
}

TEST(FormatsRobustness, VmdkDescriptorSurvivesMutation) {
  TempDir dir;
  testing::write_pattern_file(dir / "flat.raw", 1u << 20, {{0, 4096}}, 3);
  std::string text =
      "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
      "RW 1024 FLAT \"flat.raw\" 0\nRW 512 ZERO\nRW 512 FLAT \"flat.raw\" 1024\n";
  std::vector<std::byte> seed(reinterpret_cast<const std::byte*>(text.data()),
                              reinterpret_cast<const std::byte*>(text.data()) + text.size());
  auto [opened, refused] =
      run_mutations(seed, {}, true, ImageFormat::kVmdk, nullptr, 1500, dir / "d.vmdk", 9);
  EXPECT_GT(opened, 0);
  EXPECT_GT(refused, 0);
}

TEST(FormatsRobustness, VhdxSurvivesMutatedImagesAndLogs) {
  TempDir dir;
  auto path = dir / "seed.vhdx";
  auto crashed = dir / "crashed.vhdx";
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(path, 4u << 20, options));
  {
    auto device = open_vhdx(path, false);
    ASSERT_TRUE(device);
    std::vector<std::byte> data(8192, std::byte{0x5a});
    ASSERT_TRUE((*device)->write(0, data));
    ASSERT_TRUE((*device)->write(3u << 20, data));
    std::filesystem::copy_file(path, crashed);  // LogGuid still set: a pending log
  }
  // A differencing child of the first seed, whose parent locator mutations can reach.
  auto child = dir / "child.vhdx";
  ASSERT_TRUE(create_vhdx_differencing(child, path));
  {
    auto device = open_vhdx(child, false);
    ASSERT_TRUE(device);
    std::vector<std::byte> data(4096, std::byte{0x33});
    ASSERT_TRUE((*device)->write(8192, data));
  }
  std::vector<Range> hot = {{64u << 10, 80},
                            {128u << 10, 80},
                            {192u << 10, 96},
                            {256u << 10, 96},
                            {1u << 20, kLogHot},
                            {(2u << 20), 200},
                            {(2u << 20) + (64u << 10), 512},
                            {3u << 20, 64}};
  int total_opened = 0;
  for (const auto& seed_path : {path, crashed, child}) {
    auto seed = testing::read_whole_file(seed_path);
    auto [opened, refused] =
        run_mutations(seed, hot, false, ImageFormat::kVhdx, fix_vhdx_checksums, 250, dir / "m.vhdx",
                      seed_path == path      ? 11
                      : seed_path == crashed ? 12
                                             : 13);
    EXPECT_GT(refused, 0);
    total_opened += opened;
  }
  EXPECT_GT(total_opened, 0);
}

}  // namespace
}  // namespace lamina::storage
