// virtio-rng behind the real transport: buffers the driver offers come back filled with host
// entropy (used lengths right, bounded per request, readable buffers untouched), interrupts
// follow the ring's suppression flag, and a broken ring puts the device in DEVICE_NEEDS_RESET.

#include "virtio/virtio_rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "pci_harness.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace pci;
using testing::PciHarness;
using testing::TestBuffer;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kVersion1 = uint64_t{1} << 32;

class VirtioRngTest : public ::testing::Test {
 protected:
  VirtioRngTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))),
        dma_(memory_, [this](uint64_t address, uint64_t length) {
          reported_.push_back({address, length});
        }) {
    auto rng = std::make_unique<VirtioRng>();
    rng_ = rng.get();
    harness_.emplace(std::move(rng), dma_);
    EXPECT_TRUE(harness_->negotiate(kVersion1));
    harness_->setup_queue(0, driver_.layout());
    harness_->driver_ok();
  }

  GuestMemory memory_;
  DmaMemory dma_;
  std::vector<std::pair<uint64_t, uint64_t>> reported_;
  VirtioRng* rng_ = nullptr;
  std::optional<PciHarness> harness_;
  TestDriver driver_{memory_, 16, 0x10000, 0x100000};
};

TEST_F(VirtioRngTest, IdentityAndNoDeviceConfiguration) {
  EXPECT_EQ(harness_->config(0x00), 0x10441af4u);
  EXPECT_FALSE(harness_->has_capability(CapabilityType::kDevice));
  EXPECT_EQ(harness_->device_features() & 0xffffff, 0u);
  EXPECT_EQ(harness_->common(common::kNumQueues, 2), 1u);
}

TEST_F(VirtioRngTest, FillsWritableBuffersWithEntropy) {
  const uint64_t first = driver_.allocate(64);
  const uint64_t second = driver_.allocate(100);
  const uint64_t readable = driver_.allocate(32, std::byte{0x77});
  driver_.add_chain({{first, 64, true}});
  driver_.add_chain({{readable, 32, false}, {second, 100, true}});
  harness_->kick(0);
  ASSERT_EQ(driver_.used_index(), 2);
  EXPECT_EQ(driver_.used_element(0).second, 64u);
  EXPECT_EQ(driver_.used_element(1).second, 100u);
  const auto a = driver_.read_bytes(first, 64);
  const auto b = driver_.read_bytes(second, 100);
  // 64 zero bytes from getrandom have probability 2^-512; so do two equal prefixes.
  EXPECT_NE(std::count(a.begin(), a.end(), std::byte{0}), 64);
  EXPECT_FALSE(std::equal(a.begin(), a.end(), b.begin()));
  std::set<std::byte> distinct(b.begin(), b.end());
  EXPECT_GT(distinct.size(), 40u) << "100 random bytes take many values";
  const auto untouched = driver_.read_bytes(readable, 32);
  EXPECT_EQ(std::count(untouched.begin(), untouched.end(), std::byte{0x77}), 32);
  EXPECT_EQ(rng_->bytes_served(), 164u);
  // Every byte the device wrote was reported (the accelerator drops stale translations).
  uint64_t reported_in_first = 0;
  for (auto [address, length] : reported_) {
    if (address >= first && address < first + 64) reported_in_first += length;
  }
  EXPECT_EQ(reported_in_first, 64u);
  // MSI-X is off: INTx with ISR bit 0.
  EXPECT_TRUE(harness_->intx().level());
  EXPECT_EQ(harness_->read_isr(), kIsrQueue);
}

TEST_F(VirtioRngTest, RequestsAreBoundedAndSuppressionIsHonoured) {
  const uint32_t huge = VirtioRng::kMaxBytesPerRequest + 4096;
  const uint64_t big = driver_.allocate(huge);
  driver_.set_avail_flags(1);  // VRING_AVAIL_F_NO_INTERRUPT
  driver_.add_chain({{big, huge, true}});
  harness_->kick(0);
  ASSERT_EQ(driver_.used_index(), 1);
  EXPECT_EQ(driver_.used_element(0).second, VirtioRng::kMaxBytesPerRequest);
  const auto tail = driver_.read_bytes(big + VirtioRng::kMaxBytesPerRequest, 4096);
  EXPECT_EQ(std::count(tail.begin(), tail.end(), std::byte{0}), 4096) << "nothing past the bound";
  EXPECT_FALSE(harness_->intx().level()) << "the driver asked for no interrupt";
  EXPECT_EQ(harness_->read_isr(), 0);
}

TEST_F(VirtioRngTest, BrokenRingNeedsResetAndResetRecovers) {
  // A descriptor pointing outside guest RAM.
  driver_.add_chain({{kRamSize - 16, 64, true}});
  harness_->kick(0);
  EXPECT_TRUE(harness_->status() & status::kDeviceNeedsReset);
  EXPECT_EQ(harness_->read_isr(), kIsrConfig);
  EXPECT_EQ(driver_.used_index(), 0);
  const uint64_t served = rng_->bytes_served();
  harness_->kick(0);
  EXPECT_EQ(rng_->bytes_served(), served);

  TestDriver fresh(memory_, 8, 0x30000, 0x300000);
  ASSERT_TRUE(harness_->negotiate(kVersion1));
  harness_->setup_queue(0, fresh.layout());
  harness_->driver_ok();
  fresh.add_chain({{fresh.allocate(16), 16, true}});
  harness_->kick(0);
  EXPECT_EQ(fresh.used_index(), 1);
  EXPECT_EQ(fresh.used_element(0).second, 16u);
}

TEST_F(VirtioRngTest, SaveAndLoadKeepsTheRingPosition) {
  driver_.add_chain({{driver_.allocate(8), 8, true}});
  harness_->kick(0);
  ASSERT_EQ(driver_.used_index(), 1);
  StateWriter writer;
  harness_->function().save(writer);
  harness_->replace(std::make_unique<VirtioRng>(), dma_);
  StateReader reader(writer.data());
  ASSERT_TRUE(harness_->function().load(reader));
  driver_.add_chain({{driver_.allocate(8), 8, true}});
  harness_->kick(0);
  EXPECT_EQ(driver_.used_index(), 2) << "the restored queue continues where it was";
  EXPECT_EQ(driver_.used_element(1).second, 8u);
}

}  // namespace
}  // namespace lamina::virtio
