// Virtqueue against a driver-side ring in real guest RAM: chains in both directions, indirect
// tables, notification suppression both ways, and every hostile ring shape the header names.

#include "virtio/virtqueue.h"

#include <gtest/gtest.h>

#include <tuple>

#include <random>

#include "virtqueue_driver.h"

namespace lamina::virtio {
namespace {

using testing::TestBuffer;
using testing::TestDriver;

constexpr uint64_t kRamSize = 4 << 20;
constexpr uint64_t kRingBase = 0x10000;
constexpr uint64_t kDataBase = 0x100000;

class VirtqueueTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto memory = GuestMemory::create({{0, kRamSize}});
    ASSERT_TRUE(memory);
    memory_.emplace(std::move(*memory));
    dma_.emplace(*memory_, [this](uint64_t address, uint64_t length) {
      written_.push_back({address, length});
    });
  }

  Virtqueue make_queue(TestDriver& driver, bool event_index = false, bool indirect = false) {
    auto queue = Virtqueue::create(*dma_, driver.layout(), event_index, indirect);
    EXPECT_TRUE(queue) << queue.error().message();
    return std::move(*queue);
  }

  // Expects pop() to report a driver error whose message contains `needle`.
  static void expect_driver_error(Virtqueue& queue, std::string_view needle) {
    auto popped = queue.pop();
    ASSERT_FALSE(popped) << "hostile chain was accepted";
    EXPECT_EQ(popped.error().code(), ErrorCode::kGuestFatal);
    EXPECT_NE(popped.error().message().find(needle), std::string::npos) << popped.error().message();
  }

  std::optional<GuestMemory> memory_;
  std::optional<DmaMemory> dma_;
  std::vector<std::pair<uint64_t, uint64_t>> written_;
};

TEST_F(VirtqueueTest, CreateRejectsBadSizesAlignmentAndRingsOutsideRam) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  VirtqueueLayout layout = driver.layout();
  for (uint16_t size : {0, 3, 100}) {
    layout.size = size;
    EXPECT_FALSE(Virtqueue::create(*dma_, layout, false, false)) << size;
  }
  layout = driver.layout();
  layout.descriptor_table += 8;
  EXPECT_FALSE(Virtqueue::create(*dma_, layout, false, false));
  layout = driver.layout();
  layout.device_area += 2;
  EXPECT_FALSE(Virtqueue::create(*dma_, layout, false, false));
  layout = driver.layout();
  layout.device_area = kRamSize - 16;  // used ring runs past the end of RAM
  auto outside = Virtqueue::create(*dma_, layout, false, false);
  ASSERT_FALSE(outside);
  EXPECT_EQ(outside.error().code(), ErrorCode::kGuestFatal);
  layout = driver.layout();
  layout.size = 32768;
  layout.descriptor_table = kRamSize - 0x1000;
  EXPECT_FALSE(Virtqueue::create(*dma_, layout, false, false));
}

