#include "hw/pci_hotplug.h"

#include <gtest/gtest.h>

#include <thread>

#include "fakes.h"

namespace lamina::hw {
namespace {

using namespace std::chrono_literals;
using testing::read_register;
using testing::write_register;

class PciHotplugTest : public ::testing::Test {
 protected:
  uint32_t read(uint64_t offset) {
    return static_cast<uint32_t>(read_register(hotplug, offset, 4));
  }
  int notifications = 0;
  PciHotplug hotplug{0xfffffffe, [this] { ++notifications; }};
};

TEST_F(PciHotplugTest, InsertIsAnnouncedOnceAndReadingClearsIt) {
  hotplug.announce_insert(5);
  EXPECT_EQ(notifications, 1);
  EXPECT_EQ(read(PciHotplug::kUp), 1u << 5);
  EXPECT_EQ(read(PciHotplug::kUp), 0u) << "UP clears on read";
  EXPECT_EQ(read(PciHotplug::kDown), 0u);
  EXPECT_EQ(read(PciHotplug::kSlots), 0xfffffffeu);
}

TEST_F(PciHotplugTest, RemovalCompletesWhenTheGuestEjectsTheSlot) {
  hotplug.request_removal(3);
  EXPECT_EQ(read(PciHotplug::kDown), 1u << 3);
  std::jthread guest([this] {
    std::this_thread::sleep_for(20ms);
    write_register(hotplug, PciHotplug::kEject, 4, 1u << 3);
  });
  EXPECT_TRUE(hotplug.wait_for_eject(3, 5s));
  EXPECT_EQ(hotplug.ignored_ejects(), 0u);
}

TEST_F(PciHotplugTest, AGuestThatNeverEjectsTimesOutAndALateEjectIsDropped) {
  hotplug.request_removal(7);
  EXPECT_FALSE(hotplug.wait_for_eject(7, 10ms));
  EXPECT_TRUE(hotplug.cancel_removal(7)) << "still pending: withdrawn";
  write_register(hotplug, PciHotplug::kEject, 4, 1u << 7);
  EXPECT_EQ(hotplug.ignored_ejects(), 1u);
  EXPECT_FALSE(hotplug.wait_for_eject(7, 1ms));
}

TEST_F(PciHotplugTest, AnEjectThatRacesTheTimeoutStillCounts) {
  hotplug.request_removal(2);
  EXPECT_FALSE(hotplug.wait_for_eject(2, 1ms));
  write_register(hotplug, PciHotplug::kEject, 4, 1u << 2);
  EXPECT_FALSE(hotplug.cancel_removal(2)) << "the guest ejected: the removal goes ahead";
}

// A hostile guest: ejects of slots never asked for, garbage everywhere, odd widths; nothing
// is ejected, nothing is notified, and every register stays sane.
TEST_F(PciHotplugTest, GarbageFromTheGuestChangesNothing) {
  for (uint64_t offset = 0; offset < PciHotplug::kSize + 8; ++offset) {
    for (size_t size : {1u, 2u, 4u, 8u}) write_register(hotplug, offset, size, ~0ull);
  }
  write_register(hotplug, PciHotplug::kEject, 4, 0xffffffff);
  EXPECT_GE(hotplug.ignored_ejects(), 1u);
  EXPECT_EQ(notifications, 0);
  EXPECT_EQ(read(PciHotplug::kUp), 0u);
  EXPECT_EQ(read(PciHotplug::kDown), 0u);
  EXPECT_EQ(read_register(hotplug, PciHotplug::kUp, 1), 0u) << "partial reads clear nothing";
  hotplug.announce_insert(40);  // out of range from the host: nothing
  EXPECT_EQ(read(PciHotplug::kUp), 0u);
}

TEST_F(PciHotplugTest, AbortEndsEveryWait) {
  hotplug.request_removal(4);
  std::jthread stopper([this] {
    std::this_thread::sleep_for(20ms);
    hotplug.abort_waits();
  });
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(hotplug.wait_for_eject(4, 30s));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
  EXPECT_FALSE(hotplug.wait_for_eject(9, 30s)) << "and every later one";
}

TEST_F(PciHotplugTest, StateRoundTrips) {
  hotplug.announce_insert(6);
  hotplug.request_removal(9);
  StateWriter writer;
  hotplug.save(writer);
  PciHotplug restored{0xfffffffe, nullptr};
  StateReader reader(writer.data());
  ASSERT_TRUE(restored.load(reader).has_value());
  EXPECT_EQ(read_register(restored, PciHotplug::kUp, 4), 1u << 6);
  EXPECT_EQ(read_register(restored, PciHotplug::kDown, 4), 1u << 9);
  write_register(restored, PciHotplug::kEject, 4, 1u << 9);
  EXPECT_TRUE(restored.wait_for_eject(9, 1s)) << "the pending removal survived";
  PciHotplug other{0x6, nullptr};
  StateReader again(writer.data());
  EXPECT_FALSE(other.load(again).has_value()) << "another machine's slots";
}

}  // namespace
}  // namespace lamina::hw
