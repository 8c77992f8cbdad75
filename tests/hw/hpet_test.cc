#include "hw/hpet.h"

#include <gtest/gtest.h>

#include "fakes.h"

namespace lamina::hw {
namespace {

using testing::read32;
using testing::read_register;
using testing::RecordingIrqLine;
using testing::write32;
using testing::write_register;

constexpr uint64_t kConfig = 0x10, kStatus = 0x20, kCounter = 0xf0;
constexpr uint64_t timer_config(unsigned n) { return 0x100 + 0x20 * n; }
constexpr uint64_t timer_comparator(unsigned n) { return 0x108 + 0x20 * n; }

class HpetTest : public ::testing::Test {
 protected:
  Hpet::Routing routing() {
    Hpet::Routing r;
    r.ioapic[20] = &pin20;
    r.ioapic[21] = &pin21;
    r.legacy_timer0 = &irq0;
    r.legacy_timer1 = &irq8;
    r.legacy_route_changed = [this](bool enabled) { legacy_changes.push_back(enabled); };
    return r;
  }
  void advance(uint64_t ns) {
    clock.advance(ns);
    queue.run_expired();
  }

  ManualClock clock{12345};
  TimerQueue queue{clock};
  RecordingIrqLine pin20, pin21, irq0, irq8;
  std::vector<bool> legacy_changes;
  Hpet hpet{queue, routing()};
};

TEST_F(HpetTest, CapabilitiesDescribeThreeTimersAt100MHz) {
  EXPECT_EQ(read32(hpet, 0x000), 0x8086a201u);
  EXPECT_EQ(read32(hpet, 0x004), 10'000'000u) << "period in femtoseconds";
  EXPECT_EQ(read32(hpet, timer_config(0) + 4), (1u << 20) | (1u << 21)) << "wired pins";
  EXPECT_EQ(read32(hpet, timer_config(0)) & 0x30, 0x30u) << "periodic and 64-bit capable";
}

TEST_F(HpetTest, MainCounterRunsOnlyWhileEnabled) {
  advance(1000);
  EXPECT_EQ(read_register(hpet, kCounter, 8), 0u);
  write32(hpet, kConfig, 1);
  advance(1000);
  EXPECT_EQ(read_register(hpet, kCounter, 8), 100u);
  write32(hpet, kConfig, 0);
  advance(5000);
  EXPECT_EQ(read32(hpet, kCounter), 100u);
  write32(hpet, kCounter + 4, 1);  // high half only
  EXPECT_EQ(read_register(hpet, kCounter, 8), (1ull << 32) | 100);
}

TEST_F(HpetTest, OneShotEdgeInterruptAtTheComparator) {
  write_register(hpet, timer_config(2), 8, (20u << 9) | (1u << 2));
  write_register(hpet, timer_comparator(2), 8, 500);  // 5 us
  write32(hpet, kConfig, 1);
  advance(4990);
  EXPECT_EQ(pin20.rising_edges(), 0);
  advance(10);
  EXPECT_EQ(pin20.rising_edges(), 1);
  EXPECT_FALSE(pin20.level());
  advance(1'000'000);
  EXPECT_EQ(pin20.rising_edges(), 1) << "a 64-bit one-shot fires once";
  EXPECT_EQ(read32(hpet, kStatus), 0u) << "edge interrupts leave no status";
}

TEST_F(HpetTest, PeriodicTimerProgrammedAsLinuxDoes) {
  write32(hpet, kConfig, 1);
  advance(10'000);  // counter 1000
  // hpet_clkevt_set_state_periodic: ENABLE|PERIODIC|SETVAL|32BIT, then now+delta, then delta.
  write32(hpet, timer_config(0), (1u << 2) | (1u << 3) | (1u << 6) | (1u << 8) | (21u << 9));
  write32(hpet, timer_comparator(0), 1000 + 100'000);
  write32(hpet, timer_comparator(0), 100'000);  // 1 ms
  for (int period = 1; period <= 5; ++period) {
    advance(1'000'000);
    EXPECT_EQ(pin21.rising_edges(), period);
  }
  EXPECT_EQ(read32(hpet, timer_comparator(0)), 1000u + 6 * 100'000);
}

TEST_F(HpetTest, LevelInterruptHoldsTheLineUntilStatusIsCleared) {
  write_register(hpet, timer_config(1), 8, (20u << 9) | (1u << 2) | (1u << 1));
  write_register(hpet, timer_comparator(1), 8, 100);
  write32(hpet, kConfig, 1);
  advance(1000);
  EXPECT_TRUE(pin20.level());
  EXPECT_EQ(read32(hpet, kStatus), 0x2u);
  write32(hpet, kStatus, 0x1);  // another timer's bit: nothing
  EXPECT_TRUE(pin20.level());
  write32(hpet, kStatus, 0x2);
  EXPECT_FALSE(pin20.level());
  EXPECT_EQ(read32(hpet, kStatus), 0u);
}

TEST_F(HpetTest, LegacyReplacementRoutesTimers0And1) {
  write32(hpet, kConfig, 3);
  EXPECT_EQ(legacy_changes, std::vector<bool>{true});
  write_register(hpet, timer_config(0), 8, 1u << 2);
  write_register(hpet, timer_comparator(0), 8, 10);
  write_register(hpet, timer_config(1), 8, 1u << 2);
  write_register(hpet, timer_comparator(1), 8, 20);
  advance(1000);
  EXPECT_EQ(irq0.rising_edges(), 1);
  EXPECT_EQ(irq8.rising_edges(), 1);
  EXPECT_EQ(pin20.rising_edges(), 0);
  write32(hpet, kConfig, 1);
  EXPECT_EQ(legacy_changes, (std::vector<bool>{true, false}));
}

TEST_F(HpetTest, RoutesOutsideTheCapabilityAreRefused) {
  write_register(hpet, timer_config(0), 8, 20u << 9);
  write_register(hpet, timer_config(0), 8, 5u << 9);
  EXPECT_EQ((read32(hpet, timer_config(0)) >> 9) & 0x1f, 20u);
}

TEST_F(HpetTest, ThirtyTwoBitOneShotMatchesTheLowHalf) {
  write32(hpet, kConfig, 1);
  write32(hpet, kCounter + 4, 0);  // counter writes while running are accepted too
  write_register(hpet, timer_config(2), 8, (20u << 9) | (1u << 2) | (1u << 8));
  write_register(hpet, timer_comparator(2), 8, 0x1'0000'0050ull);
  EXPECT_EQ(read_register(hpet, timer_comparator(2), 8), 0x50u) << "truncated to 32 bits";
  advance(790);
  EXPECT_EQ(pin20.rising_edges(), 0);
  advance(10);
  EXPECT_EQ(pin20.rising_edges(), 1);
}

TEST_F(HpetTest, SaveAndLoadKeepsCounterAndComparators) {
  write32(hpet, kConfig, 1);
  write_register(hpet, timer_config(0), 8, (21u << 9) | (1u << 2));
  write_register(hpet, timer_comparator(0), 8, 3000);
  advance(10'000);  // counter 1000
  StateWriter writer;
  hpet.save(writer);

  ManualClock other_clock(1);
  TimerQueue other_queue(other_clock);
  RecordingIrqLine other21;
  Hpet::Routing other_routing;
  other_routing.ioapic[21] = &other21;
  Hpet copy(other_queue, other_routing);
  StateReader reader(writer.data());
  ASSERT_TRUE(copy.load(reader).has_value());
  EXPECT_EQ(read_register(copy, kCounter, 8), 1000u);
  other_clock.advance(20'000);
  other_queue.run_expired();
  EXPECT_EQ(other21.rising_edges(), 1);
}

}  // namespace
}  // namespace lamina::hw