TEST_F(VirtqueueTest, PopsChainsInOrderWithBothDirectionsAndCopies) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  Virtqueue queue = make_queue(driver);
  EXPECT_FALSE(queue.has_available());
  auto empty = queue.pop();
  ASSERT_TRUE(empty);
  EXPECT_FALSE(empty->has_value());

  const uint64_t header = driver.allocate(16, std::byte{0x11});
  const uint64_t data = driver.allocate(100, std::byte{0x22});
  const uint64_t reply = driver.allocate(64);
  const uint64_t status = driver.allocate(1);
  const uint16_t head = driver.add_chain(
      {{header, 16, false}, {data, 100, false}, {reply, 64, true}, {status, 1, true}});
  EXPECT_TRUE(queue.has_available());

  auto popped = queue.pop();
  ASSERT_TRUE(popped && popped->has_value());
  const DescriptorChain& chain = **popped;
  EXPECT_EQ(chain.head, head);
  ASSERT_EQ(chain.readable.size(), 2u);
  ASSERT_EQ(chain.writable.size(), 2u);
  EXPECT_EQ(chain.readable_length, 116u);
  EXPECT_EQ(chain.writable_length, 65u);

  // The readable stream crosses buffers: bytes 10..30 are 6 of 0x11 then 14 of 0x22.
  std::vector<std::byte> stream(20);
  EXPECT_EQ(queue.copy_from(chain, 10, stream), 20u);
  EXPECT_EQ(stream[5], std::byte{0x11});
  EXPECT_EQ(stream[6], std::byte{0x22});
  std::vector<std::byte> too_much(200);
  EXPECT_EQ(queue.copy_from(chain, 0, too_much), 116u);

  // Writing 65 bytes fills the reply and the status byte; the DMA observer sees both ranges.
  std::vector<std::byte> answer(65, std::byte{0x5a});
  written_.clear();
  EXPECT_EQ(queue.copy_to(chain, 0, answer), 65u);
  EXPECT_EQ(driver.read_bytes(status, 1)[0], std::byte{0x5a});
  ASSERT_EQ(written_.size(), 2u);
  EXPECT_EQ(written_[0], (std::pair<uint64_t, uint64_t>{reply, 64}));
  EXPECT_EQ(written_[1], (std::pair<uint64_t, uint64_t>{status, 1}));

  ASSERT_TRUE(queue.push(chain.head, 65));
  EXPECT_EQ(driver.used_index(), 1);
  EXPECT_EQ(driver.used_element(0), (std::pair<uint32_t, uint32_t>{head, 65}));
  EXPECT_FALSE(queue.has_available());
}

TEST_F(VirtqueueTest, IndexWrapsAroundPastSixtyFiveThousand) {
  TestDriver driver(*memory_, 4, kRingBase, kDataBase);
  Virtqueue queue = make_queue(driver);
  const uint64_t buffer = driver.allocate(8);
  for (int i = 0; i < 70000; ++i) {
    const uint16_t head = driver.add_chain({{buffer, 8, true}});
    auto popped = queue.pop();
    ASSERT_TRUE(popped && popped->has_value()) << i;
    ASSERT_EQ((*popped)->head, head);
    ASSERT_TRUE(queue.push(head, 8));
  }
  EXPECT_EQ(driver.used_index(), static_cast<uint16_t>(70000));
}

TEST_F(VirtqueueTest, IndirectTablesAreWalkedWhenNegotiated) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  const uint64_t table = driver.allocate(3 * 16);
  const uint64_t a = driver.allocate(10, std::byte{1});
  const uint64_t b = driver.allocate(20);
  const uint64_t c = driver.allocate(1);
  driver.set_descriptor(table, 0, a, 10, 1, 2);  // entries linked out of order: 0 → 2 → 1
  driver.set_descriptor(table, 2, b, 20, 1 | 2, 1);
  driver.set_descriptor(table, 1, c, 1, 2, 0);
  driver.set_descriptor(driver.layout().descriptor_table, 0, table, 48, 4, 0);
  driver.publish(0);

  Virtqueue with_feature = make_queue(driver, false, true);
  auto popped = with_feature.pop();
  ASSERT_TRUE(popped && popped->has_value()) << (popped ? "" : popped.error().message());
  EXPECT_EQ((*popped)->readable_length, 10u);
  ASSERT_EQ((*popped)->writable.size(), 2u);
  EXPECT_EQ((*popped)->writable[0].address, b);
  EXPECT_EQ((*popped)->writable[1].address, c);

  Virtqueue without_feature = make_queue(driver, false, false);
  expect_driver_error(without_feature, "without the feature");
}

// Linux fills an indirect table with up to queue-size entries (virtio-blk: header, seg_max
// segments, status); the ring descriptor naming the table is not one of them.
TEST_F(VirtqueueTest, IndirectTableOfExactlyQueueSizeEntriesIsAccepted) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  const uint64_t table = driver.allocate(8 * 16);
  const uint64_t buffer = driver.allocate(64);
  for (uint16_t i = 0; i < 8; ++i) {
    driver.set_descriptor(table, i, buffer, 8, static_cast<uint16_t>(i + 1 < 8 ? 1 : 2), i + 1);
  }
  driver.set_descriptor(driver.layout().descriptor_table, 0, table, 8 * 16, 4, 0);
  driver.publish(0);
  Virtqueue queue = make_queue(driver, false, true);
  auto popped = queue.pop();
  ASSERT_TRUE(popped && popped->has_value()) << (popped ? "" : popped.error().message());
  EXPECT_EQ((*popped)->readable.size(), 7u);
  EXPECT_EQ((*popped)->writable.size(), 1u);
}

