// VHDX create, write, reopen and read back, and the damage the reader must reject cleanly:
// broken checksums, region tables, metadata, BAT entries, truncation and a bogus log.
#include <gtest/gtest.h>

#include <random>

#include "base/byte_order.h"
#include "image_test_support.h"
#include "storage/vhdx_format.h"
#include "storage/vhdx_image.h"

namespace lamina::storage {
namespace {

using testing::TempDir;
namespace vx = vhdx;

constexpr uint64_t kSize = 8u << 20;
constexpr uint64_t kBatOffset = 3u << 20;       // where create_vhdx puts the BAT
constexpr uint64_t kMetadataOffset = 2u << 20;  // and the metadata region

std::vector<std::byte> pattern(size_t count, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::byte> bytes(count);
  for (auto& value : bytes) value = static_cast<std::byte>(generator() & 0xff);
  return bytes;
}

class VhdxTest : public ::testing::Test {
 protected:
  // A 1 MiB-block dynamic image with blocks 0 and 5 written.
  std::vector<std::byte> make_written_image() {
    VhdxOptions options;
    options.block_size = 1u << 20;
    auto created = create_vhdx(image_, kSize, options);
    EXPECT_TRUE(created) << created.error().message();
    auto device = open_vhdx(image_, false);
    EXPECT_TRUE(device) << device.error().message();
    EXPECT_TRUE((*device)->write(0, first_));
    EXPECT_TRUE((*device)->write(5u << 20, second_));
    device->reset();
    return testing::read_whole_file(image_);
  }
  Result<void> open_and_read(std::span<const std::byte> bytes) {
    testing::write_whole_file(broken_, bytes);
    auto device = open_vhdx(broken_, true);
    if (!device) return fail(device.error());
    std::vector<std::byte> buffer(1u << 20);
    for (uint64_t offset = 0; offset < (*device)->size(); offset += buffer.size()) {
      if (auto read = (*device)->read(offset, buffer); !read) return read;
    }
    return {};
  }
  void expect_corrupt(std::span<const std::byte> bytes, std::string_view words) {
    auto result = open_and_read(bytes);
    ASSERT_FALSE(result) << "expected an error mentioning '" << words << "'";
    EXPECT_NE(result.error().message().find(words), std::string::npos) << result.error().message();
    EXPECT_NE(result.error().message().find("broken.vhdx"), std::string::npos)
        << result.error().message();
  }
  // Rewrites the current header (slot 1 after create's sequence numbers) through `change`.
  static void edit_header(std::vector<std::byte>& bytes, int slot, auto change) {
    auto header =
        vx::decode_header(std::span(bytes).subspan(vx::kHeaderOffsets[slot], vx::kHeaderSize));
    ASSERT_TRUE(header);
    change(*header);
    auto encoded = vx::encode_header(*header);
    std::copy(encoded.begin(), encoded.end(),
              bytes.begin() + static_cast<std::ptrdiff_t>(vx::kHeaderOffsets[slot]));
  }

  TempDir dir_;
  std::filesystem::path image_ = dir_ / "disk.vhdx";
  std::filesystem::path broken_ = dir_ / "broken.vhdx";
  std::vector<std::byte> first_ = pattern(3u << 19, 1);  // 1.5 MiB across blocks 0 and 1
  std::vector<std::byte> second_ = pattern(4096, 2);
};

TEST_F(VhdxTest, WritesPersistAcrossReopen) {
  make_written_image();
  auto device = open_vhdx(image_, true);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ((*device)->size(), kSize);
  std::vector<std::byte> buffer(first_.size());
  ASSERT_TRUE((*device)->read(0, buffer));
  EXPECT_TRUE(buffer == first_);
  buffer.resize(second_.size());
  ASSERT_TRUE((*device)->read(5u << 20, buffer));
  EXPECT_TRUE(buffer == second_);
  ASSERT_TRUE((*device)->read(7u << 20, buffer));
  EXPECT_TRUE(buffer == std::vector<std::byte>(4096));
  auto info = inspect_vhdx(image_);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->type, VhdxType::kDynamic);
  EXPECT_EQ(info->allocated_bytes, 3u << 20);
  EXPECT_FALSE(info->log_replay_pending);
}

TEST_F(VhdxTest, FixedImagesAreFullyAllocatedAndWritable) {
  VhdxOptions options;
  options.type = VhdxType::kFixed;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(image_, kSize, options));
  auto size_before = std::filesystem::file_size(image_);
  {
    auto device = open_vhdx(image_, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(4096, second_));
  }
  EXPECT_EQ(std::filesystem::file_size(image_), size_before) << "a fixed image never grows";
  auto info = inspect_vhdx(image_);
  ASSERT_TRUE(info);
  EXPECT_EQ(info->type, VhdxType::kFixed);
  EXPECT_EQ(info->allocated_bytes, kSize);
}

