#include "hw/hotplug_controller.h"

#include <gtest/gtest.h>

#include <thread>

#include "fakes.h"

namespace lamina::hw {
namespace {

using namespace std::chrono_literals;
using testing::read_register;
using testing::write_register;

class HotplugControllerTest : public ::testing::Test {
 protected:
  uint32_t read(uint64_t offset) {
    return static_cast<uint32_t>(read_register(hotplug, offset, 4));
  }
  int notifications = 0;
  HotplugController hotplug{"pci-hotplug", 0xfffffffe, 0, [this] { ++notifications; }};
};

TEST_F(HotplugControllerTest, InsertIsAnnouncedOnceAndReadingClearsIt) {
  hotplug.announce_insert(5);
  EXPECT_EQ(notifications, 1);
  EXPECT_EQ(read(HotplugController::kUp), 1u << 5);
  EXPECT_EQ(read(HotplugController::kUp), 0u) << "UP clears on read";
  EXPECT_EQ(read(HotplugController::kDown), 0u);
  EXPECT_EQ(read(HotplugController::kUnits), 0xfffffffeu);
}

TEST_F(HotplugControllerTest, RemovalCompletesWhenTheGuestEjectsTheSlot) {
  hotplug.request_removal(3);
  EXPECT_EQ(read(HotplugController::kDown), 1u << 3);
  std::jthread guest([this] {
    std::this_thread::sleep_for(20ms);
    write_register(hotplug, HotplugController::kEject, 4, 1u << 3);
  });
  EXPECT_TRUE(hotplug.wait_for_eject(3, 5s));
  EXPECT_EQ(hotplug.ignored_ejects(), 0u);
}

TEST_F(HotplugControllerTest, AGuestThatNeverEjectsTimesOutAndALateEjectIsDropped) {
  hotplug.request_removal(7);
  EXPECT_FALSE(hotplug.wait_for_eject(7, 10ms));
  EXPECT_TRUE(hotplug.cancel_removal(7)) << "still pending: withdrawn";
  write_register(hotplug, HotplugController::kEject, 4, 1u << 7);
  EXPECT_EQ(hotplug.ignored_ejects(), 1u);
  EXPECT_FALSE(hotplug.wait_for_eject(7, 1ms));
}

TEST_F(HotplugControllerTest, AnEjectThatRacesTheTimeoutStillCounts) {
  hotplug.request_removal(2);
  EXPECT_FALSE(hotplug.wait_for_eject(2, 1ms));
  write_register(hotplug, HotplugController::kEject, 4, 1u << 2);
  EXPECT_FALSE(hotplug.cancel_removal(2)) << "the guest ejected: the removal goes ahead";
}

// A hostile guest: ejects of slots never asked for, garbage everywhere, odd widths; nothing
// is ejected, nothing is notified, and every register stays sane.
TEST_F(HotplugControllerTest, GarbageFromTheGuestChangesNothing) {
  for (uint64_t offset = 0; offset < HotplugController::kSize + 8; ++offset) {
    for (size_t size : {1u, 2u, 4u, 8u}) write_register(hotplug, offset, size, ~0ull);
  }
  write_register(hotplug, HotplugController::kEject, 4, 0xffffffff);
  EXPECT_GE(hotplug.ignored_ejects(), 1u);
  EXPECT_EQ(notifications, 0);
  EXPECT_EQ(read(HotplugController::kUp), 0u);
  EXPECT_EQ(read(HotplugController::kDown), 0u);
  EXPECT_EQ(read_register(hotplug, HotplugController::kUp, 1), 0u) << "partial reads clear nothing";
  hotplug.announce_insert(40);  // out of range from the host: nothing
  EXPECT_EQ(read(HotplugController::kUp), 0u);
}

// Processors: PRESENT follows inserts and ejects; units 32-63 sit in each register's high dword.
TEST(HotplugControllerUnits, PresentFollowsInsertAndEjectAcrossBothDwords) {
  HotplugController cpus{"cpu-hotplug", ~0ull, 0x1, nullptr};
  auto read = [&](uint64_t offset) {
    return static_cast<uint32_t>(read_register(cpus, offset, 4));
  };
  EXPECT_EQ(read(HotplugController::kPresent), 0x1u);
  cpus.announce_insert(40);
  EXPECT_EQ(read(HotplugController::kPresent + 4), 1u << 8);
  EXPECT_EQ(read(HotplugController::kUp), 0u) << "the low dword has nothing";
  EXPECT_EQ(read(HotplugController::kUp + 4), 1u << 8);
  EXPECT_EQ(read(HotplugController::kUp + 4), 0u) << "reading the high dword cleared it";
  cpus.request_removal(40);
  EXPECT_EQ(read(HotplugController::kDown + 4), 1u << 8);
  write_register(cpus, HotplugController::kEject + 4, 4, 1u << 8);
  EXPECT_TRUE(cpus.wait_for_eject(40, 1s));
  EXPECT_EQ(read(HotplugController::kPresent + 4), 0u);
  EXPECT_EQ(cpus.present(), 0x1u);
}

TEST_F(HotplugControllerTest, AbortEndsEveryWait) {
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

TEST_F(HotplugControllerTest, StateRoundTrips) {
  hotplug.announce_insert(6);
  hotplug.request_removal(9);
  StateWriter writer;
  hotplug.save(writer);
  HotplugController restored{"pci-hotplug", 0xfffffffe, 0, nullptr};
  StateReader reader(writer.data());
  ASSERT_TRUE(restored.load(reader).has_value());
  EXPECT_EQ(read_register(restored, HotplugController::kUp, 4), 1u << 6);
  EXPECT_EQ(read_register(restored, HotplugController::kDown, 4), 1u << 9);
  write_register(restored, HotplugController::kEject, 4, 1u << 9);
  EXPECT_TRUE(restored.wait_for_eject(9, 1s)) << "the pending removal survived";
  HotplugController other{"pci-hotplug", 0x6, 0, nullptr};
  StateReader again(writer.data());
  EXPECT_FALSE(other.load(again).has_value()) << "another machine's slots";
}

}  // namespace
}  // namespace lamina::hw