// DMA aimed at device memory: guest RAM as on a PC, with the MMIO hole below 4 GiB (LAPIC,
// IOAPIC, HPET, PCI BARs) between two RAM regions. A buffer in the hole, one running from RAM
// into it, one past the end of all RAM and a ring placed in the hole are all refused; nothing
// is read from or written to a device.
TEST(VirtqueueDmaTest, BuffersAndRingsInTheMmioHoleOrPastRamAreRefused) {
  constexpr uint64_t kLowEnd = 2 << 20;
  constexpr uint64_t kHighBase = uint64_t{4} << 30;
  constexpr uint64_t kHighEnd = kHighBase + (1 << 20);
  auto memory = GuestMemory::create({{0, kLowEnd}, {kHighBase, kHighEnd - kHighBase}});
  ASSERT_TRUE(memory) << memory.error().message();
  std::vector<std::pair<uint64_t, uint64_t>> written;
  DmaMemory dma(*memory, [&](uint64_t address, uint64_t length) {
    written.push_back({address, length});
  });
  for (const auto& [name, address, length] :
       std::initializer_list<std::tuple<const char*, uint64_t, uint32_t>>{
           {"LAPIC page", 0xfee00000, 64},
           {"IOAPIC window", 0xfec00000, 4},
           {"RAM into the hole", kLowEnd - 8, 16},
           {"past the end of RAM", kHighEnd, 512},
           {"straddling the end of RAM", kHighEnd - 4, 8}}) {
    for (bool device_writes : {false, true}) {
      TestDriver driver(*memory, 8, kRingBase, kDataBase);
      auto queue = Virtqueue::create(dma, driver.layout(), false, false);
      ASSERT_TRUE(queue) << queue.error().message();
      driver.set_descriptor(driver.layout().descriptor_table, 0, address, length,
                            device_writes ? 2 : 0, 0);
      driver.publish(0);
      auto popped = queue->pop();
      ASSERT_FALSE(popped) << name << ": accepted";
      EXPECT_EQ(popped.error().code(), ErrorCode::kGuestFatal) << name;
      EXPECT_NE(popped.error().message().find("outside guest RAM"), std::string::npos)
          << name << ": " << popped.error().message();
    }
  }
  EXPECT_TRUE(written.empty()) << "nothing was written for a refused chain";
  // The rings themselves in the hole or past RAM.
  TestDriver driver(*memory, 8, kRingBase, kDataBase);
  for (uint64_t base : {uint64_t{0xfee00000}, kHighEnd, kLowEnd - 64}) {
    VirtqueueLayout layout = driver.layout();
    layout.descriptor_table = base;
    EXPECT_FALSE(Virtqueue::create(dma, layout, false, false)) << std::hex << base;
    layout = driver.layout();
    layout.device_area = base;
    EXPECT_FALSE(Virtqueue::create(dma, layout, false, false)) << std::hex << base;
  }
}