TEST_F(VhdxTest, RefusesBadRequests) {
  make_written_image();
  auto device = open_vhdx(image_, true);
  ASSERT_TRUE(device);
  EXPECT_FALSE((*device)->write(0, second_)) << "read-only";
  device->reset();  // its shared lock would refuse the writer
  auto writable = open_vhdx(image_, false);
  ASSERT_TRUE(writable);
  EXPECT_FALSE((*writable)->write(100, second_)) << "unaligned";
  EXPECT_FALSE((*writable)->write(kSize - 512, second_)) << "past the end";
  std::vector<std::byte> buffer(1024);
  EXPECT_FALSE((*writable)->read(kSize - 512, buffer));
  EXPECT_FALSE(create_vhdx(image_, kSize)) << "existing file";
  EXPECT_FALSE(create_vhdx(dir_ / "a.vhdx", 1000)) << "not whole sectors";
  EXPECT_FALSE(create_vhdx(dir_ / "b.vhdx", kSize, {VhdxType::kDynamic, 3u << 20, 512, 4096, "", ""}))
      << "block size";
  EXPECT_FALSE(create_vhdx(dir_ / "c.vhdx", kSize, {VhdxType::kDynamic, 1u << 20, 1024, 4096, "", ""}))
      << "sector size";
  EXPECT_FALSE(create_vhdx(dir_ / "d.vhdx", 65ull << 40)) << "above 64 TiB";
  EXPECT_FALSE(std::filesystem::exists(dir_ / "a.vhdx"));
}

TEST_F(VhdxTest, OnlyOneWriterAtATime) {
  make_written_image();
  auto writer = open_vhdx(image_, false);
  ASSERT_TRUE(writer);
  auto second = open_vhdx(image_, false);
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("in use by another process (locked for writing)"),
            std::string::npos)
      << second.error().message();
  auto reader = open_vhdx(image_, true);
  ASSERT_FALSE(reader) << "a reader would see the writer's half-done updates";
  EXPECT_NE(reader.error().message().find("--force-share"), std::string::npos);
  EXPECT_TRUE(open_vhdx(image_, true, {.force_share = true, .references = {}}))
      << "--force-share reads without the lock";
  writer->reset();
  auto shared = open_vhdx(image_, true);
  ASSERT_TRUE(shared);
  auto blocked = open_vhdx(image_, false);
  ASSERT_FALSE(blocked) << "a writer would change what the reader reads";
  EXPECT_NE(blocked.error().message().find("locked for reading"), std::string::npos);
  shared->reset();
  EXPECT_TRUE(open_vhdx(image_, false));
}

TEST_F(VhdxTest, DiscardedRangesReadAsZeros) {
  make_written_image();
  auto device = open_vhdx(image_, false);
  ASSERT_TRUE(device);
  ASSERT_TRUE((*device)->discard(4096, 8192));
  std::vector<std::byte> buffer(16384);
  ASSERT_TRUE((*device)->read(0, buffer));
  EXPECT_TRUE(std::equal(buffer.begin(), buffer.begin() + 4096, first_.begin()));
  EXPECT_TRUE(std::all_of(buffer.begin() + 4096, buffer.begin() + 12288,
                          [](std::byte b) { return b == std::byte{0}; }));
  EXPECT_TRUE(std::equal(buffer.begin() + 12288, buffer.end(), first_.begin() + 12288));
}

TEST_F(VhdxTest, SurvivesOneDamagedHeaderOrRegionTableButNotBoth) {
  auto bytes = make_written_image();
  auto copy = bytes;
  copy[vx::kHeaderOffsets[0] + 200] ^= std::byte{1};
  EXPECT_TRUE(open_and_read(copy));
  copy[vx::kHeaderOffsets[1] + 4] ^= std::byte{1};  // checksum byte
  expect_corrupt(copy, "both headers");

  copy = bytes;
  copy[vx::kRegionTableOffsets[0] + 40] ^= std::byte{1};
  EXPECT_TRUE(open_and_read(copy));
  copy[vx::kRegionTableOffsets[1] + 40] ^= std::byte{1};
  expect_corrupt(copy, "region tables");

  copy = bytes;
  copy[0] = std::byte{'X'};
  expect_corrupt(copy, "vhdxfile");
}

