#pragma once
// GoogleTest fixture for virtio-blk: 16 MiB of guest RAM with queue 0 at fixed addresses, a
// real image file, the real VirtioBlock device with its I/O thread, and helpers that build
// requests the way a driver does and wait for their completion.

#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "storage/image_format.h"
#include "virtio/virtio_block.h"
#include "virtio_block_test_support.h"
#include "virtqueue_driver.h"

namespace lamina::virtio::test {

class VirtioBlockFixture : public ::testing::Test {
 protected:
  static constexpr uint64_t kRamSize = 16 * 1024 * 1024;
  static constexpr uint64_t kRingBase = 0x1000;
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint64_t kDataStart = 0x10000;

  struct Outcome {
    uint8_t status = 0xff;
    uint32_t used = 0;
  };
  using Part = testing::TestBuffer;

  VirtioBlockFixture()
      : memory_(std::move(*GuestMemory::create({RamRegion{0, kRamSize}}))),
        dma_(memory_),
        transport_(dma_) {
    fresh_ring();
  }
  ~VirtioBlockFixture() override { device_.reset(); }

  std::string make_raw(const std::string& name, uint64_t size) {
    const std::string path = folder_.file(name);
    const int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_RDWR | O_CLOEXEC, 0600);
    EXPECT_GE(fd, 0);
    EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(size)), 0);
    ::close(fd);
    return path;
  }
  std::string make_vhd(const std::string& name, uint64_t size, const std::string& type) {
    const std::string path = folder_.file(name);
    storage::CreateOptions options;
    options.size = size;
    options.type = type;
    auto made = storage::vhd_image_format().create(path, options);
    EXPECT_TRUE(made.has_value()) << (made ? "" : made.error().message());
    return path;
  }

  void attach(const std::string& path, bool writable, const std::string& serial = "") {
    auto disk = storage::open_image(path, writable);
    ASSERT_TRUE(disk.has_value()) << disk.error().message();
    auto device = VirtioBlock::create(std::move(*disk), serial);
    ASSERT_TRUE(device.has_value()) << device.error().message();
    device_ = std::move(*device);
  }
  // Zeroes the rings and starts a new driver generation (a new device, or after a reset).
  void fresh_ring() { driver_.emplace(memory_, kQueueSize, kRingBase, kDataStart); }
  // Creates queue 0 and activates the device with every offered feature (or `features`).
  void start(uint64_t features = 0) {
    ASSERT_TRUE(transport_.create_queue(driver_->layout()).has_value());
    if (features == 0) features = device_->device_features() | kFeatureVersion1;
    ASSERT_TRUE(device_->activate(transport_, features).has_value());
    // The I/O thread's first look at the (empty) queue, so tests count from a quiet device.
    device_->wait_idle();
  }

  uint64_t allocate(uint64_t size) {
    const uint64_t address = next_;
    next_ += (size + 4095) / 4096 * 4096;
    EXPECT_LE(next_, kRamSize) << "test RAM exhausted";
    return address;
  }
  uint64_t put(std::span<const std::byte> bytes) {
    const uint64_t address = allocate(bytes.size());
    // GuestMemory::write memcpy()s even an empty span, whose data() may be null.
    if (!bytes.empty()) {
      EXPECT_TRUE(memory_.write(address, bytes).has_value());
    }
    return address;
  }
  std::vector<std::byte> get(uint64_t address, uint64_t length) {
    std::vector<std::byte> bytes(length);
    EXPECT_TRUE(memory_.read(address, bytes).has_value());
    return bytes;
  }
  uint64_t header(uint32_t type, uint64_t sector) {
    std::array<std::byte, 16> bytes{};
    store_le<uint32_t>(bytes.data(), type);
    store_le<uint64_t>(bytes.data() + 8, sector);
    return put(bytes);
  }
  // A one-byte status buffer preset to 0xff, so an unwritten status shows.
  uint64_t status_buffer() {
    const std::byte unset{0xff};
    return put({&unset, 1});
  }
  uint8_t status_at(uint64_t address) { return static_cast<uint8_t>(get(address, 1)[0]); }

  // Publishes one chain, kicks, waits for the I/O thread; the status is read at status_address.
  Outcome submit(std::span<const Part> parts, uint64_t status_address) {
    const uint16_t before = driver_->used_index();
    driver_->add_chain({parts.begin(), parts.end()});
    device_->queue_notify(0);
    device_->wait_idle();
    Outcome outcome;
    EXPECT_EQ(driver_->used_index(), static_cast<uint16_t>(before + 1)) << "request not completed";
    if (driver_->used_index() == before) return outcome;
    outcome.used = driver_->used_element(before).second;
    outcome.status = status_at(status_address);
    return outcome;
  }
  Outcome simple(uint32_t type, uint64_t sector, std::vector<Part> data = {}) {
    const uint64_t status = status_buffer();
    std::vector<Part> parts{{header(type, sector), 16, false}};
    parts.insert(parts.end(), data.begin(), data.end());
    parts.push_back({status, 1, true});
    return submit(parts, status);
  }
  Outcome write(uint64_t sector, std::span<const std::byte> bytes) {
    return simple(1, sector, {{put(bytes), static_cast<uint32_t>(bytes.size()), false}});
  }
  Outcome read(uint64_t sector, uint64_t length, std::vector<std::byte>& out) {
    const uint64_t buffer = allocate(length);
    Outcome outcome = simple(0, sector, {{buffer, static_cast<uint32_t>(length), true}});
    out = get(buffer, length);
    return outcome;
  }
  Outcome flush() { return simple(4, 0); }
  // DISCARD (11) / WRITE_ZEROES (13) with the given segments {sector, sectors, flags}.
  struct Segment {
    uint64_t sector;
    uint32_t sectors;
    uint32_t flags;
  };
  Outcome ranges(uint32_t type, const std::vector<Segment>& segments) {
    std::vector<std::byte> bytes(segments.size() * 16);
    for (size_t i = 0; i < segments.size(); ++i) {
      store_le<uint64_t>(&bytes[i * 16], segments[i].sector);
      store_le<uint32_t>(&bytes[i * 16 + 8], segments[i].sectors);
      store_le<uint32_t>(&bytes[i * 16 + 12], segments[i].flags);
    }
    return simple(type, 0, {{put(bytes), static_cast<uint32_t>(bytes.size()), false}});
  }

  TempFolder folder_;
  GuestMemory memory_;
  DmaMemory dma_;
  TestTransport transport_;
  std::optional<testing::TestDriver> driver_;
  std::unique_ptr<VirtioBlock> device_;
  uint64_t next_ = kDataStart;
};

}  // namespace lamina::virtio::test