TEST_F(VirtqueueTest, HostileChainsAreDriverErrorsNotHangs) {
  struct Case {
    const char* name;
    std::function<void(TestDriver&, uint64_t)> build;
    const char* needle;
  };
  const std::vector<Case> cases = {
      {"self loop",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 8, 1, 0);
         d.publish(0);
       },
       "longer than the queue"},
      {"two-descriptor loop",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 8, 1, 1);
         d.set_descriptor(d.layout().descriptor_table, 1, buffer, 8, 1, 0);
         d.publish(0);
       },
       "longer than the queue"},
      {"next out of range",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 8, 1, 9);
         d.publish(0);
       },
       "links to descriptor 9"},
      {"head out of range", [](TestDriver& d, uint64_t) { d.publish(200); },
       "names descriptor 200"},
      {"buffer outside RAM",
       [](TestDriver& d, uint64_t) {
         d.set_descriptor(d.layout().descriptor_table, 0, kRamSize - 4, 8, 0, 0);
         d.publish(0);
       },
       "outside guest RAM"},
      {"length overflowing the address space",
       [](TestDriver& d, uint64_t) {
         d.set_descriptor(d.layout().descriptor_table, 0, ~uint64_t{0} - 2, 0xffffffff, 0, 0);
         d.publish(0);
       },
       "outside guest RAM"},
      {"readable after writable",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 8, 1 | 2, 1);
         d.set_descriptor(d.layout().descriptor_table, 1, buffer, 8, 0, 0);
         d.publish(0);
       },
       "readable buffer after a writable"},
      {"avail index jumps past the queue size",
       [](TestDriver& d, uint64_t) { d.set_avail_index(9); }, "more than the queue size"},
      {"nested indirect",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(buffer, 0, buffer, 16, 4, 0);
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 16, 4, 0);
         d.publish(0);
       },
       "nests an indirect table"},
      {"indirect and next",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 16, 4 | 1, 1);
         d.publish(0);
       },
       "both INDIRECT and NEXT"},
      {"indirect table of odd length",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 17, 4, 0);
         d.publish(0);
       },
       "indirect table of 17 bytes"},
      {"indirect table looping on itself",
       [](TestDriver& d, uint64_t buffer) {
         d.set_descriptor(buffer, 0, buffer, 8, 1, 1);
         d.set_descriptor(buffer, 1, buffer, 8, 1, 0);
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 32, 4, 0);
         d.publish(0);
       },
       "longer than the queue"},
      {"indirect table longer than the queue",
       [](TestDriver& d, uint64_t buffer) {
         for (uint16_t i = 0; i < 16; ++i) d.set_descriptor(buffer, i, buffer, 8, 1, i + 1);
         d.set_descriptor(d.layout().descriptor_table, 0, buffer, 16 * 16, 4, 0);
         d.publish(0);
       },
       "longer than the queue"},
      {"indirect table outside RAM",
       [](TestDriver& d, uint64_t) {
         d.set_descriptor(d.layout().descriptor_table, 0, kRamSize - 16, 32, 4, 0);
         d.publish(0);
       },
       "outside guest RAM"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    TestDriver driver(*memory_, 8, kRingBase, kDataBase);
    const uint64_t buffer = driver.allocate(4096);
    c.build(driver, buffer);
    Virtqueue queue = make_queue(driver, false, true);
    expect_driver_error(queue, c.needle);
  }
}

TEST_F(VirtqueueTest, InterruptSuppressionWithFlags) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  Virtqueue queue = make_queue(driver);
  const uint64_t buffer = driver.allocate(8);
  driver.add_chain({{buffer, 8, true}});
  auto popped = queue.pop();
  ASSERT_TRUE(popped && popped->has_value());
  ASSERT_TRUE(queue.push((*popped)->head, 0));
  EXPECT_TRUE(queue.should_signal());
  EXPECT_FALSE(queue.should_signal()) << "nothing new was used";

  driver.set_avail_flags(1);  // VIRTQ_AVAIL_F_NO_INTERRUPT
  driver.add_chain({{buffer, 8, true}});
  popped = queue.pop();
  ASSERT_TRUE(popped && popped->has_value());
  ASSERT_TRUE(queue.push((*popped)->head, 0));
  EXPECT_FALSE(queue.should_signal());
}

TEST_F(VirtqueueTest, InterruptSuppressionWithEventIndex) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  Virtqueue queue = make_queue(driver, true, false);
  const uint64_t buffer = driver.allocate(8);
  // The driver wants an interrupt only once the used idx passes 2 (used_event = 2).
  driver.set_used_event(2);
  std::vector<bool> signals;
  for (int i = 0; i < 4; ++i) {
    driver.add_chain({{buffer, 8, true}});
    auto popped = queue.pop();
    ASSERT_TRUE(popped && popped->has_value());
    ASSERT_TRUE(queue.push((*popped)->head, 0));
    signals.push_back(queue.should_signal());
  }
  // First push always signals (no previous point); then only the push making used idx 3.
  EXPECT_EQ(signals, (std::vector<bool>{true, false, true, false}));
}

