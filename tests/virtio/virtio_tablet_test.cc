// The virtio tablet behind the real transport: its configuration answers what Linux's
// virtio_input asks (name, ids, event bits, axis ranges), pointer input arrives as evdev events
// in the driver's 8-byte buffers (scaled to 0..32767, only what changed, each report ended by
// SYN_REPORT), events wait for buffers within a bound, LED events on statusq come back, and
// save/load keeps what is pending.

#include "virtio/virtio_tablet.h"

#include <gtest/gtest.h>

#include "base/byte_order.h"
#include "pci_harness.h"
#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using namespace pci;
using testing::PciHarness;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kVersion1 = uint64_t{1} << 32;
constexpr uint16_t kEvSyn = 0, kEvKey = 1, kEvRel = 2, kEvAbs = 3;

class VirtioTabletTest : public ::testing::Test {
 protected:
  VirtioTabletTest()
      : memory_(std::move(*GuestMemory::create({{0, kRamSize}}))), dma_(memory_, {}) {
    auto tablet = std::make_unique<VirtioTablet>();
    tablet_ = tablet.get();
    harness_.emplace(std::move(tablet), dma_);
    EXPECT_TRUE(harness_->negotiate(kVersion1));
    harness_->setup_queue(0, events_.layout());
    harness_->setup_queue(1, status_.layout());
    harness_->driver_ok();
  }

  // Selects (select, subsel) and returns the size byte and the union's first `count` bytes.
  std::pair<uint8_t, std::vector<uint8_t>> query(uint8_t select, uint8_t subsel, size_t count) {
    harness_->write(CapabilityType::kDevice, 0, 1, select);
    harness_->write(CapabilityType::kDevice, 1, 1, subsel);
    std::vector<uint8_t> bytes;
    for (size_t i = 0; i < count; ++i) {
      bytes.push_back(static_cast<uint8_t>(harness_->read(CapabilityType::kDevice, 8 + i, 1)));
    }
    return {static_cast<uint8_t>(harness_->read(CapabilityType::kDevice, 2, 1)), bytes};
  }

  // Offers `count` event buffers, as virtio_input does at probe.
  std::vector<uint64_t> offer(int count) {
    std::vector<uint64_t> buffers;
    for (int i = 0; i < count; ++i) {
      buffers.push_back(events_.allocate(8));
      events_.add_chain({{buffers.back(), 8, true}});
    }
    harness_->kick(0);
    return buffers;
  }

  InputEvent event_at(uint64_t address) {
    const auto bytes = events_.read_bytes(address, 8);
    return {load_le<uint16_t>(bytes.data()), load_le<uint16_t>(bytes.data() + 2),
            load_le<uint32_t>(bytes.data() + 4)};
  }

  GuestMemory memory_;
  DmaMemory dma_;
  VirtioTablet* tablet_ = nullptr;
  std::optional<PciHarness> harness_;
  TestDriver events_{memory_, 64, 0x10000, 0x100000};
  TestDriver status_{memory_, 16, 0x20000, 0x200000};
};

TEST_F(VirtioTabletTest, ConfigurationDescribesATablet) {
  EXPECT_EQ(harness_->config(0x00), 0x10521af4u) << "virtio 1.0 device id 0x1040 + 18";
  EXPECT_EQ(harness_->common(common::kNumQueues, 2), 2u);
  auto [name_size, name] = query(0x01, 0, 13);
  EXPECT_EQ(name_size, 13);
  EXPECT_EQ(std::string(name.begin(), name.end()), "Lamina tablet");
  auto [ids_size, ids] = query(0x03, 0, 8);
  EXPECT_EQ(ids_size, 8);
  EXPECT_EQ(ids[0], 0x06) << "BUS_VIRTUAL";
  // EV_KEY: BTN_LEFT, BTN_RIGHT, BTN_MIDDLE are bits 0x110-0x112 (byte 34).
  auto [keys_size, keys] = query(0x11, kEvKey, 35);
  EXPECT_EQ(keys_size, 35);
  EXPECT_EQ(keys[34], 0x07);
  auto [abs_size, abs] = query(0x11, kEvAbs, 1);
  EXPECT_EQ(abs_size, 1);
  EXPECT_EQ(abs[0], 0x03) << "ABS_X and ABS_Y";
  auto [rel_size, rel] = query(0x11, kEvRel, 2);
  EXPECT_EQ(rel_size, 2);
  EXPECT_EQ(rel[1], 0x01) << "REL_WHEEL";
  auto [info_size, info] = query(0x12, 1, 20);
  EXPECT_EQ(info_size, 20);
  EXPECT_EQ(load_le<uint32_t>(info.data()), 0u);
  EXPECT_EQ(load_le<uint32_t>(info.data() + 4), VirtioTablet::kAbsMax);
  EXPECT_EQ(query(0x11, 0x05, 1).first, 0) << "no EV_SW: size 0";
  EXPECT_EQ(query(0x12, 0x02, 1).first, 0) << "no ABS_Z";
  EXPECT_EQ(query(0x77, 0, 1).first, 0) << "an unknown select";
  // Writes past select and subsel are ignored.
  harness_->write(CapabilityType::kDevice, 2, 1, 0x55);
  EXPECT_EQ(harness_->read(CapabilityType::kDevice, 2, 1), 0u);
}