TEST_F(VhdxTest, RejectsBadBatEntries) {
  auto bytes = make_written_image();
  auto copy = bytes;
  store_le<uint64_t>(&copy[kBatOffset + 8 * 2],
                     vx::make_bat_entry(vx::BlockState::kFullyPresent, 1000ull << 20));
  expect_corrupt(copy, "outside the file");
  copy = bytes;
  store_le<uint64_t>(&copy[kBatOffset + 8 * 2],
                     vx::make_bat_entry(vx::BlockState::kFullyPresent, kMetadataOffset));
  expect_corrupt(copy, "overlaps");
  copy = bytes;
  store_le<uint64_t>(&copy[kBatOffset + 8 * 2],
                     load_le<uint64_t>(&copy[kBatOffset]));  // two blocks, one place
  expect_corrupt(copy, "overlaps");
  copy = bytes;
  store_le<uint64_t>(&copy[kBatOffset + 8 * 3], 5);  // reserved state
  expect_corrupt(copy, "invalid state");
  copy = bytes;
  store_le<uint64_t>(&copy[kBatOffset + 8 * 3], 7);  // partially present without a parent
  expect_corrupt(copy, "invalid state");
  // Truncated: block 5 was the last one allocated, at the end of the file.
  expect_corrupt(std::span(bytes).first(bytes.size() - (512u << 10)), "outside the file");
}

TEST_F(VhdxTest, RejectsBadMetadata) {
  auto bytes = make_written_image();
  uint64_t items = kMetadataOffset + vx::kMetadataTableSize;  // create_vhdx packs the items here
  auto copy = bytes;
  store_le<uint32_t>(&copy[items], 3u << 20);  // block size not a power of two
  expect_corrupt(copy, "block size");
  copy = bytes;
  store_le<uint64_t>(&copy[items + 8], 0);  // virtual size
  expect_corrupt(copy, "virtual disk size");
  copy = bytes;
  store_le<uint32_t>(&copy[items + 32], 1000);  // logical sector size
  expect_corrupt(copy, "sector sizes");
  copy = bytes;
  store_le<uint32_t>(&copy[kMetadataOffset + 32 + 16], 10);  // first item's offset inside the table
  expect_corrupt(copy, "lies outside the metadata region");
  copy = bytes;
  copy[kMetadataOffset + 32] ^=
      std::byte{0xff};  // the file parameters GUID becomes unknown (and required)
  auto result = open_and_read(copy);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kUnsupported);
  copy = bytes;
  store_le<uint16_t>(&copy[kMetadataOffset + 10], 5000);
  expect_corrupt(copy, "entries");
}

TEST_F(VhdxTest, RejectsALogThatCannotBeReplayed) {
  auto bytes = make_written_image();
  auto copy = bytes;
  // A LogGuid no entry carries: a writer stopped between starting its session and flushing its
  // first entry. Nothing of that session is in place, so the log is empty (as qemu reads it).
  edit_header(copy, 0, [](vx::Header& header) {
    header.log_guid = vx::random_guid();
    header.sequence_number += 10;
  });
  EXPECT_TRUE(open_and_read(copy));
  for (bool read_only : {true, false}) {
    auto device = open_vhdx(broken_, read_only);
    ASSERT_TRUE(device) << device.error().message();
    std::vector<std::byte> buffer(second_.size());
    ASSERT_TRUE((*device)->read(5u << 20, buffer));
    EXPECT_TRUE(buffer == second_);
  }
  auto info = inspect_vhdx(broken_);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->log_replay_pending) << "the read-write open cleared the LogGuid";
  copy = bytes;
  edit_header(copy, 0, [](vx::Header& header) {
    header.log_guid = vx::random_guid();
    header.sequence_number += 10;
    header.log_offset = 1ull << 40;
  });
  expect_corrupt(copy, "log");
  // A version this reader does not know.
  copy = bytes;
  edit_header(copy, 0, [](vx::Header& header) {
    header.version = 2;
    header.sequence_number += 10;
  });
  auto result = open_and_read(copy);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().code(), ErrorCode::kUnsupported);
}

TEST_F(VhdxTest, ReplaysALeftOverLogOnlyWhenWritable) {
  VhdxOptions options;
  options.block_size = 1u << 20;
  ASSERT_TRUE(create_vhdx(image_, kSize, options));
  auto crashed = dir_ / "crashed.vhdx";
  {
    auto device = open_vhdx(image_, false);
    ASSERT_TRUE(device);
    ASSERT_TRUE((*device)->write(0, first_));
    std::filesystem::copy_file(image_, crashed);
  }
  // The BAT page never reached its place: only the log knows where block 0 and 1 live.
  auto bytes = testing::read_whole_file(crashed);
  std::fill_n(bytes.begin() + kBatOffset, 4096, std::byte{0});
  testing::write_whole_file(crashed, bytes);
  for (bool read_only : {true, false}) {
    auto device = open_vhdx(crashed, read_only);
    ASSERT_TRUE(device) << device.error().message();
    std::vector<std::byte> buffer(first_.size());
    ASSERT_TRUE((*device)->read(0, buffer));
    EXPECT_TRUE(buffer == first_) << (read_only ? "read-only" : "read-write");
    if (read_only) {
      EXPECT_TRUE(testing::read_whole_file(crashed) == bytes) << "read-only open changed the file";
    }
  }
  auto info = inspect_vhdx(crashed);
  ASSERT_TRUE(info);
  EXPECT_FALSE(info->log_replay_pending);
}

}  // namespace
}  // namespace lamina::storage