TEST_F(VirtqueueTest, KickSuppressionBothWays) {
  TestDriver flags_driver(*memory_, 8, kRingBase, kDataBase);
  Virtqueue flags_queue = make_queue(flags_driver);
  flags_queue.set_notifications(false);
  EXPECT_EQ(flags_driver.used_flags(), 1);  // VIRTQ_USED_F_NO_NOTIFY
  flags_queue.set_notifications(true);
  EXPECT_EQ(flags_driver.used_flags(), 0);

  TestDriver event_driver(*memory_, 8, kRingBase + 0x4000, kDataBase);
  Virtqueue event_queue = make_queue(event_driver, true, false);
  const uint64_t buffer = event_driver.allocate(8);
  event_driver.add_chain({{buffer, 8, true}});
  event_driver.add_chain({{buffer, 8, true}});
  ASSERT_TRUE(event_queue.pop());
  EXPECT_EQ(event_driver.avail_event(), 1) << "kick me for the buffer after the one consumed";
  event_queue.set_notifications(false);
  ASSERT_TRUE(event_queue.pop());
  EXPECT_EQ(event_driver.avail_event(), 1) << "while disabled the event point stays";
  event_queue.set_notifications(true);
  EXPECT_EQ(event_driver.avail_event(), 2);
  EXPECT_FALSE(event_queue.has_available());
}

TEST_F(VirtqueueTest, SaveLoadRestoresRingPositions) {
  TestDriver driver(*memory_, 8, kRingBase, kDataBase);
  Virtqueue queue = make_queue(driver);
  const uint64_t buffer = driver.allocate(8);
  for (int i = 0; i < 3; ++i) {
    driver.add_chain({{buffer, 8, true}});
    auto popped = queue.pop();
    ASSERT_TRUE(popped && popped->has_value());
    ASSERT_TRUE(queue.push((*popped)->head, 1));
  }
  StateWriter writer;
  queue.save(writer);

  Virtqueue restored = make_queue(driver);
  StateReader reader(writer.data());
  ASSERT_TRUE(restored.load(reader));
  const uint16_t head = driver.add_chain({{buffer, 8, true}});
  auto popped = restored.pop();
  ASSERT_TRUE(popped && popped->has_value());
  EXPECT_EQ((*popped)->head, head);
  ASSERT_TRUE(restored.push(head, 1));
  EXPECT_EQ(driver.used_index(), 4);

  // A stream from a queue of another size is refused.
  TestDriver other(*memory_, 16, kRingBase + 0x8000, kDataBase);
  Virtqueue other_queue = make_queue(other);
  StateReader again(writer.data());
  EXPECT_FALSE(other_queue.load(again));
}

// Random ring contents must never crash, hang or hand out a buffer outside RAM.
TEST_F(VirtqueueTest, RandomRingsNeverEscapeRam) {
  std::mt19937_64 random(20261124);
  for (int round = 0; round < 3000; ++round) {
    const uint16_t size = static_cast<uint16_t>(1u << (random() % 6));
    TestDriver driver(*memory_, size, kRingBase, kDataBase);
    std::vector<std::byte> noise(16 * size + 6 + 2 * size);
    for (auto& b : noise) b = static_cast<std::byte>(random());
    // Keep addresses mostly near RAM so both accepted and refused chains occur.
    for (uint16_t i = 0; i < size; ++i) {
      const uint64_t address = random() % (kRamSize + 0x1000);
      store_le<uint64_t>(noise.data() + 16 * i, address);
      store_le<uint32_t>(noise.data() + 16 * i + 8, static_cast<uint32_t>(random() % 0x3000));
    }
    ASSERT_TRUE(memory_->write(kRingBase, noise));
    Virtqueue queue = make_queue(driver, random() % 2, random() % 2);
    for (int step = 0; step < 4; ++step) {
      auto popped = queue.pop();
      if (!popped) {
        EXPECT_EQ(popped.error().code(), ErrorCode::kGuestFatal);
        break;
      }
      if (!popped->has_value()) break;
      for (const auto* list : {&(*popped)->readable, &(*popped)->writable}) {
        for (const GuestBuffer& buffer : *list) {
          ASSERT_TRUE(memory_->contains(buffer.address, buffer.length));
        }
      }
      ASSERT_TRUE(queue.push((*popped)->head, 0));
    }
  }
}

}  // namespace
}  // namespace lamina::virtio
