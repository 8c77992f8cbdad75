// virtio-blk requests through the real device, queue and image files (raw and VHD dynamic).

#include <algorithm>
#include <atomic>

#include "virtio_block_fixture.h"

namespace lamina::virtio::test {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;
constexpr uint8_t kOk = 0;
constexpr uint8_t kIoError = 1;
constexpr uint8_t kUnsupported = 2;

std::vector<std::byte> zeros(size_t length) { return std::vector<std::byte>(length); }

// Reads the image file back through a separate, fresh open (what a later process sees);
// --force-share, since the device under test still holds the writer's lock.
std::vector<std::byte> read_image(const std::string& path, uint64_t offset, uint64_t length) {
  auto disk = storage::open_image(path, false, {.force_share = true, .references = {}});
  EXPECT_TRUE(disk.has_value());
  std::vector<std::byte> bytes(length);
  if (disk) {
    EXPECT_TRUE((*disk)->read(offset, bytes).has_value());
  }
  return bytes;
}

class VirtioBlockRequestTest : public VirtioBlockFixture,
                               public ::testing::WithParamInterface<const char*> {
 protected:
  // A 16 MiB writable disk of the parameter's format.
  std::string make_disk() {
    const std::string format = GetParam();
    path_ = format == std::string("raw") ? make_raw("disk.raw", 16 * kMiB)
                                         : make_vhd("disk.vhd", 16 * kMiB, "dynamic");
    return path_;
  }
  std::string path_;
};

TEST_P(VirtioBlockRequestTest, ConfigurationSpaceDescribesTheDisk) {
  attach(make_disk(), true);
  std::array<std::byte, VirtioBlock::kConfigSize> config{};
  device_->read_config(0, config);
  EXPECT_EQ(load_le<uint64_t>(&config[0]), 16 * kMiB / 512);  // capacity
  EXPECT_EQ(load_le<uint32_t>(&config[12]), kBlockSegMax);      // seg_max
  EXPECT_EQ(load_le<uint32_t>(&config[20]), 512u);             // blk_size
  EXPECT_GT(load_le<uint32_t>(&config[36]), 0u);               // max_discard_sectors
  EXPECT_GT(load_le<uint32_t>(&config[40]), 0u);               // max_discard_seg
  EXPECT_GT(load_le<uint32_t>(&config[48]), 0u);               // max_write_zeroes_sectors
  EXPECT_GT(load_le<uint32_t>(&config[52]), 0u);               // max_write_zeroes_seg
  EXPECT_EQ(config[56], std::byte{1});                         // write_zeroes_may_unmap
  // A field read in pieces, as a transport may, gives the same bytes.
  std::array<std::byte, 4> part{};
  device_->read_config(4, part);
  EXPECT_EQ(load_le<uint32_t>(part.data()), load_le<uint32_t>(&config[4]));

  const uint64_t features = device_->device_features();
  EXPECT_NE(features & kBlockFeatureFlush, 0u);
  EXPECT_NE(features & kBlockFeatureSegMax, 0u);
  EXPECT_NE(features & kBlockFeatureBlockSize, 0u);
  EXPECT_NE(features & kBlockFeatureDiscard, 0u);
  EXPECT_NE(features & kBlockFeatureWriteZeroes, 0u);
  EXPECT_EQ(features & kBlockFeatureReadOnly, 0u);
  EXPECT_EQ(device_->type(), DeviceType::kBlock);
  EXPECT_EQ(device_->queue_count(), 1);
}

TEST_P(VirtioBlockRequestTest, WrittenSectorsReadBackAndReachTheImageAfterFlush) {
  attach(make_disk(), true);
  start();
  const auto data = pattern_bytes(64 * 1024, 1);
  // Across a VHD block boundary (2 MiB = sector 4096).
  const uint64_t sector = 4096 - 64;
  Outcome wrote = write(sector, data);
  EXPECT_EQ(wrote.status, kOk);
  EXPECT_EQ(wrote.used, 1u);  // only the status byte is device-writable

  std::vector<std::byte> back;
  Outcome got = read(sector, data.size(), back);
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(got.used, data.size() + 1);
  EXPECT_EQ(back, data);

  EXPECT_EQ(flush().status, kOk);
  EXPECT_EQ(read_image(path_, sector * 512, data.size()), data);
  // Untouched sectors still read as zeros.
  EXPECT_EQ(read_image(path_, 0, 4096), zeros(4096));
}

TEST_P(VirtioBlockRequestTest, ScatteredBuffersAndSharedDescriptorsFollowMessageFraming) {
  attach(make_disk(), true);
  start();
  // Section 2.6.4: the header may share a descriptor with the data, and the data with the
  // status; data may be split anywhere a sector ends.
  const auto data = pattern_bytes(3 * 512, 2);
  std::vector<std::byte> out(16 + data.size());
  store_le<uint32_t>(out.data(), 1);
  store_le<uint64_t>(out.data() + 8, 100);
  std::copy(data.begin(), data.end(), out.begin() + 16);
  const uint64_t request = put(out);
  const uint64_t status = status_buffer();
  std::vector<Part> write_parts{{request, 16 + 512, false},
                                {request + 16 + 512, 1024, false},
                                {status, 1, true}};
  EXPECT_EQ(submit(write_parts, status).status, kOk);

  const uint64_t in = allocate(data.size() + 1);
  const uint64_t read_status = in + data.size();
  std::vector<Part> read_parts{{header(0, 100), 16, false},
                               {in, 1024, true},
                               {in + 1024, 512 + 1, true}};
  Outcome got = submit(read_parts, read_status);
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(got.used, data.size() + 1);
  EXPECT_EQ(get(in, data.size()), data);
}

TEST_P(VirtioBlockRequestTest, LargestRequestInOneIndirectTableCompletes) {
  attach(make_disk(), true);
  start();
  // As Linux builds it: header, seg_max page-sized segments (not contiguous), status, all in
  // one indirect table behind a single ring descriptor.
  const uint32_t segments = kBlockSegMax;
  const auto data = pattern_bytes(uint64_t{segments} * 4096, 12);
  const uint64_t table = allocate(16ull * (segments + 2));
  const uint64_t status = status_buffer();
  const uint64_t head = header(1, 8);
  auto entry = [&](uint16_t index, uint64_t address, uint32_t length, uint16_t flags) {
    driver_->set_descriptor(table, index, address, length, flags, index + 1);
  };
  entry(0, head, 16, kDescriptorNext);
  for (uint32_t i = 0; i < segments; ++i) {
    const uint64_t page = put(std::span(data).subspan(i * 4096ull, 4096));
    allocate(4096);  // a gap, so pages do not merge
    entry(static_cast<uint16_t>(1 + i), page, 4096, kDescriptorNext);
  }
  entry(static_cast<uint16_t>(segments + 1), status, 1, kDescriptorWrite);
  const uint16_t ring_head = 0;
  driver_->set_descriptor(driver_->layout().descriptor_table, ring_head, table,
                          16 * (segments + 2), kDescriptorIndirect, 0);
  driver_->publish(ring_head);
  device_->queue_notify(0);
  device_->wait_idle();
  ASSERT_EQ(driver_->used_index(), 1);
  EXPECT_EQ(status_at(status), kOk);
  EXPECT_TRUE(transport_.errors().empty());
  EXPECT_EQ(read_image(path_, 8 * 512, data.size()), data);
}

TEST_P(VirtioBlockRequestTest, BuffersThatSplitSectorsGoThroughTheBounceBuffer) {
  attach(make_disk(), true);
  start();
  const auto data = pattern_bytes(1024, 3);
  const uint64_t a = put(std::span(data).first(100));
  const uint64_t b = put(std::span(data).subspan(100, 700));
  const uint64_t c = put(std::span(data).subspan(800));
  const uint64_t status = status_buffer();
  std::vector<Part> parts{{header(1, 7), 16, false}, {a, 100, false}, {b, 700, false},
                          {c, 224, false}, {status, 1, true}};
  EXPECT_EQ(submit(parts, status).status, kOk);

  const uint64_t x = allocate(300);
  const uint64_t y = allocate(724);
  const uint64_t read_status = status_buffer();
  std::vector<Part> read_parts{{header(0, 7), 16, false}, {x, 300, true}, {y, 724, true},
                               {read_status, 1, true}};
  Outcome got = submit(read_parts, read_status);
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(got.used, 1025u);
  auto first = get(x, 300);
  auto second = get(y, 724);
  first.insert(first.end(), second.begin(), second.end());
  EXPECT_EQ(first, data);
  EXPECT_EQ(read_image(path_, 7 * 512, 1024), data);
}

TEST_P(VirtioBlockRequestTest, GetIdAnswersTheSerialNulPadded) {
  attach(make_disk(), true, "disk-7");
  start();
  const uint64_t id = allocate(20);
  Outcome got = simple(8, 0, {{id, 20, true}});
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(got.used, 21u);
  std::vector<std::byte> expected(20);
  std::memcpy(expected.data(), "disk-7", 6);
  EXPECT_EQ(get(id, 20), expected);

  // A short buffer gets what fits.
  const uint64_t shorter = allocate(4);
  got = simple(8, 0, {{shorter, 4, true}});
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(got.used, 5u);
  EXPECT_EQ(get(shorter, 4), std::vector<std::byte>(expected.begin(), expected.begin() + 4));
}

TEST_P(VirtioBlockRequestTest, UnsupportedTypesAnswerUnsupp) {
  attach(make_disk(), true);
  start();
  // SCSI (2), FLUSH_OUT (5), GET_LIFETIME (10), SECURE_ERASE (14), zone append (15), junk.
  for (uint32_t type : {2u, 3u, 5u, 10u, 14u, 15u, 16u, 0x80000000u, 0xffffffffu}) {
    Outcome got = simple(type, 0);
    EXPECT_EQ(got.status, kUnsupported) << "type " << type;
    EXPECT_EQ(got.used, 1u);
  }
}

TEST_P(VirtioBlockRequestTest, BadRangesAndLayoutsAnswerIoErrorAndWriteNothing) {
  attach(make_disk(), true);
  start();
  const uint64_t capacity = 16 * kMiB / 512;
  const auto data = pattern_bytes(1024, 4);
  std::vector<std::byte> ignored;
  // Past the end, straddling the end, and sector numbers that overflow when scaled.
  EXPECT_EQ(read(capacity, 512, ignored).status, kIoError);
  EXPECT_EQ(read(capacity - 1, 1024, ignored).status, kIoError);
  EXPECT_EQ(write(capacity - 1, data).status, kIoError);
  EXPECT_EQ(write(uint64_t{1} << 63, data).status, kIoError);
  EXPECT_EQ(write(~uint64_t{0} / 512 + 1, data).status, kIoError);
  EXPECT_EQ(write(~uint64_t{0}, data).status, kIoError);
  // The last sector itself is fine.
  EXPECT_EQ(write(capacity - 1, std::span(data).first(512)).status, kOk);

  // Not a whole number of sectors.
  EXPECT_EQ(write(0, std::span(data).first(100)).status, kIoError);
  EXPECT_EQ(read(0, 100, ignored).status, kIoError);

  // Data in the wrong direction: a write with device-writable data, a read with readable data.
  const uint64_t status = status_buffer();
  std::vector<Part> wrong_write{{header(1, 0), 16, false},
                                {put(std::span(data).first(512)), 512, false},
                                {allocate(512), 512, true},
                                {status, 1, true}};
  EXPECT_EQ(submit(wrong_write, status).status, kIoError);
  const uint64_t status2 = status_buffer();
  std::vector<Part> wrong_read{{header(0, 0), 16, false},
                               {put(std::span(data).first(512)), 512, false},
                               {allocate(512), 512, true},
                               {status2, 1, true}};
  EXPECT_EQ(submit(wrong_read, status2).status, kIoError);

  // A header shorter than 16 bytes.
  const uint64_t status3 = status_buffer();
  std::vector<Part> short_header{{header(1, 0), 8, false}, {status3, 1, true}};
  Outcome got = submit(short_header, status3);
  EXPECT_EQ(got.status, kIoError);
  EXPECT_EQ(got.used, 1u);

  // Only the one good write reached the image.
  EXPECT_EQ(read_image(path_, 0, 4096), zeros(4096));
  EXPECT_TRUE(transport_.errors().empty());
}

TEST_P(VirtioBlockRequestTest, RequestsOverOneGibibyteAreRefused) {
  attach(make_disk(), true);
  start();
  // Buffers may repeat, so 65 descriptors over all 16 MiB of RAM describe 1040 MiB.
  const uint64_t status = status_buffer();
  std::vector<Part> parts{{header(1, 0), 16, false}};
  for (int i = 0; i < 65; ++i) parts.push_back({0, static_cast<uint32_t>(kRamSize), false});
  parts.push_back({status, 1, true});
  EXPECT_EQ(submit(parts, status).status, kIoError);
  EXPECT_EQ(read_image(path_, 0, 4096), zeros(4096));
}

TEST_P(VirtioBlockRequestTest, WriteZeroesClearsExactlyTheRange) {
  attach(make_disk(), true);
  start();
  const auto data = pattern_bytes(64 * 512, 5);
  ASSERT_EQ(write(0, data).status, kOk);
  EXPECT_EQ(ranges(13, {{10, 10, 0}, {40, 4, 1}}).status, kOk);
  std::vector<std::byte> back;
  ASSERT_EQ(read(0, data.size(), back).status, kOk);
  auto expected = data;
  std::fill(expected.begin() + 10 * 512, expected.begin() + 20 * 512, std::byte{0});
  std::fill(expected.begin() + 40 * 512, expected.begin() + 44 * 512, std::byte{0});
  EXPECT_EQ(back, expected);
}

TEST_P(VirtioBlockRequestTest, WriteZeroesWithUnmapFreesWholeBlocks) {
  attach(make_disk(), true);
  start();
  const auto data = pattern_bytes(4096 * 512, 11);
  ASSERT_EQ(write(4096, data).status, kOk);
  // One whole 2 MiB VHD block, with unmap: the image may drop it (VHD: the BAT entry).
  ASSERT_EQ(ranges(13, {{4096, 4096, 1}}).status, kOk);
  ASSERT_EQ(flush().status, kOk);
  EXPECT_EQ(read_image(path_, 4096 * 512, data.size()), zeros(data.size()));
  auto disk = storage::open_image(path_, false, {.force_share = true, .references = {}});
  ASSERT_TRUE(disk.has_value());
  auto extent = (*disk)->map_extent(4096 * 512, 4096 * 512);
  ASSERT_TRUE(extent.has_value());
  EXPECT_TRUE(extent->zero);
}

TEST_P(VirtioBlockRequestTest, DiscardOfWholeBlocksReadsAsZerosAndFreesThem) {
  attach(make_disk(), true);
  start();
  // VHD's default block is 2 MiB (4096 sectors); discard frees whole blocks only.
  const auto data = pattern_bytes(4096 * 512, 6);
  ASSERT_EQ(write(4096, data).status, kOk);
  ASSERT_EQ(ranges(11, {{4096, 4096, 0}}).status, kOk);
  ASSERT_EQ(flush().status, kOk);
  std::vector<std::byte> back;
  ASSERT_EQ(read(4096, 64 * 1024, back).status, kOk);
  EXPECT_EQ(back, zeros(64 * 1024));
  // The image itself reports the range as empty now.
  auto disk = storage::open_image(path_, false, {.force_share = true, .references = {}});
  ASSERT_TRUE(disk.has_value());
  auto extent = (*disk)->map_extent(4096 * 512, 4096 * 512);
  ASSERT_TRUE(extent.has_value());
  EXPECT_TRUE(extent->zero);
}

TEST_P(VirtioBlockRequestTest, MalformedDiscardAndWriteZeroesAreRefused) {
  attach(make_disk(), true);
  start();
  const auto data = pattern_bytes(8 * 512, 7);
  ASSERT_EQ(write(0, data).status, kOk);
  const uint64_t capacity = 16 * kMiB / 512;
  // Section 5.2.6.2: unmap on a discard and unknown flags are UNSUPP.
  EXPECT_EQ(ranges(11, {{0, 8, 1}}).status, kUnsupported);
  EXPECT_EQ(ranges(13, {{0, 8, 2}}).status, kUnsupported);
  EXPECT_EQ(ranges(13, {{0, 1, 0}, {0, 8, 0x80000000u}}).status, kUnsupported);
  // Past the end, more sectors than advertised, too many segments, no segment at all.
  EXPECT_EQ(ranges(13, {{capacity - 4, 8, 0}}).status, kIoError);
  EXPECT_EQ(ranges(11, {{~uint64_t{0} - 2, 8, 0}}).status, kIoError);
  EXPECT_EQ(ranges(13, {{0, kBlockMaxWriteZeroesSectors + 1, 0}}).status, kIoError);
  EXPECT_EQ(ranges(11, std::vector<Segment>(kBlockMaxDiscardSegments + 1, {0, 8, 0})).status,
            kIoError);
  EXPECT_EQ(ranges(13, {}).status, kIoError);
  // A segment list that is not a whole number of segments.
  EXPECT_EQ(simple(13, 0, {{allocate(20), 20, false}}).status, kIoError);
  // The first segment is valid, the second is not: nothing is executed.
  EXPECT_EQ(ranges(13, {{0, 8, 0}, {capacity, 1, 0}}).status, kIoError);
  std::vector<std::byte> back;
  ASSERT_EQ(read(0, data.size(), back).status, kOk);
  EXPECT_EQ(back, data);
}

TEST_P(VirtioBlockRequestTest, FeaturesTheDriverDeclinedAreUnsupported) {
  attach(make_disk(), true);
  start(kFeatureVersion1 | kBlockFeatureFlush);
  EXPECT_EQ(ranges(11, {{0, 8, 0}}).status, kUnsupported);
  EXPECT_EQ(ranges(13, {{0, 8, 0}}).status, kUnsupported);
}

TEST_P(VirtioBlockRequestTest, WithoutNegotiatedFlushWritesAreWriteThrough) {
  attach(make_disk(), true);
  // Section 5.2.6.2 case 1: FLUSH offered, not negotiated: completed writes are stable.
  start(kFeatureVersion1);
  const auto data = pattern_bytes(4096, 8);
  ASSERT_EQ(write(2, data).status, kOk);
  EXPECT_EQ(read_image(path_, 2 * 512, data.size()), data);
}

TEST_P(VirtioBlockRequestTest, ReadOnlyDiskRefusesWritesAndOffersRo) {
  const std::string path = make_disk();
  {
    attach(path, true);
    start();
    ASSERT_EQ(write(0, pattern_bytes(512, 9)).status, kOk);
    ASSERT_EQ(flush().status, kOk);
    device_.reset();
    transport_.drop_queue();
  }
  attach(path, false);
  EXPECT_TRUE(device_->read_only());
  const uint64_t features = device_->device_features();
  EXPECT_NE(features & kBlockFeatureReadOnly, 0u);
  EXPECT_EQ(features & (kBlockFeatureDiscard | kBlockFeatureWriteZeroes), 0u);
  fresh_ring();
  start();
  EXPECT_EQ(write(0, pattern_bytes(512, 10)).status, kIoError);
  EXPECT_EQ(ranges(11, {{0, 1, 0}}).status, kUnsupported);
  EXPECT_EQ(flush().status, kOk);
  std::vector<std::byte> back;
  ASSERT_EQ(read(0, 512, back).status, kOk);
  EXPECT_EQ(back, pattern_bytes(512, 9));
  EXPECT_EQ(read_image(path, 0, 512), pattern_bytes(512, 9));
}

INSTANTIATE_TEST_SUITE_P(Formats, VirtioBlockRequestTest, ::testing::Values("raw", "vhd"));

// A real image whose host operations can be made to fail, as a dying disk or a full file
// system would (the image formats themselves never fail on demand).
class FaultyDisk final : public storage::BlockDevice {
 public:
  explicit FaultyDisk(std::unique_ptr<storage::BlockDevice> inner) : inner_(std::move(inner)) {}
  std::atomic<bool> failing{false};

