// The virtio-blk device's I/O thread: batching, notification suppression, protocol errors,
// reset while busy, save/load.

#include <chrono>
#include <thread>

#include "base/state_stream.h"
#include "virtio_block_fixture.h"

namespace lamina::virtio::test {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

class VirtioBlockDeviceTest : public VirtioBlockFixture {
 protected:
  void SetUp() override {
    path_ = make_raw("disk.raw", 32 * kMiB);
    attach(path_, true);
  }
  // Publishes a write of `sectors` sectors at `sector` without kicking; returns the status
  // address.
  uint64_t queue_write(uint64_t sector, uint32_t sectors, uint64_t seed) {
    const uint64_t status = status_buffer();
    const auto data = pattern_bytes(sectors * 512ull, seed);
    std::vector<Part> parts{{header(1, sector), 16, false},
                            {put(data), static_cast<uint32_t>(data.size()), false},
                            {status, 1, true}};
    driver_->add_chain(parts);
    return status;
  }
  std::string path_;
};

TEST_F(VirtioBlockDeviceTest, OneKickServesABatchWithOneInterrupt) {
  start();
  std::vector<uint64_t> statuses;
  for (uint64_t i = 0; i < 10; ++i) statuses.push_back(queue_write(i * 8, 8, i));
  device_->queue_notify(0);
  device_->wait_idle();
  EXPECT_EQ(driver_->used_index(), 10);
  for (uint64_t status : statuses) EXPECT_EQ(status_at(status), 0);
  EXPECT_EQ(transport_.signals(), 1u);
  // Kicks are wanted again once the device sleeps (section 2.7.10).
  EXPECT_EQ(driver_->used_flags() & kUsedNoNotify, 0);
  std::vector<std::byte> back;
  ASSERT_EQ(read(9 * 8, 8 * 512, back).status, 0);
  EXPECT_EQ(back, pattern_bytes(8 * 512, 9));
}

TEST_F(VirtioBlockDeviceTest, DriverThatAsksForNoInterruptsGetsNone) {
  start();
  driver_->set_avail_flags(kAvailNoInterrupt);
  queue_write(0, 1, 1);
  device_->queue_notify(0);
  device_->wait_idle();
  EXPECT_EQ(driver_->used_index(), 1);
  EXPECT_EQ(transport_.signals(), 0u);
}

TEST_F(VirtioBlockDeviceTest, RequestsKickedWhileTheThreadWorksAreAllServed) {
  start();
  // Kick after every request without waiting, so kicks race with the thread going to sleep;
  // 80 requests of 3 descriptors stay within the 256-entry ring.
  for (int round = 0; round < 3; ++round) {
    const uint16_t before = driver_->used_index();
    std::vector<std::pair<uint64_t, uint64_t>> writes;
    for (uint64_t i = 0; i < 80; ++i) {
      const uint64_t seed = round * 100 + i;
      writes.emplace_back(queue_write(i * 16, 16, seed), seed);
      device_->queue_notify(0);
    }
    device_->wait_idle();
    ASSERT_EQ(driver_->used_index(), static_cast<uint16_t>(before + 80));
    for (auto [status, seed] : writes) EXPECT_EQ(status_at(status), 0);
    next_ = kDataStart;
  }
  std::vector<std::byte> back;
  ASSERT_EQ(read(79 * 16, 16 * 512, back).status, 0);
  EXPECT_EQ(back, pattern_bytes(16 * 512, 279));
  EXPECT_TRUE(transport_.errors().empty());
}

TEST_F(VirtioBlockDeviceTest, ChainWithoutStatusByteNeedsResetThenWorksAgain) {
  start();
  std::vector<Part> no_status{{header(1, 0), 16, false}, {put(pattern_bytes(512, 1)), 512, false}};
  driver_->add_chain(no_status);
  device_->queue_notify(0);
  device_->wait_idle();
  ASSERT_EQ(transport_.errors().size(), 1u);
  EXPECT_EQ(driver_->used_index(), 0);
  // Until reset, the device serves nothing.
  queue_write(0, 1, 2);
  device_->queue_notify(0);
  device_->wait_idle();
  EXPECT_EQ(driver_->used_index(), 0);

  device_->reset();
  transport_.drop_queue();
  fresh_ring();
  start();
  EXPECT_EQ(write(0, pattern_bytes(512, 3)).status, 0);
}

TEST_F(VirtioBlockDeviceTest, LoopingChainIsADeviceError) {
  start();
  // Descriptors 0 -> 1 -> 0 -> ...
  const uint64_t table = driver_->layout().descriptor_table;
  driver_->set_descriptor(table, 0, header(0, 0), 16, kDescriptorNext, 1);
  driver_->set_descriptor(table, 1, allocate(512), 512, kDescriptorNext | kDescriptorWrite, 0);
  driver_->publish(0);
  device_->queue_notify(0);
  device_->wait_idle();
  EXPECT_EQ(transport_.errors().size(), 1u);
  EXPECT_EQ(driver_->used_index(), 0);
}

TEST_F(VirtioBlockDeviceTest, ResetWhileBusyStopsAndWaits) {
  start();
  for (uint64_t i = 0; i < 48; ++i) queue_write(i * 256, 256, i);  // 48 x 128 KiB
  device_->queue_notify(0);
  device_->reset();
  // After reset() returns the device touches the ring no more.
  const uint16_t done = driver_->used_index();
  EXPECT_LE(done, 48);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(driver_->used_index(), done);
  device_->queue_notify(0);  // a kick after reset is ignored
  device_->wait_idle();
  EXPECT_EQ(driver_->used_index(), done);

  transport_.drop_queue();
  fresh_ring();
  start();
  std::vector<std::byte> back;
  EXPECT_EQ(read(0, 512, back).status, 0);
}

TEST_F(VirtioBlockDeviceTest, KickBeforeActivationIsIgnored) {
  device_->queue_notify(0);
  device_->queue_notify(7);
  device_->wait_idle();
  device_->reset();
  start();
  EXPECT_EQ(flush().status, 0);
}

TEST_F(VirtioBlockDeviceTest, SaveAndLoadCheckTheDisk) {
  start();
  ASSERT_EQ(write(0, pattern_bytes(512, 1)).status, 0);
  StateWriter writer;
  device_->save(writer);
  ASSERT_TRUE(writer.complete());

  // The same disk: accepted (the device waits for activate() again).
  {
    StateReader reader(writer.data());
    EXPECT_TRUE(device_->load(reader).has_value());
  }
  // A disk of another size or another mode: refused with a message naming both.
  const std::string other = make_raw("other.raw", 16 * kMiB);
  auto disk = storage::open_image(other, true);
  ASSERT_TRUE(disk.has_value());
  auto smaller = VirtioBlock::create(std::move(*disk), "");
  ASSERT_TRUE(smaller.has_value());
  {
    StateReader reader(writer.data());
    auto loaded = (*smaller)->load(reader);
    ASSERT_FALSE(loaded.has_value());
    EXPECT_NE(loaded.error().message().find("65536 sectors"), std::string::npos);
  }
  auto read_only_disk = storage::open_image(path_, false, {.force_share = true, .references = {}});
  ASSERT_TRUE(read_only_disk.has_value());
  auto read_only = VirtioBlock::create(std::move(*read_only_disk), "");
  ASSERT_TRUE(read_only.has_value());
  {
    StateReader reader(writer.data());
    EXPECT_FALSE((*read_only)->load(reader).has_value());
  }
  // A newer version and a truncated stream are refused.
  StateWriter newer;
  newer.begin_section("virtio-blk", 99);
  newer.put(uint64_t{65536}, false);
  newer.end_section();
  {
    StateReader reader(newer.data());
    EXPECT_FALSE(device_->load(reader).has_value());
  }
  std::vector<std::byte> truncated(writer.data().begin(), writer.data().end() - 3);
  {
    StateReader reader(truncated);
    EXPECT_FALSE(device_->load(reader).has_value());
  }
}

}  // namespace
}  // namespace lamina::virtio::test