TEST_F(VirtioTabletTest, PointerBecomesScaledEventsEndedBySyn) {
  EXPECT_FALSE(tablet_->driver_ready()) << "no event buffers yet";
  const auto buffers = offer(16);
  EXPECT_TRUE(tablet_->driver_ready());
  tablet_->post_pointer(1023, 0, 1024, 768, 0, 0);
  tablet_->post_pointer(300, 200, 1024, 768, VirtioTablet::kButtonLeft, 0);
  tablet_->post_pointer(300, 200, 1024, 768, 0, -1);
  tablet_->post_pointer(300, 200, 1024, 768, 0, 0);  // nothing changed: no report
  const std::vector<InputEvent> expected = {
      {kEvAbs, 0, 32767}, {kEvAbs, 1, 0}, {kEvSyn, 0, 0},
      {kEvAbs, 0, 300 * 32767 / 1023}, {kEvAbs, 1, 200 * 32767 / 767}, {kEvKey, 0x110, 1},
      {kEvSyn, 0, 0},
      {kEvKey, 0x110, 0}, {kEvRel, 8, 0xffffffff}, {kEvSyn, 0, 0}};
  ASSERT_EQ(events_.used_index(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(events_.used_element(static_cast<uint16_t>(i)).second, 8u);
    const InputEvent got = event_at(buffers[i]);
    EXPECT_EQ(got, expected[i]) << "event " << i << ": " << got.type << " " << got.code << " "
                                << got.value;
  }
  EXPECT_GT(harness_->msi().messages().size() + harness_->intx().rising(), 0u)
      << "the driver was interrupted";
}

TEST_F(VirtioTabletTest, EventsWaitForBuffersWithinABound) {
  offer(1);
  // One event fits now; the rest of the first report and 2000 more reports wait, bounded.
  tablet_->post_pointer(10, 10, 100, 100, 0, 0);
  for (uint32_t i = 0; i < 2000; ++i) tablet_->post_pointer(i % 90, i % 50, 100, 100, 0, 0);
  EXPECT_EQ(events_.used_index(), 1);
  // The oldest reports were dropped whole: what arrives next starts a report and ends with
  // SYN, and no more than the bound is delivered.
  const auto buffers = offer(64);
  ASSERT_EQ(events_.used_index(), 65);
  const InputEvent first = event_at(buffers[0]);
  EXPECT_EQ(first.type, kEvAbs) << "a report's first event, not the middle of one";
  size_t delivered = 64;
  for (int round = 0; round < 40; ++round) {
    offer(64);
    delivered += 64;
  }
  EXPECT_LE(events_.used_index() - 65u, VirtioTablet::kMaxPendingEvents);
  EXPECT_LT(events_.used_index(), delivered) << "the queue ran dry: the backlog was bounded";
}

TEST_F(VirtioTabletTest, StatusEventsComeBack) {
  const uint64_t led = status_.allocate(8, std::byte{1});
  status_.add_chain({{led, 8, false}});
  harness_->kick(1);
  ASSERT_EQ(status_.used_index(), 1);
  EXPECT_EQ(status_.used_element(0).second, 0u);
}

TEST_F(VirtioTabletTest, ASmallEventBufferIsADriverError) {
  events_.add_chain({{events_.allocate(4), 4, true}});
  harness_->kick(0);
  tablet_->post_pointer(1, 1, 10, 10, 0, 0);
  EXPECT_NE(harness_->status() & 0x40, 0) << "DEVICE_NEEDS_RESET";
  EXPECT_FALSE(tablet_->driver_ready());
}

TEST_F(VirtioTabletTest, SaveAndLoadKeepPendingEventsAndSelection) {
  offer(1);
  tablet_->post_pointer(5, 6, 11, 11, 0, 0);  // ABS_X delivered; ABS_Y and SYN pending
  harness_->write(CapabilityType::kDevice, 0, 1, 0x01);
  StateWriter writer;
  harness_->function().save(writer);
  auto fresh = std::make_unique<VirtioTablet>();
  VirtioTablet* restored = fresh.get();
  harness_->replace(std::move(fresh), dma_);
  StateReader reader(writer.data());
  ASSERT_TRUE(harness_->function().load(reader));
  EXPECT_EQ(harness_->read(CapabilityType::kDevice, 2, 1), 13u) << "ID_NAME still selected";
  const auto buffers = offer(4);
  ASSERT_EQ(events_.used_index(), 3);
  EXPECT_EQ(event_at(buffers[0]), (InputEvent{kEvAbs, 1, 6 * 32767 / 10}));
  EXPECT_EQ(event_at(buffers[1]), (InputEvent{kEvSyn, 0, 0}));
  // Only changes are reported after the restore too.
  restored->post_pointer(5, 7, 11, 11, 0, 0);
  ASSERT_EQ(events_.used_index(), 5);
  EXPECT_EQ(event_at(buffers[2]), (InputEvent{kEvAbs, 1, 7 * 32767 / 10}));
}

TEST_F(VirtioTabletTest, CorruptStateIsRefused) {
  StateWriter writer;
  writer.begin_section("virtio-tablet", 1);
  writer.put(uint8_t{0}, uint8_t{0}, uint8_t{1}, uint32_t{0}, uint32_t{0}, uint8_t{0});
  writer.put_u32(VirtioTablet::kMaxPendingEvents + 1);
  writer.end_section();
  VirtioTablet tablet;
  StateReader reader(writer.data());
  auto loaded = tablet.load(reader);
  ASSERT_FALSE(loaded);
  EXPECT_NE(loaded.error().message().find("pending events"), std::string::npos);
}

}  // namespace
}  // namespace lamina::virtio
