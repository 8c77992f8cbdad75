// virtio-mem behind the real transport (virtio 1.2 section 5.15): the configuration space
// says the region and sizes, requests plug and unplug blocks under the spec's rules (ERROR
// for unaligned, outside or mixed ranges, NACK past the requested size), unplugged memory is
// discarded, a new requested size is a configuration change, and state round-trips.

#include "virtio/virtio_mem.h"

#include <gtest/gtest.h>

#include "pci_harness.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace pci;
using testing::PciHarness;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kVersion1 = uint64_t{1} << 32;
constexpr uint64_t kBase = uint64_t{4} << 30;
constexpr uint64_t kRegion = 16 * VirtioMem::kBlockSize;

class VirtioMemTest : public ::testing::Test {
 protected:
  VirtioMemTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))), dma_(memory_, nullptr) {
    auto device = std::make_unique<VirtioMem>(
        kBase, kRegion, [this](uint64_t address, uint64_t size) {
          discarded_.push_back({address, size});
        });
    mem_ = device.get();
    harness_.emplace(std::move(device), dma_);
    EXPECT_TRUE(harness_->negotiate(kVersion1));
    harness_->setup_queue(0, driver_.layout());
    harness_->driver_ok();
  }

  uint64_t config64(uint64_t offset) {
    return harness_->read(CapabilityType::kDevice, offset, 8);
  }

  // One request; returns {response type, state}.
  std::pair<uint16_t, uint16_t> request(uint16_t type, uint64_t address, uint16_t blocks,
                                        uint32_t response_room = 10) {
    std::vector<std::byte> bytes(24);
    store_le<uint16_t>(bytes.data(), type);
    store_le<uint64_t>(bytes.data() + 8, address);
    store_le<uint16_t>(bytes.data() + 16, blocks);
    const uint64_t in = driver_.allocate(24);
    (void)memory_.write(in, bytes);
    const uint64_t out = driver_.allocate(response_room, std::byte{0xee});
    driver_.add_chain({{in, 24, false}, {out, response_room, true}});
    harness_->kick(0);
    const auto reply = driver_.read_bytes(out, 10);
    return {load_le<uint16_t>(reply.data()), load_le<uint16_t>(reply.data() + 8)};
  }

  GuestMemory memory_;
  DmaMemory dma_;
  VirtioMem* mem_ = nullptr;
  std::vector<std::pair<uint64_t, uint64_t>> discarded_;
  std::optional<PciHarness> harness_;
  TestDriver driver_{memory_, 16, 0x10000, 0x100000};
};

TEST_F(VirtioMemTest, ConfigurationDescribesTheRegion) {
  EXPECT_EQ(harness_->config(0x00), 0x10581af4u) << "1AF4:1040 + 24";
  EXPECT_EQ(config64(0), VirtioMem::kBlockSize);
  EXPECT_EQ(config64(16), kBase);
  EXPECT_EQ(config64(24), kRegion);
  EXPECT_EQ(config64(32), kRegion) << "usable region";
  EXPECT_EQ(config64(40), 0u) << "nothing plugged";
  EXPECT_EQ(config64(48), 0u) << "nothing requested";
}

TEST_F(VirtioMemTest, PlugsUpToTheRequestedSizeAndUnplugsWithDiscard) {
  ASSERT_TRUE(mem_->set_requested_size(4 * VirtioMem::kBlockSize).has_value());
  EXPECT_EQ(harness_->read_isr() & 2, 2) << "a configuration change";
  EXPECT_EQ(config64(48), 4 * VirtioMem::kBlockSize);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase, 3).first, VirtioMem::kAck);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase + 3 * VirtioMem::kBlockSize, 2).first,
            VirtioMem::kNack)
      << "past the requested size";
  EXPECT_EQ(request(VirtioMem::kPlug, kBase, 1).first, VirtioMem::kError) << "plugged already";
  EXPECT_EQ(config64(40), 3 * VirtioMem::kBlockSize);
  EXPECT_EQ(request(VirtioMem::kState, kBase, 3), std::make_pair(VirtioMem::kAck, VirtioMem::kPlugged));
  EXPECT_EQ(request(VirtioMem::kState, kBase + VirtioMem::kBlockSize, 4),
            std::make_pair(VirtioMem::kAck, VirtioMem::kMixed));
  EXPECT_EQ(request(VirtioMem::kUnplug, kBase + VirtioMem::kBlockSize, 1).first, VirtioMem::kAck);
  ASSERT_EQ(discarded_.size(), 1u);
  EXPECT_EQ(discarded_[0], std::make_pair(kBase + VirtioMem::kBlockSize, VirtioMem::kBlockSize));
  EXPECT_EQ(mem_->plugged_size(), 2 * VirtioMem::kBlockSize);
  EXPECT_EQ(request(VirtioMem::kUnplugAll, 0, 0).first, VirtioMem::kAck);
  EXPECT_EQ(mem_->plugged_size(), 0u);
  EXPECT_EQ(discarded_.size(), 3u) << "the two blocks still plugged";
}

// A hostile driver: unaligned, outside, overflowing, empty and unknown requests are ERROR and
// change nothing; a chain with no room for the response breaks the device until reset.
TEST_F(VirtioMemTest, BadRequestsAreErrorsAndChangeNothing) {
  ASSERT_TRUE(mem_->set_requested_size(kRegion).has_value());
  EXPECT_EQ(request(VirtioMem::kPlug, kBase + 4096, 1).first, VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase - VirtioMem::kBlockSize, 1).first, VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase + kRegion, 1).first, VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase + 15 * VirtioMem::kBlockSize, 2).first,
            VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kPlug, ~0ull - 4095, 0xffff).first, VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kPlug, kBase, 0).first, VirtioMem::kError);
  EXPECT_EQ(request(77, kBase, 1).first, VirtioMem::kError);
  EXPECT_EQ(request(VirtioMem::kUnplug, kBase, 1).first, VirtioMem::kError) << "not plugged";
  EXPECT_EQ(mem_->plugged_size(), 0u);
  EXPECT_TRUE(discarded_.empty());
  EXPECT_FALSE(mem_->set_requested_size(kRegion + VirtioMem::kBlockSize).has_value());
  EXPECT_FALSE(mem_->set_requested_size(4096).has_value());
  (void)request(VirtioMem::kPlug, kBase, 1, /*response_room=*/4);
  EXPECT_NE(harness_->status() & 0x40, 0) << "DEVICE_NEEDS_RESET";
}

TEST_F(VirtioMemTest, StateRoundTrips) {
  ASSERT_TRUE(mem_->set_requested_size(8 * VirtioMem::kBlockSize).has_value());
  ASSERT_EQ(request(VirtioMem::kPlug, kBase + 2 * VirtioMem::kBlockSize, 5).first,
            VirtioMem::kAck);
  StateWriter writer;
  mem_->save(writer);
  VirtioMem copy(kBase, kRegion, nullptr);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(copy.plugged_size(), 5 * VirtioMem::kBlockSize);
  EXPECT_EQ(copy.requested_size(), 8 * VirtioMem::kBlockSize);
  VirtioMem other(kBase, 2 * kRegion, nullptr);
  StateReader again(writer.data());
  EXPECT_FALSE(other.load(again).has_value()) << "another region";
}

}  // namespace
}  // namespace lamina::virtio
