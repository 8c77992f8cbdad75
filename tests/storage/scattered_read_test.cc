// BlockDevice::read_scattered (a virtio-blk request's guest pages in one call): for raw, fixed
// and dynamic VHD (blocks with every sector present, some present, none, and a differencing
// child over a parent), random ranges scattered into random pieces read exactly what read()
// of the whole range reads; HostFile's preadv batches more pieces than one call takes and
// zero-fills past the end of the file.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <span>
#include <vector>

#include "storage/host_file.h"
#include "storage/image_format.h"
#include "storage/image_operations.h"
#include "storage/raw_image.h"
#include "storage/vhd_image.h"
#include "test_support.h"

namespace lamina::storage {
namespace {

using test::pattern;
using test::read_device;
constexpr uint64_t kKiB = 1024, kMiB = 1024 * kKiB;

// `bytes` cut into pieces of random sector multiples (1 to 16 sectors, now and then more).
std::vector<std::span<std::byte>> scatter(std::vector<std::byte>& bytes, std::mt19937_64& random) {
  std::vector<std::span<std::byte>> pieces;
  for (size_t at = 0; at < bytes.size();) {
    const size_t sectors = random() % 8 == 0 ? 1 + random() % 300 : 1 + random() % 16;
    const size_t length = std::min(bytes.size() - at, sectors * 512);
    pieces.push_back(std::span<std::byte>(bytes).subspan(at, length));
    at += length;
  }
  return pieces;
}

// Random sector-aligned ranges of `device`, read both ways.
void expect_scattered_reads_match(BlockDevice& device, uint64_t seed) {
  std::mt19937_64 random(seed);
  const uint64_t sectors = device.size() / 512;
  for (int round = 0; round < 60; ++round) {
    const uint64_t first = random() % sectors;
    const uint64_t count = 1 + random() % std::min<uint64_t>(sectors - first, 3 * kMiB / 512);
    const uint64_t offset = first * 512, length = count * 512;
    SCOPED_TRACE(testing::Message() << "offset " << offset << " length " << length);
    const std::vector<std::byte> expected = read_device(device, offset, length);
    std::vector<std::byte> got(length, std::byte{0xee});
    const std::vector<std::span<std::byte>> pieces = scatter(got, random);
    auto read = device.read_scattered(offset, pieces);
    ASSERT_TRUE(read) << read.error().message();
    ASSERT_EQ(got, expected);
  }
}

std::unique_ptr<VhdImage> open_vhd(const std::string& path, bool writable) {
  auto image = VhdImage::open(path, {.writable = writable, .durable = true, .open_parent = true, .access = {}});
  EXPECT_TRUE(image) << image.error().message();
  return image ? std::move(*image) : nullptr;
}

void create_vhd(const std::string& path, uint64_t size, const std::string& type) {
  CreateOptions options;
  options.size = size;
  options.type = type;
  options.block_size = type == "dynamic" ? 512 * kKiB : 0;  // many block boundaries
  auto created = create_image(path, "vhd", options, false);
  ASSERT_TRUE(created) << created.error().message();
}

TEST(ScatteredRead, DynamicVhdBlocksFullPartialAndUnallocatedReadAsRead) {
  test::TempDir dir;
  create_vhd(dir.file("disk.vhd"), 8 * kMiB, "dynamic");
  auto disk = open_vhd(dir.file("disk.vhd"), true);
  ASSERT_TRUE(disk);
  // Blocks 0-3 written whole (every sector present), 6 and 9 in part, the rest unallocated.
  ASSERT_TRUE(disk->write(0, pattern(2 * kMiB, 1)));
  ASSERT_TRUE(disk->write(3 * kMiB + 4096, pattern(8192, 2)));
  ASSERT_TRUE(disk->write(4 * kMiB + 512 * kKiB + 512, pattern(1024, 3)));
  expect_scattered_reads_match(*disk, 11);
  // Reopened: the bitmaps are read again, on first use by a scattered read.
  disk.reset();
  disk = open_vhd(dir.file("disk.vhd"), false);
  ASSERT_TRUE(disk);
  expect_scattered_reads_match(*disk, 12);
}

TEST(ScatteredRead, DifferencingVhdReadsThroughItsParentAsRead) {
  test::TempDir dir;
  create_vhd(dir.file("base.vhd"), 4 * kMiB, "dynamic");
  {
    auto base = open_vhd(dir.file("base.vhd"), true);
    ASSERT_TRUE(base->write(0, pattern(4 * kMiB, 4)));
  }
  ASSERT_TRUE(create_differencing(dir.file("child.vhd"), dir.file("base.vhd"), false));
  auto child = open_vhd(dir.file("child.vhd"), true);
  ASSERT_TRUE(child);
  ASSERT_TRUE(child->write(kMiB + 512, pattern(3 * 512, 5)));
  ASSERT_TRUE(child->write(2 * kMiB, pattern(512 * kKiB, 6)));  // a whole block of the child
  expect_scattered_reads_match(*child, 13);
}

TEST(ScatteredRead, FixedVhdAndRawReadAsRead) {
  test::TempDir dir;
  create_vhd(dir.file("fixed.vhd"), 4 * kMiB, "fixed");
  auto fixed = open_vhd(dir.file("fixed.vhd"), true);
  ASSERT_TRUE(fixed);
  ASSERT_TRUE(fixed->write(kMiB, pattern(kMiB, 7)));
  expect_scattered_reads_match(*fixed, 14);

  auto file = HostFile::open(dir.file("disk.raw"), HostFile::Mode::kCreateExclusive);
  ASSERT_TRUE(file) << file.error().message();
  auto raw = RawImage::create(std::move(*file), 4 * kMiB);
  ASSERT_TRUE(raw) << raw.error().message();
  ASSERT_TRUE((*raw)->write(512 * kKiB, pattern(2 * kMiB, 8)));
  expect_scattered_reads_match(**raw, 15);
}

// VHDX: fully present payload blocks by preadv, not-present ones through the parent (a
// differencing child), and both again reopened read-only.
TEST(ScatteredRead, VhdxBlocksAndItsParentReadAsRead) {
  test::TempDir dir;
  CreateOptions options;
  options.size = 12 * kMiB;
  options.block_size = kMiB;
  auto created = create_image(dir.file("base.vhdx"), "vhdx", options, false);
  ASSERT_TRUE(created) << created.error().message();
  {
    auto base = open_image(dir.file("base.vhdx"), true);
    ASSERT_TRUE(base) << base.error().message();
    ASSERT_TRUE((*base)->write(0, pattern(5 * kMiB, 17)));
    ASSERT_TRUE((*base)->write(7 * kMiB + 4096, pattern(8192, 18)));
  }
  ASSERT_TRUE(create_differencing(dir.file("child.vhdx"), dir.file("base.vhdx"), false));
  {
    auto child = open_image(dir.file("child.vhdx"), true);
    ASSERT_TRUE(child) << child.error().message();
    ASSERT_TRUE((*child)->write(2 * kMiB + 1024, pattern(2048, 19)));  // a partial block
    ASSERT_TRUE((*child)->write(9 * kMiB, pattern(kMiB, 20)));          // a whole one
    expect_scattered_reads_match(**child, 21);
  }
  auto base = open_image(dir.file("base.vhdx"), false);
  ASSERT_TRUE(base) << base.error().message();
  expect_scattered_reads_match(**base, 22);
  auto child = open_image(dir.file("child.vhdx"), false);
  ASSERT_TRUE(child) << child.error().message();
  expect_scattered_reads_match(**child, 23);
}

// More pieces than one preadv takes, pieces of every size down to a byte, and a read that runs
// past the end of the file: read_vectored_padded zero-fills there, read_vectored_at refuses.
TEST(ScatteredRead, HostFileBatchesPiecesAndPadsPastItsEnd) {
  test::TempDir dir;
  const std::vector<std::byte> content = pattern(300 * kKiB + 7, 9);
  test::write_file(dir.file("data"), content);
  auto file = HostFile::open(dir.file("data"), HostFile::Mode::kRead);
  ASSERT_TRUE(file) << file.error().message();
  std::mt19937_64 random(16);
  std::vector<std::byte> got(content.size() + 5000, std::byte{0xee});
  std::vector<std::span<std::byte>> pieces;
  for (size_t at = 0; at < got.size();) {
    const size_t length = std::min(got.size() - at, static_cast<size_t>(random() % 700));
    pieces.push_back(std::span<std::byte>(got).subspan(at, length));  // empty ones too
    at += length;
  }
  ASSERT_GT(pieces.size(), 2 * HostFile::kVectoredPieces);
  ASSERT_TRUE(file->read_vectored_padded(0, pieces));
  std::vector<std::byte> expected = content;
  expected.resize(got.size(), std::byte{0});
  EXPECT_EQ(got, expected);

  auto past_end = file->read_vectored_at(0, pieces);
  ASSERT_FALSE(past_end);
  EXPECT_NE(past_end.error().message().find("outside the file"), std::string::npos) << past_end.error().message();
  std::vector<std::byte> exact(content.size());
  std::vector<std::span<std::byte>> halves = {std::span<std::byte>(exact).first(1000),
                                              std::span<std::byte>(exact).subspan(1000)};
  ASSERT_TRUE(file->read_vectored_at(0, halves));
  EXPECT_EQ(exact, content);
}

}  // namespace
}  // namespace lamina::storage