  uint64_t size() const override { return inner_->size(); }
  bool read_only() const override { return inner_->read_only(); }
  Result<void> read(uint64_t offset, std::span<std::byte> data) override {
    return failing ? refuse() : inner_->read(offset, data);
  }
  Result<void> write(uint64_t offset, std::span<const std::byte> data) override {
    return failing ? refuse() : inner_->write(offset, data);
  }
  Result<void> flush() override { return failing ? refuse() : inner_->flush(); }
  Result<void> discard(uint64_t offset, uint64_t length) override {
    return failing ? refuse() : inner_->discard(offset, length);
  }
  Result<void> write_zeroes(uint64_t offset, uint64_t length, bool may_unmap) override {
    return failing ? refuse() : inner_->write_zeroes(offset, length, may_unmap);
  }

 private:
  static Result<void> refuse() { return fail(ErrorCode::kIo, "injected: input/output error"); }
  std::unique_ptr<storage::BlockDevice> inner_;
};

class VirtioBlockIoErrorTest : public VirtioBlockFixture {};

TEST_F(VirtioBlockIoErrorTest, ImageFailuresAnswerIoErrorAndTheDeviceCarriesOn) {
  auto image = storage::open_image(make_vhd("disk.vhd", 16 * kMiB, "dynamic"), true);
  ASSERT_TRUE(image.has_value());
  auto disk = std::make_shared<FaultyDisk>(std::move(*image));
  auto device = VirtioBlock::create(disk, "");
  ASSERT_TRUE(device.has_value());
  device_ = std::move(*device);
  start();
  const auto data = pattern_bytes(4096, 13);
  ASSERT_EQ(write(0, data).status, kOk);

  disk->failing = true;
  std::vector<std::byte> back;
  Outcome got = read(0, 4096, back);
  EXPECT_EQ(got.status, kIoError);
  EXPECT_EQ(got.used, 0u);  // no data was written before the status
  EXPECT_EQ(write(8, data).status, kIoError);
  EXPECT_EQ(flush().status, kIoError);
  EXPECT_EQ(ranges(11, {{0, 8, 0}}).status, kIoError);
  EXPECT_EQ(ranges(13, {{0, 8, 0}}).status, kIoError);

  // Not a driver error: the device goes on serving once the host recovers.
  disk->failing = false;
  EXPECT_TRUE(transport_.errors().empty());
  got = read(0, 4096, back);
  EXPECT_EQ(got.status, kOk);
  EXPECT_EQ(back, data);
}

TEST(VirtioBlockSerialTest, SerialsAreCheckedAndDerivedStably) {
  EXPECT_TRUE(check_block_serial("").has_value());
  EXPECT_TRUE(check_block_serial("ABCDEFGHIJ0123456789").has_value());
  EXPECT_FALSE(check_block_serial("ABCDEFGHIJ0123456789X").has_value());
  EXPECT_FALSE(check_block_serial(std::string("bad\nserial")).has_value());
  EXPECT_FALSE(check_block_serial("caf\xc3\xa9").has_value());

  TempFolder folder;
  const std::string a = derive_block_serial(folder.file("a.vhd"));
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(a.rfind("lamina-", 0), 0u);
  EXPECT_TRUE(check_block_serial(a).has_value());
  EXPECT_EQ(a, derive_block_serial(folder.file("./a.vhd")));
  EXPECT_NE(a, derive_block_serial(folder.file("b.vhd")));
}

}  // namespace
}  // namespace lamina::virtio::test
